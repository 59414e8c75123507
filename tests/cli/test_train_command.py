"""``nnunet_dsmm train`` and ``status`` through the console script on a tiny planned dataset: the stage
chain with the stock nnUNetv2_train, kept when finished, continued with --c when interrupted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_ID, TINY_NAME, TINY_SCHEDULE, nnunet_env, run_cmd, run_until

DATASET_ID, NAME = TINY_ID, TINY_NAME
CHAIN = ("DSMMTeacherTrainer", "DSMMPretrainTrainer", "DSMMTrainer")

pytestmark = pytest.mark.slow


def own_results(tiny_planned: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The planned dataset with a results folder of this test's own."""
    return {**nnunet_env(tiny_planned), **TINY_SCHEDULE, "nnUNet_results": str(tmp_path / "results"), **extra}


def fold(env: dict, trainer: str) -> Path:
    return Path(env["nnUNet_results"]) / NAME / f"{trainer}__DSMMPlans__3d_fullres" / "fold_0"


def command(trainer: str = "DSMMTrainer", *extra: str) -> list[str]:
    return ["nnunet_dsmm", "train", "-d", str(DATASET_ID), "-c", "3d_fullres", "-f", "0", "-tr", trainer,
            "-device", "cpu", *extra]


def logged_epochs(log: str) -> list[int]:
    return [int(e) for e in re.findall(r": Epoch (\d+)\s*$", log, re.MULTILINE)]


def test_train_runs_every_stage_in_order_then_keeps_them(tiny_planned, tmp_path):
    env = own_results(tiny_planned, tmp_path)
    plan = run_cmd(command("DSMMTrainer", "--dry-run"), env).stdout
    assert [line.split(":")[0].strip() for line in plan.splitlines() if "would train 1 epochs" in line] == list(CHAIN)
    assert "nnUNetv2_train Dataset960_Synth 3d_fullres 0 -p DSMMPlans -tr DSMMTeacherTrainer -device cpu" in plan
    assert "0 done, 0 to continue, 3 to start; nothing trained" in plan
    assert not (tmp_path / "results").exists()

    trained = run_cmd(command(), env).stdout
    assert [trained.index(f"{t}: training 1 epochs") for t in CHAIN] == sorted(
        trained.index(f"{t}: training 1 epochs") for t in CHAIN)
    for trainer in CHAIN:
        assert (fold(env, trainer) / "checkpoint_final.pth").is_file(), trainer
    # DSMM_FINAL_VALIDATION=0 (TINY_SCHEDULE): nnU-Net's final validation skipped, and the log says so
    teacher_log = next(fold(env, "DSMMTeacherTrainer").glob("training_log_*.txt")).read_text()
    assert "final validation skipped (DSMM_FINAL_VALIDATION=0)" in teacher_log
    assert not (fold(env, "DSMMTeacherTrainer") / "validation").exists()
    # ... and runs later, as the log says: the same nnUNetv2_train command with --val, the variable unset
    run_cmd(["nnUNetv2_train", str(DATASET_ID), "3d_fullres", "0", "-p", "DSMMPlans", "-tr", "DSMMTeacherTrainer",
             "-device", "cpu", "--val"], {k: v for k, v in env.items() if k != "DSMM_FINAL_VALIDATION"})
    assert (fold(env, "DSMMTeacherTrainer") / "validation" / "summary.json").is_file()
    logs = {t: sorted(fold(env, t).glob("training_log_*.txt")) for t in CHAIN}

    again = run_cmd(command(), env).stdout
    assert again.count("already trained, kept") == 3 and "training 1 epochs" not in again
    assert {t: sorted(fold(env, t).glob("training_log_*.txt")) for t in CHAIN} == logs
    assert "3 done, 0 to continue, 0 to start" in run_cmd(command("DSMMTrainer", "--dry-run"), env).stdout

    status = run_cmd(["nnunet_dsmm", "status", "-d", str(DATASET_ID)], env).stdout
    for trainer in CHAIN:
        block = status.split(f"{trainer}__DSMMPlans__3d_fullres\n")[1].splitlines()[0]
        assert block.strip() == "fold 0: finished, 1 epochs; schedule 1 epochs x 2 iterations (1 validation)"

    # another schedule is not "done": the dry run says which run it would replace
    longer = run_cmd(command("DSMMTeacherTrainer", "--dry-run"), {**env, "DSMM_NUM_EPOCHS": "2"}).stdout
    assert "DSMMTeacherTrainer: would train 2 epochs, replacing a run under the schedule" in longer


def test_an_interrupted_training_continues_at_its_checkpoint(tiny_planned, tmp_path):
    """Issue 19 §1: kill a training after an epoch, run the command again: it continues with --c."""
    env = own_results(tiny_planned, tmp_path, DSMM_NUM_EPOCHS="3")
    run_until(command("DSMMTeacherTrainer"), env, lambda line: line.rstrip().endswith("Epoch 2"))
    folder = fold(env, "DSMMTeacherTrainer")
    assert not (folder / "checkpoint_final.pth").exists()
    saved = torch.load(folder / "checkpoint_best.pth", map_location="cpu", weights_only=False)["current_epoch"]
    assert saved in (1, 2)

    status = run_cmd(["nnunet_dsmm", "status", "-d", str(DATASET_ID), "-c", "3d_fullres", "-p", "DSMMPlans"],
                     env).stdout
    assert (f"fold 0: interrupted, continues at epoch {saved} of 3 from checkpoint_best.pth; log reached epoch 2; "
            "schedule 3 epochs x 2 iterations (1 validation)") in status
    plan = run_cmd(command("DSMMTeacherTrainer", "--dry-run"), env).stdout
    assert f"DSMMTeacherTrainer: interrupted at epoch {saved} of 3; would continue it: nnUNetv2_train " in plan
    assert plan.split("would continue it: ")[1].splitlines()[0].endswith("-device cpu --c")

    first_logs = set(folder.glob("training_log_*.txt"))
    continued = run_cmd(command("DSMMTeacherTrainer"), env).stdout
    assert "continuing it:" in continued and "--c" in continued
    new_logs = sorted(set(folder.glob("training_log_*.txt")) - first_logs)
    assert len(new_logs) == 1
    assert logged_epochs(new_logs[0].read_text()) == list(range(saved, 3))  # not from epoch 0
    final = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == 3
    runs = [line for line in (folder / "nnunet_dsmm_train.log").read_text().splitlines() if line.startswith("===")]
    assert len(runs) == 2 and not runs[0].endswith("--c") and runs[1].endswith("--c")  # one log, both runs
    assert "fold 0: finished, 3 epochs" in run_cmd(["nnunet_dsmm", "status", "-d", str(DATASET_ID)], env).stdout
