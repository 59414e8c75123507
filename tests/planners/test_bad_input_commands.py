"""Bad input through the stock commands: a clear error naming case and file, nothing half-written."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from tests.conftest import make_dataset, nnunet_env, run_cmd


def poison(path, value=np.nan):
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    array[array.shape[0] // 2, array.shape[1] // 2, array.shape[2] // 2] = value
    bad = sitk.GetImageFromArray(array)
    bad.CopyInformation(image)
    sitk.WriteImage(bad, str(path))


def test_nan_case_stops_plan_and_preprocess_before_anything_is_written(tmp_path):
    folder, manifest = make_dataset(tmp_path, 902, num_train=4, num_test=0, fm_ratio=0.5)
    case = next(iter(manifest["dropped"]))
    bad_file = folder / "imagesTr" / f"{case}_0000.nii.gz"
    poison(bad_file)
    result = run_cmd(["nnUNetv2_plan_and_preprocess", "-d", "902", "-fpe", "DSMMFingerprintExtractor",
                      "-pl", "DSMMPlanner", "-c", "3d_fullres", "-np", "1", "-npfp", "1", "--no_pbar"],
                     nnunet_env(tmp_path), check=False)
    assert result.returncode != 0
    assert f"nnunet-dsmm: case '{case}', file '{bad_file}'" in result.stderr
    assert "NaN or infinite" in result.stderr
    pre = tmp_path / "preprocessed" / "Dataset902_Synth"
    assert not (pre / "dataset_fingerprint.json").exists()
    assert not (pre / "DSMMPlans.json").exists()


def test_split_steps_and_a_failing_preprocess_leaves_no_partial_output(tmp_path):
    folder, manifest = make_dataset(tmp_path, 903, num_train=4, num_test=0, fm_ratio=0.5)
    env = nnunet_env(tmp_path)
    run_cmd(["nnUNetv2_extract_fingerprint", "-d", "903", "-fpe", "DSMMFingerprintExtractor", "-np", "1"], env)
    run_cmd(["nnUNetv2_plan_experiment", "-d", "903", "-pl", "DSMMPlanner"], env)
    output = tmp_path / "preprocessed" / "Dataset903_Synth" / "DSMMPlans_3d_fullres"

    cases = sorted(manifest["dropped"])
    bad_file = next((folder / "imagesTr").glob(f"{cases[-1]}_*.nii.gz"))
    original = bad_file.read_bytes()
    poison(bad_file, np.inf)
    result = run_cmd(["nnUNetv2_preprocess", "-d", "903", "-plans_name", "DSMMPlans", "-c", "3d_fullres",
                      "-np", "1"], env, check=False)
    assert result.returncode != 0
    assert f"case '{cases[-1]}', file '{bad_file}'" in result.stderr
    assert not output.exists(), "a failed preprocessing run must not leave partial data behind"

    bad_file.write_bytes(original)
    run_cmd(["nnUNetv2_preprocess", "-d", "903", "-plans_name", "DSMMPlans", "-c", "3d_fullres", "-np", "1"], env)
    assert sorted(p.stem for p in output.glob("*.pkl")) == cases
