"""The request values the command line builds once and the experiments take unchanged."""

from __future__ import annotations

import os

from nnunet_dsmm.cli.parser import build_parser
from nnunet_dsmm.experiments.ablation import final_job
from nnunet_dsmm.experiments.request import AblationRequest, ExecutorOptions


def test_the_final_slurm_job_runs_the_same_ablate_again(tmp_path):
    request = AblationRequest("961", "3d_fullres", (0, "all"), "fig5", "imgs", "labs", str(tmp_path / "out"),
                              plans="P", device="cpu", seeds=2, budget="smoke", use_mirroring=False, dry_run=True,
                              executor=ExecutorOptions("slurm"))
    job = final_job(request, {"A": "1"})
    assert job.command == ["nnunet_dsmm", "ablate", "-d", "961", "-c", "3d_fullres", "-p", "P", "-f", "0", "all",
                           "--table", "fig5", "-i", os.path.abspath("imgs"), "-l", os.path.abspath("labs"),
                           "-o", str(tmp_path / "out"), "-device", "cpu", "--seeds", "2", "--budget", "smoke",
                           "--disable_tta"]
    assert job.env == {"A": "1"} and job.done_file == str(tmp_path / "out" / "ablation.md")
    args = build_parser().parse_args(job.command[1:])
    assert (args.d, args.c, args.p, args.f, args.table, args.seeds, args.budget, args.disable_tta) == (
        "961", "3d_fullres", "P", [0, "all"], "fig5", 2, "smoke", True)
