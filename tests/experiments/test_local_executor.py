"""Independent trainings at the same time on this machine: ``train -f 0 1 --jobs 2`` on the CPU trains
the same models as one at a time, sharing the cores among them, each stage after the one it builds on; a
failing training stops its dependants, not the others, and the summary names its log."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from nnunet_dsmm.trainers.schedules import CPU_THREADS_VARIABLE
from tests.conftest import TINY_ID, TINY_NAME, TINY_SCHEDULE, nnunet_env, run_cmd

DATASET_ID, NAME = TINY_ID, TINY_NAME
STAGES = ("DSMMTeacherTrainer", "DSMMPretrainTrainer")
#: what a fold folder holds whatever the run: the log names carry the time they were written
SAME_FILES = ("checkpoint_final.pth", "debug.json", "dsmm_schedule.json", "progress.png", "nnunet_dsmm_train.log")

pytestmark = pytest.mark.slow


def command(*extra: str) -> list[str]:
    return ["nnunet_dsmm", "train", "-d", str(DATASET_ID), "-c", "3d_fullres", "-f", "0", "1",
            "-tr", "DSMMPretrainTrainer", "-device", "cpu", *extra]


def own_env(tiny_planned: Path, results: Path) -> dict[str, str]:
    """The planned dataset with ``results`` as nnUNet_results; the cores are the executor's to share
    (not the test workers' share)."""
    env = {**nnunet_env(tiny_planned), **TINY_SCHEDULE, "nnUNet_results": str(results)}
    env.pop(CPU_THREADS_VARIABLE, None)
    return env


def fold(results: Path, trainer: str, k: int) -> Path:
    return results / NAME / f"{trainer}__DSMMPlans__3d_fullres" / f"fold_{k}"


def trained(results: Path) -> dict:
    """Per training: its epochs and the files of its folder (``training_log_<time>.txt`` counted)."""
    models = {}
    for trainer in STAGES:
        for k in (0, 1):
            folder = fold(results, trainer, k)
            names = sorted(p.name for p in folder.iterdir())
            models[(trainer, k)] = {
                "epochs": json.loads((folder / "dsmm_schedule.json").read_text())["num_epochs"],
                "files": [n for n in names if not n.startswith("training_log_")],
                "training_logs": sum(n.startswith("training_log_") for n in names)}
            assert set(SAME_FILES) <= set(names), (folder, names)
    return models


def events(output: str) -> list[tuple[str, str]]:
    """(start or done, "fold k: trainer") in the order the run reported them."""
    found = re.findall(r"(fold \d+): (DSMM\w+)(: training| done in)", output)
    return [("start" if kind == ": training" else "done", f"{where}: {trainer}") for where, trainer, kind in found]


def test_two_jobs_train_the_same_models_as_one_at_a_time_and_overlap(tiny_planned, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    began = time.time()
    sequential = run_cmd(command("--jobs", "1"), own_env(tiny_planned, one),
                         timeout=1800).stdout
    middle = time.time()
    parallel = run_cmd(command("--jobs", "2"), own_env(tiny_planned, two),
                       timeout=1800).stdout
    print(f"wall time: --jobs 1 {middle - began:.0f} s, --jobs 2 {time.time() - middle:.0f} s")
    assert trained(one) == trained(two)
    assert all(model["epochs"] == 1 and model["training_logs"] == 1 for model in trained(two).values())

    order = events(sequential)
    assert [kind for kind, _ in order] == ["start", "done"] * 4  # one at a time
    order = events(parallel)
    assert len(order) == 8
    first_done = next(i for i, (kind, _) in enumerate(order) if kind == "done")
    assert {name for kind, name in order[:first_done]} == {"fold 0: DSMMTeacherTrainer", "fold 1: DSMMTeacherTrainer"}
    for k in (0, 1):  # each stage 2 starts after its own fold's stage 1 is done
        assert order.index(("done", f"fold {k}: DSMMTeacherTrainer")) < order.index(
            ("start", f"fold {k}: DSMMPretrainTrainer"))
    assert "[DSMMTeacherTrainer fold 1] " in parallel  # progress lines say which training they come from
    shared = f"torch threads: {max(1, (os.cpu_count() or 1) // 2)} ({CPU_THREADS_VARIABLE})"
    for trainer in STAGES:  # two at a time share the cores instead of each taking all of them
        assert shared in (fold(two, trainer, 1) / "nnunet_dsmm_train.log").read_text()
        assert CPU_THREADS_VARIABLE not in (fold(one, trainer, 1) / "nnunet_dsmm_train.log").read_text()


def test_a_failing_training_stops_its_dependants_not_the_others(tiny_planned, tmp_path):
    results = tmp_path / "results"
    broken = fold(results, "DSMMTeacherTrainer", 1)
    (broken / "debug.json").mkdir(parents=True)  # nnU-Net cannot write it: stage 1 of fold 1 fails
    result = run_cmd(command("--jobs", "2"), own_env(tiny_planned, results),
                     check=False, timeout=1800)
    log = broken / "nnunet_dsmm_train.log"
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stderr.startswith("nnunet-dsmm: 1 training(s) failed: DSMMTeacherTrainer fold 1 (see its log "
                                    f"{log})"), result.stderr
    assert "not run: DSMMPretrainTrainer fold 1 (builds on DSMMTeacherTrainer fold 1)" in result.stderr
    assert "the other 2 are trained" in result.stderr and "Traceback" not in result.stderr
    assert "debug.json" in log.read_text()  # nnU-Net's own error is in the log
    for trainer in STAGES:
        assert (fold(results, trainer, 0) / "checkpoint_final.pth").is_file(), trainer
    assert not fold(results, "DSMMPretrainTrainer", 1).exists()
