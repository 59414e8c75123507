"""The plan of an experiment without training: the dependency graph per seed and fold,
the sbatch scripts and their dependencies, the dry run's listing and cost estimate, and usage errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from nnunet_dsmm.experiments.executors import ExecutorOptions
from nnunet_dsmm.experiments.experiment import trainings_for
from nnunet_dsmm.experiments.plan import build_plan, estimate_seconds, folder_log, seed_log, step_times_ms
from nnunet_dsmm.experiments.slurm import script_text
from nnunet_dsmm.trainers.schedules import SCHEDULES
from tests.conftest import run_cli

NAME = "Dataset961_Synth"
CHAIN = ("DSMMTeacherTrainer", "DSMMPretrainTrainer", "DSMMTrainer")


def plan_for(tmp_path: Path, env: dict | None = None):
    trainings = trainings_for(["DSMMTrainer"], SCHEDULES["smoke"])
    roots = {k: str(tmp_path / f"results{k}") for k in (0, 1)}
    return build_plan(trainings, NAME, "3d_fullres", "DSMMPlans", [0, 1], roots,
                      env or {"DSMM_NUM_ITERATIONS_PER_EPOCH": "3"}, seed_log(str(tmp_path / "logs")))


def test_the_plan_is_every_stage_per_seed_and_fold_each_waiting_for_its_earlier_stages(tmp_path):
    plan = plan_for(tmp_path)
    assert [job.key for job in plan.jobs[:3]] == [f"{t}_seed0_fold0" for t in CHAIN]
    assert len(plan.jobs) == 2 * 2 * 3 and len({job.key for job in plan.jobs}) == 12
    jobs = {job.key: job for job in plan.jobs}
    assert set(jobs["DSMMTrainer_seed1_fold1"].needs) == {"DSMMPretrainTrainer_seed1_fold1",
                                                          "DSMMTeacherTrainer_seed1_fold1"}
    assert jobs["DSMMPretrainTrainer_seed0_fold1"].needs == ("DSMMTeacherTrainer_seed0_fold1",)
    assert jobs["DSMMTeacherTrainer_seed1_fold0"].needs == ()
    seen = set()
    for job in plan.jobs:  # earlier stages first
        assert set(job.needs) <= seen
        seen.add(job.key)
    job = jobs["DSMMTrainer_seed1_fold1"]
    assert job.env["DSMM_SEED"] == "1" and job.env["nnUNet_results"] == str(tmp_path / "results1")
    assert plan.environment(job)["DSMM_NUM_EPOCHS"] == "2"
    assert job.log == str(tmp_path / "logs" / "seed1_fold1_DSMMTrainer.log")
    assert jobs["DSMMTrainer_seed1_fold0"].log == str(tmp_path / "logs" / "seed1_DSMMTrainer.log")
    assert plan.command(job, "cuda") == ["nnUNetv2_train", NAME, "3d_fullres", "1", "-p", "DSMMPlans",
                                         "-tr", "DSMMTrainer", "-device", "cuda"]
    assert all(j.step.action == "start" for j in plan.jobs)


def test_the_estimate_is_remaining_iterations_times_the_step_time(tmp_path):
    plan = plan_for(tmp_path)  # smoke: stages of 2, 1 and 2 epochs, 3 iterations each, 2 seeds x 2 folds
    estimate = estimate_seconds(plan, {}, 100.0)
    assert abs(estimate["total_s"] - 4 * (2 + 1 + 2) * 3 * 0.1) < 1e-9
    assert abs(estimate["longest_chain_s"] - (2 + 1 + 2) * 3 * 0.1) < 1e-9
    report = tmp_path / "benchmark.json"
    report.write_text(json.dumps({"training": {"DSMMTrainer": {"median_ms": 1000.0},
                                               "nnUNetTrainer": {"median_ms": 10.0}}}))
    per_trainer, default = step_times_ms(None, str(report))
    assert per_trainer == {"DSMMTrainer": 1000.0, "nnUNetTrainer": 10.0} and default == 1000.0
    chained = estimate_seconds(plan, {"DSMMTrainer": 1000.0, "DSMMTeacherTrainer": 10.0}, 100.0)
    assert abs(chained["total_s"] - 4 * 3 * (2 * 1.0 + 1 * 0.1 + 2 * 0.01)) < 1e-9
    assert estimate_seconds(plan, {}, None) is None


def test_sbatch_scripts_export_nnunet_folders_run_the_setup_and_the_command(tmp_path):
    env = {"nnUNet_raw": "/data/raw", "nnUNet_preprocessed": "/data/pre", "DSMM_NUM_ITERATIONS_PER_EPOCH": "3",
           "HOME": "/root"}
    trainings = trainings_for(["DSMMTrainer"], None)
    plan = build_plan(trainings, NAME, "3d_fullres", "DSMMPlans", ["all"], {None: str(tmp_path / "r")}, env,
                      folder_log)
    job = plan.jobs[-1]
    options = ExecutorOptions("slurm", partition="gpu", time_limit="2-00:00:00", gpus_per_job=2,
                              sbatch_options=("--mem=64G", "--account=brain lab"), setup="module load cuda/12")
    text = script_text(job.key, plan.command(job, "cuda"), plan.environment(job), job.log, options, job.label)
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=2-00:00:00", "#SBATCH --gres=gpu:2",
                 "#SBATCH --mem=64G", f"#SBATCH --output={job.log}", "#SBATCH --open-mode=append",
                 "module load cuda/12", "export nnUNet_raw=/data/raw", f"export nnUNet_results={tmp_path / 'r'}",
                 "export DSMM_NUM_ITERATIONS_PER_EPOCH=3"):
        assert line in lines, line
    assert "HOME" not in text and "DSMM_SEED" not in text
    assert lines[-1] == (f"nnUNetv2_train {NAME} 3d_fullres all -p DSMMPlans -tr DSMMTrainer -device cuda "
                         "-num_gpus 2")
    assert lines.index("module load cuda/12") < lines.index("export nnUNet_raw=/data/raw")
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    without_setup = script_text(job.key, plan.command(job, "cpu"), {}, job.log, ExecutorOptions("slurm"), "x")
    assert without_setup.splitlines()[-1].split()[0].endswith("/nnUNetv2_train")  # this environment's script
    assert "#SBATCH --gres" not in without_setup and "#SBATCH --partition" not in without_setup


def fake_planned(tmp_path: Path) -> dict:
    """nnU-Net folders with just the plans file that ``train`` checks for (nothing to train from)."""
    plans = tmp_path / "preprocessed" / NAME / "DSMMPlans.json"
    plans.parent.mkdir(parents=True)
    plans.write_text(json.dumps({"configurations": {"3d_fullres": {}}}))
    (tmp_path / "raw" / NAME).mkdir(parents=True)
    return {"nnUNet_raw": str(tmp_path / "raw"), "nnUNet_preprocessed": str(tmp_path / "preprocessed"),
            "nnUNet_results": str(tmp_path / "results"), "DSMM_NUM_EPOCHS": "2",
            "DSMM_NUM_ITERATIONS_PER_EPOCH": "10", "PATH": "/usr/bin:/bin"}


def test_dry_run_lists_every_training_per_fold_and_estimates_the_device_time(tmp_path):
    env = fake_planned(tmp_path)
    out = run_cli(["nnunet_dsmm", "train", "-d", "961", "-c", "3d_fullres", "-f", "0", "1", "-device", "cpu",
                   "--jobs", "2", "--dry-run", "--step-time-ms", "1000"], env).stdout
    assert out.count("would train 2 epochs") == 6
    assert ("fold 1, 2 epochs, start; runs on cpu, 2 at a time after DSMMPretrainTrainer_fold1, "
            "DSMMTeacherTrainer_fold1") in out
    assert "6 trainings, 12 epochs (120 training iterations) to run: 0 done, 0 to continue, 6 to start" in out
    # 6 trainings x 2 epochs x 10 iterations x 1 s; a chain is 3 of them; 2 at a time
    assert ("estimated device time: 2.0 min (1000 ms per training step, validation not counted); longest chain of "
            "dependent trainings 1.0 min; at least 1.0 min of wall time on 2 device(s)") in out
    assert not (tmp_path / "results").exists()
    unknown = run_cli(["nnunet_dsmm", "train", "-d", "961", "-c", "3d_fullres", "-f", "all", "--dry-run",
                       "--devices", "0,1"], env).stdout
    assert "runs on cuda, one of CUDA_VISIBLE_DEVICES 0,1" in unknown and "give --step-time-ms MS" in unknown


def test_options_that_do_not_go_together_are_usage_errors(tmp_path):
    env = fake_planned(tmp_path)
    base = ["nnunet_dsmm", "train", "-d", "961", "-c", "3d_fullres", "-f", "0", "--dry-run"]
    for extra, message in ((["-device", "cpu", "--devices", "0"], "--devices lists CUDA devices"),
                           (["--partition", "gpu"], "--partition only apply with --executor slurm"),
                           (["--executor", "slurm", "--jobs", "2"], "--devices and --jobs are for --executor local"),
                           (["--devices", "0", "--jobs", "2"], "not both")):
        result = run_cli(base + extra, env, check=False)
        assert result.returncode == 2 and message in result.stderr and result.stderr.startswith("nnunet"), extra
    bad = run_cli(base + ["--devices", "0,x"], env, check=False)
    assert bad.returncode == 2 and "distinct CUDA device ids" in bad.stderr
    missing = run_cli(base + ["--benchmark-json", str(tmp_path / "none.json")], env, check=False)
    assert missing.returncode == 2 and "nnunet_dsmm benchmark --json" in missing.stderr


def test_ablate_dry_run_lists_every_row_per_seed_and_fold_and_the_slurm_jobs_it_would_submit(tmp_path):
    env = fake_planned(tmp_path)
    out = run_cli(["nnunet_dsmm", "ablate", "-d", "961", "-c", "3d_fullres", "-f", "0", "1", "--seeds", "2",
                   "--table", "all", "-i", str(tmp_path), "-l", str(tmp_path), "-o", str(tmp_path / "out"),
                   "--budget", "smoke", "--dry-run", "--executor", "slurm", "--step-time-ms", "100"], env).stdout
    assert out.count(" would train ") == 14 * 2 * 2 and out.count("runs on new SLURM job") == 56
    assert "seed 1, fold 1, 2 epochs, start; runs on new SLURM job after DSMMPretrainTrainer_seed1_fold1" in out
    assert "56 trainings, 108 epochs (324 training iterations) to run" in out  # 4 x the 27 epochs of one seed
    assert "estimated device time: 0.5 min (100 ms per training step" in out  # 324 x 0.1 s
    assert not (tmp_path / "out").exists()
