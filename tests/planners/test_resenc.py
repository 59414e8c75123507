"""nnU-Net's residual-encoder presets with the DSMM classes, through the stock commands."""

from __future__ import annotations

import json
import pickle

import pytest

from tests.conftest import SMOKE, make_dataset, nnunet_env, run_cmd
from tests.test_end_to_end import assert_valid_prediction

DATASET_ID = 904
PLANS = "DSMMResEncUNetMPlans"


@pytest.mark.slow
def test_resenc_m_preset_plans_trains_three_stages_and_predicts_an_absent_channel(tmp_path):
    folder, manifest = make_dataset(tmp_path, DATASET_ID, num_train=5, num_test=1, fm_ratio=0.2,
                                    missing_as="mixed")
    # no final validation: the residual-encoder model predicts below with the stock nnUNetv2_predict
    env = nnunet_env(tmp_path, **{**SMOKE, "DSMM_NUM_EPOCHS": "1", "DSMM_FINAL_VALIDATION": "0"})
    run_cmd(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-fpe", "DSMMFingerprintExtractor",
             "-pl", "DSMMPlannerResEncM", "-c", "3d_fullres", "-np", "1", "-npfp", "1", "--no_pbar"], env)
    pre = tmp_path / "preprocessed" / f"Dataset{DATASET_ID}_Synth"
    plans = json.loads((pre / f"{PLANS}.json").read_text())
    config = plans["configurations"]["3d_fullres"]
    assert config["architecture"]["network_class_name"].endswith("ResidualEncoderUNet")
    assert config["preprocessor_name"] == "DSMMPreprocessor"
    # never nnU-Net's own nnUNetPlans_3d_fullres, which its ResEnc planners share with the default planner
    assert config["data_identifier"] == f"{PLANS}_3d_fullres"
    assert not (pre / "nnUNetPlans_3d_fullres").exists()
    for case, dropped in manifest["dropped"].items():
        with open(pre / f"{PLANS}_3d_fullres" / f"{case}.pkl", "rb") as f:
            assert pickle.load(f)["available_channels"] == [c not in dropped for c in range(4)]

    for trainer in ("DSMMTeacherTrainer", "DSMMPretrainTrainer", "DSMMTrainer"):
        run_cmd(["nnUNetv2_train", str(DATASET_ID), "3d_fullres", "0", "-p", PLANS, "-tr", trainer, "-device",
                 "cpu"], env)
    case = manifest["test_cases"][0]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for c in (0, 2, 3):  # T1 (_0001) is absent
        (inputs / f"{case}_{c:04d}.nii.gz").symlink_to(folder / "imagesTs" / f"{case}_{c:04d}.nii.gz")
    run_cmd(["nnUNetv2_predict", "-i", str(inputs), "-o", str(tmp_path / "out"), "-d", str(DATASET_ID), "-c",
             "3d_fullres", "-p", PLANS, "-tr", "DSMMTrainer", "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1"],
            env)
    assert_valid_prediction(tmp_path / "out" / f"{case}.nii.gz", folder / "imagesTs" / f"{case}_0000.nii.gz")
