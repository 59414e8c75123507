"""The stock ``nnUNetv2_plan_and_preprocess`` with our fingerprint extractor and planner, on the session's
dataset with absent and all-zero channels: what the plans and preprocessed data hold, and what reads
them back (nnU-Net's data loader in every stage, ``nnunet_dsmm benchmark --real-batches``)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import blosc2
import numpy as np
import pytest
import torch

from tests.conftest import SYNTH_ID, run_cmd

DATASET_ID = SYNTH_ID


def test_plans_and_preprocessed_data_carry_the_missing_channels(planned):
    root, _, manifest, _ = planned
    pre = root / "preprocessed" / f"Dataset{DATASET_ID}_Synth"
    plans = json.loads((pre / "DSMMPlans.json").read_text())
    config = plans["configurations"]["3d_fullres"]
    assert config["data_identifier"] == "DSMMPlans_3d_fullres"
    assert config["preprocessor_name"] == "DSMMPreprocessor"
    assert config["architecture"]["network_class_name"].endswith("PlainConvUNet")
    fingerprint = json.loads((pre / "dataset_fingerprint.json").read_text())
    assert len(fingerprint["foreground_intensity_properties_per_channel"]) == 4
    for case, dropped in manifest["dropped"].items():
        with open(pre / "DSMMPlans_3d_fullres" / f"{case}.pkl", "rb") as f:
            properties = pickle.load(f)
        assert properties["available_channels"] == [c not in dropped for c in range(4)], case
        data = blosc2.open(urlpath=str(pre / "DSMMPlans_3d_fullres" / f"{case}.b2nd"), mode="r")[:]
        for c in range(4):
            if c in dropped:
                assert not np.any(data[c]), f"{case}: missing channel {c} is not exactly zero"
            else:
                assert np.any(data[c])


@pytest.mark.parametrize("trainer", ["DSMMTrainer", "DSMMPretrainTrainer"])
def test_every_stage_oversamples_foreground_on_the_real_data_loader(planned, trainer):
    """nnU-Net forces round(B * 0.33) samples of a batch to hold foreground: none at DSMMTrainer's
    batch size 1, so that stage draws the forced share per sample instead; stage 2 keeps nnU-Net's rule."""
    from nnunet_dsmm.benchmark.runtime import temporary_environment
    from nnunet_dsmm.nnunet.discovery import find_registered_class
    from nnunet_dsmm.nnunet.nnunet_internals import set_batch_size_and_oversample

    root, _, _, env = planned
    pre = root / "preprocessed" / f"Dataset{DATASET_ID}_Synth"
    plans = json.loads((pre / "DSMMPlans.json").read_text())
    dataset_json = json.loads((pre / "dataset.json").read_text())
    with temporary_environment(nnUNet_preprocessed=env["nnUNet_preprocessed"], nnUNet_results=env["nnUNet_results"],
                               nnUNet_n_proc_DA="0"):
        stage = find_registered_class(trainer)({**plans, "continue_training": False}, "3d_fullres", 0, dataset_json,
                                               torch.device("cpu"))
        set_batch_size_and_oversample(stage)  # what initialize does first
        loader = stage.get_dataloaders()[0].data_loader
    np.random.seed(0)
    if trainer == "DSMMTrainer":
        assert loader.batch_size == 1
        forced = np.mean([loader.get_do_oversample(0) for _ in range(3000)])
        assert 0.30 < forced < 0.36, forced
        batch = loader.generate_train_batch()
        assert batch["data"].shape[0] == 1
    else:
        assert loader.batch_size == 2 and [loader.get_do_oversample(j) for j in range(2)] == [False, True]


def test_benchmark_on_the_preprocessed_dataset_with_nnunet_batches(planned, tmp_path):
    root, _, _, env = planned
    out = tmp_path / "bench.json"
    results = Path(env["nnUNet_results"])
    before = sorted(p.name for p in results.rglob("*")) if results.exists() else []
    table = run_cmd(["nnunet_dsmm", "benchmark", "-d", str(DATASET_ID), "-device", "cpu", "--real-batches", "--steps",
                     "1", "--warmup", "0", "-tr", "DSMMTrainer", "--prediction-repeats", "1", "--disable-tta",
                     "--combinations", "--json", str(out)], env).stdout
    report = json.loads(out.read_text())
    assert report["plan"]["source"] == f"Dataset{DATASET_ID}_Synth/DSMMPlans"
    assert report["settings"]["real_batches"] and report["prediction"]["use_mirroring"] is False
    assert report["prediction"]["DSMMTrainer"]["ratio"] == pytest.approx(
        report["prediction"]["DSMMTrainer"]["median_s"] / report["prediction"]["nnUNetTrainer"]["median_s"])
    # all 15 channel combinations of one case: one at a time and batched, against one stock prediction
    combinations = report["combinations"]
    assert combinations["combinations"] == 15
    for name in ("stock, one prediction", "one combination at a time", "batched combinations"):
        assert combinations[name]["median_s"] > 0 and len(combinations[name]["seconds"]) == 1, name
    batched = combinations["batched combinations"]
    assert batched["ratio"] == pytest.approx(batched["median_s"] / combinations["stock, one prediction"]["median_s"])
    assert "batched combinations" in table and "prediction, one case" in table
    assert list(report["training"]) == ["nnUNetTrainer", "DSMMTrainer"]
    assert all(len(entry["step_ms"]) == 1 for entry in report["training"].values())
    after = sorted(p.name for p in results.rglob("*")) if results.exists() else []
    assert after == before, "the benchmark wrote into nnUNet_results"
