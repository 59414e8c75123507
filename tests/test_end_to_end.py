"""The stock nnU-Net commands on a small synthetic dataset with absent and all-zero channels."""

from __future__ import annotations

import json
import pickle

import blosc2
import numpy as np
import pytest
import SimpleITK as sitk

from tests.conftest import make_dataset, nnunet_env, run_cmd

DATASET_ID = 901
SMOKE = {"DSMM_NUM_EPOCHS": "2", "DSMM_NUM_ITERATIONS_PER_EPOCH": "3", "DSMM_NUM_VAL_ITERATIONS_PER_EPOCH": "2"}


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """Synthesise, then ``nnUNetv2_plan_and_preprocess -fpe DSMMFingerprintExtractor -pl DSMMPlanner``."""
    root = tmp_path_factory.mktemp("e2e")
    folder, manifest = make_dataset(root, DATASET_ID, num_train=6, num_test=2, fm_ratio=0.0, missing_as="mixed")
    # make sure both kinds of "missing" occur
    kinds = {how for case in manifest["written_as"].values() for how in case.values()}
    assert kinds == {"absent", "zero"}, kinds
    env = nnunet_env(root, **SMOKE)
    run_cmd(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-fpe", "DSMMFingerprintExtractor",
             "-pl", "DSMMPlanner", "-c", "3d_fullres", "-np", "2", "-npfp", "2", "--no_pbar"], env)
    return root, folder, manifest, env


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


def test_train_then_predict_a_case_with_an_absent_channel_file(planned, tmp_path):
    root, folder, manifest, env = planned
    run_cmd(["nnUNetv2_train", str(DATASET_ID), "3d_fullres", "0", "-p", "DSMMPlans", "-tr", "DSMMTeacherTrainer",
             "-device", "cpu"], env)
    model = root / "results" / f"Dataset{DATASET_ID}_Synth" / "DSMMTeacherTrainer__DSMMPlans__3d_fullres"
    assert (model / "fold_0" / "checkpoint_final.pth").is_file()
    assert (model / "fold_0" / "progress.png").is_file()

    case = manifest["test_cases"][0]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for c in (0, 1, 3):  # T1ce (_0002) is absent
        (inputs / f"{case}_{c:04d}.nii.gz").symlink_to(folder / "imagesTs" / f"{case}_{c:04d}.nii.gz")
    out = tmp_path / "out"
    run_cmd(["nnUNetv2_predict", "-i", str(inputs), "-o", str(out), "-d", str(DATASET_ID), "-c", "3d_fullres",
             "-p", "DSMMPlans", "-tr", "DSMMTeacherTrainer", "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1"],
            env)
    prediction = sitk.ReadImage(str(out / f"{case}.nii.gz"))
    reference = sitk.ReadImage(str(folder / "imagesTs" / f"{case}_0000.nii.gz"))
    assert prediction.GetSize() == reference.GetSize()
    assert np.allclose(prediction.GetSpacing(), reference.GetSpacing())
    assert np.allclose(prediction.GetOrigin(), reference.GetOrigin())
    assert np.allclose(prediction.GetDirection(), reference.GetDirection())
    assert set(np.unique(sitk.GetArrayFromImage(prediction)).tolist()) <= {0, 1, 2, 3}

    # stage 2 finds stage 1 by convention and trains with the stock command
    teacher_weights = (model / "fold_0" / "checkpoint_final.pth").read_bytes()
    run_cmd(["nnUNetv2_train", str(DATASET_ID), "3d_fullres", "0", "-p", "DSMMPlans", "-tr", "DSMMPretrainTrainer",
             "-device", "cpu"], env)
    stage2 = root / "results" / f"Dataset{DATASET_ID}_Synth" / "DSMMPretrainTrainer__DSMMPlans__3d_fullres"
    assert (stage2 / "fold_0" / "checkpoint_final.pth").is_file()
    assert (model / "fold_0" / "checkpoint_final.pth").read_bytes() == teacher_weights


def test_a_missing_earlier_stage_prints_the_command_to_run_first(planned):
    _, _, _, env = planned
    result = run_cmd(["nnUNetv2_train", str(DATASET_ID), "3d_fullres", "1", "-p", "DSMMPlans", "-tr",
                      "DSMMPretrainTrainer", "-device", "cpu"], env, check=False)
    assert result.returncode != 0
    assert f"nnUNetv2_train {DATASET_ID} 3d_fullres 1 -p DSMMPlans -tr DSMMTeacherTrainer" in result.stderr
