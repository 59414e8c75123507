"""The prepared GPU check without a GPU: its options, the dataset and plan it prepares, and that every
``nnunet_dsmm`` command it would run still parses (so the script does not rot between GPU runs)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_dsmm.cli.parser import build_parser
from tests.conftest import BIN

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # plans and preprocesses a dataset; quick: the in-process test of its commands below
def test_gpu_check_dry_run_prepares_the_brats_plan_and_lists_its_steps(tmp_path):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHON": str(BIN / "python")}
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out",
                             str(tmp_path / "out"), "--work", str(tmp_path / "work")], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["dry_run"] and set(report["dataset"]) == {"synthesise", "fingerprint", "preprocess"}
    assert all(step["rc"] == 0 for step in report["dataset"].values())
    preprocessed = tmp_path / "work" / "nnUNet_preprocessed" / "Dataset997_GPUCheck"
    plans = json.loads((preprocessed / "DSMMPlans.json").read_text())["configurations"]["3d_fullres"]
    assert plans["patch_size"] == [128, 128, 128] and plans["batch_size"] == 2
    assert plans["architecture"]["arch_kwargs"]["features_per_stage"] == [32, 64, 128, 256, 320, 320]
    assert len(list((preprocessed / "DSMMPlans_3d_fullres").glob("*.pkl"))) == 5
    test_images = sorted(p.name for p in (tmp_path / "work" / "test_images").iterdir())
    assert len(test_images) == 6 and not any(name.endswith("_0001.nii.gz") for name in test_images)
    steps = report["steps"]
    assert {"benchmark_eager_worst", "benchmark_compiled_worst", "benchmark_eager_1pct_fm",
            "benchmark_eager_combinations", "train_DSMMTeacherTrainer", "train_DSMMPretrainTrainer",
            "train_DSMMTrainer", "predict", "evaluate"} <= set(steps)
    assert all(step["status"] == "not run (dry run)" for step in steps.values())
    assert steps["benchmark_compiled_worst"]["env"]["nnUNet_compile"] == "1"
    assert "DSMMTrainerLowMemory" in steps["benchmark_eager_worst"]["command"]
    for step in steps.values():
        command = step["command"].split()
        if command[0] == "nnunet_dsmm":
            build_parser().parse_args(command[1:])  # exits on an option the CLI no longer knows


def test_gpu_check_refuses_to_run_without_a_gpu(tmp_path):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHON": str(BIN / "python")}
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--out", str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "no CUDA device is visible" in result.stderr


def test_every_nnunet_dsmm_command_the_gpu_check_would_run_parses(tmp_path, monkeypatch):
    """In process: the steps of ``benchmarks/gpu_check.py`` and that the command line still takes each of
    its ``nnunet_dsmm`` commands (the dry run above checks the same after preparing its dataset)."""
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, gpu_check)  # its dataclasses look their module up
    spec.loader.exec_module(gpu_check)
    steps = {step.name: step for step in gpu_check.plan_steps(tmp_path / "out", tmp_path / "work", 2)}
    assert {"benchmark_eager_worst", "benchmark_compiled_worst", "benchmark_eager_1pct_fm",
            "benchmark_eager_combinations", "train_DSMMTeacherTrainer", "train_DSMMPretrainTrainer",
            "train_DSMMTrainer", "predict", "evaluate", "train_DSMMTrainer_2gpus"} <= set(steps)
    assert steps["benchmark_compiled_worst"].env["nnUNet_compile"] == "1"
    assert "DSMMTrainerLowMemory" in steps["benchmark_eager_worst"].command
    for step in steps.values():
        if step.command[0] == "nnunet_dsmm":
            build_parser().parse_args(step.command[1:])  # exits on an option the CLI no longer knows
