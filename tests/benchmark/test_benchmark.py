"""``nnunet_dsmm benchmark`` on CPU at a CI-sized plan: what it measures and reports, not how fast."""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest
import torch

from nnunet_dsmm.benchmark.memory import PeakMemory
from nnunet_dsmm.cli.main import main
from tests.conftest import nnunet_env, run_cmd

#: the CPU peak needs a resettable peak resident set (Linux /proc/self/clear_refs)
CPU_PEAK_READABLE = PeakMemory.cpu_readable()


@pytest.mark.slow  # quick: tests/planners/test_preprocessed.py benchmarks one step through the console script
def test_benchmark_reports_every_trainer_side_by_side_with_nnunet(tmp_path):
    env = nnunet_env(tmp_path)
    out = tmp_path / "report" / "bench.json"
    result = run_cmd(["nnunet_dsmm", "benchmark", "--synthetic-plan", "cpu-small", "-device", "cpu", "--steps", "2",
                      "--warmup", "1", "--prediction-repeats", "1", "--disable-tta", "--json",
                      str(out)], env)
    report = json.loads(out.read_text())
    training = report["training"]
    assert list(training) == ["nnUNetTrainer", "DSMMPretrainTrainer", "DSMMTrainer"]
    stock = training["nnUNetTrainer"]
    for name, entry in training.items():
        assert len(entry["step_ms"]) == 2 and entry["median_ms"] > 0, name
        assert entry["resident_bytes"] > 0, name
        if CPU_PEAK_READABLE:
            assert entry["peak_memory_bytes"] > entry["resident_bytes"], name
        else:  # no /proc/self/clear_refs here: the report says "n/a" rather than a wrong figure
            assert entry["peak_memory_bytes"] is None and entry["memory_ratio"] is None, name
        if name != "nnUNetTrainer":  # every ratio is to stock nnU-Net measured in the same run
            assert entry["time_ratio"] == pytest.approx(entry["median_ms"] / stock["median_ms"])
        assert not entry["compiled"]
    # DSMMTrainer holds student, M_rec, the frozen teacher and Adam's two moments
    assert training["DSMMTrainer"]["resident_bytes"] > 2 * training["nnUNetTrainer"]["resident_bytes"]
    prediction = report["prediction"]
    assert prediction["use_mirroring"] is False and prediction["case_shape"] == [56, 56, 48]
    assert prediction["DSMMTrainer"]["ratio"] == pytest.approx(
        prediction["DSMMTrainer"]["median_s"] / prediction["nnUNetTrainer"]["median_s"])
    assert report["plan"] == {"source": "synthetic:cpu-small", "configuration": "3d_fullres",
                              "patch_size": [40, 40, 32], "batch_size": 2, "features_per_stage": [32, 64, 128, 256],
                              "input_channels": 4}
    environment = report["environment"]
    assert environment["device"] == "cpu" and environment["torch"] == torch.__version__
    assert environment["nnunetv2"] == version("nnunetv2") and environment["nnunet_dsmm"] == version("nnunet-dsmm")
    # the channel combinations' timing (--combinations) on a planned dataset:
    # tests/planners/test_preprocessed.py::test_benchmark_on_the_preprocessed_dataset_with_nnunet_batches
    assert report["combinations"] is None
    table = result.stdout
    # the table a user reads states every target next to the measured ratios
    assert all(f"<= {value}x" in table for value in report["targets"].values())
    assert "x nnU-Net" in table and "DSMMPretrainTrainer" in table and "prediction, one case" in table
    # the trainers' logs went to a temporary folder, not into the user's nnUNet_results
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("args, message", [
    (["--synthetic-plan", "cpu-small", "-d", "4"], "either -d DATASET_ID"),
    ([], "either -d DATASET_ID"),
    (["--synthetic-plan", "huge"], "known: brats, cpu-small"),
    (["--synthetic-plan", "cpu-small", "--real-batches"], "--real-batches needs -d"),
    (["--synthetic-plan", "cpu-small", "--steps", "0"], "argument --steps: must be at least 1, got 0"),
    (["--synthetic-plan", "cpu-small", "--complete-share", "1.5"], "must be from 0.0 to 1.0, got 1.5"),
    (["--synthetic-plan", "cpu-small", "-tr", "FastTrainer"], "unknown trainer 'FastTrainer'"),
    (["--synthetic-plan", "cpu-small", "-tr", "DSMMPlanner"], "unknown trainer 'DSMMPlanner'"),
])
def test_benchmark_rejects_bad_options_with_a_clear_message(args, message, capsys):
    try:
        status = main(["benchmark", "-device", "cpu", *args])
    except SystemExit as usage_error:  # argparse's own check of an option's range
        status = usage_error.code
    assert status == 2
    assert message in capsys.readouterr().err
