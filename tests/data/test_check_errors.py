"""``nnunet_dsmm check`` on a dataset with a user's mistake: a named error for each (case, file, what is
wrong, how to fix it), every error of the dataset listed, a non-zero exit and never a traceback."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from tests.conftest import make_dataset, run_cli, run_cmd


def small_dataset(tmp_path: Path, num_train: int = 3) -> tuple[Path, list[str]]:
    """A tiny real dataset (16^3 voxels, every channel present); its folder and training cases."""
    folder, manifest = make_dataset(tmp_path, 960, shape=(24, 24, 24), num_train=num_train, num_test=0,
                                    fm_ratio=1.0, missing_as="absent")
    return folder, sorted(manifest["dropped"])


def check(folder: Path, *options: str, console_script: bool = False):
    """Run the command (its ``main`` in this process, or the installed console script); no traceback,
    whatever happens."""
    args = ["nnunet_dsmm", "check", "--raw", str(folder), "--no-progress", *options]
    result = (run_cmd(args, dict(os.environ), check=False, timeout=300) if console_script
              else run_cli(args, dict(os.environ), check=False))
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


def errors_of(result) -> list[str]:
    """The error lines of the text report."""
    return [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("nnunet-dsmm:")]


def rewrite_label(path: Path, change) -> None:
    """Write a label file again with ``change(array)`` applied, in the same geometry."""
    image = sitk.ReadImage(str(path))
    array = change(sitk.GetArrayFromImage(image))
    new = sitk.GetImageFromArray(array)
    new.CopyInformation(image)
    sitk.WriteImage(new, str(path), useCompression=True)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BROKEN_FILES = {
    "empty image": ("imagesTr", lambda p: p.write_bytes(b""), "empty (0 bytes)"),
    "text named .nii.gz": ("imagesTr", lambda p: p.write_text("not an image\n" * 40), "not gzip-compressed"),
    "truncated image": ("imagesTr", truncate, "truncated"),
    "truncated label": ("labelsTr", truncate, "truncated"),
    "gzip without NIfTI": ("labelsTr", lambda p: p.write_bytes(gzip.compress(b"x" * 500)),
                           "not a NIfTI image"),
}


@pytest.mark.parametrize("defect", list(BROKEN_FILES))
def test_a_broken_file_is_named_and_the_other_cases_are_still_read(tmp_path, defect):
    folder, cases = small_dataset(tmp_path)
    sub, spoil, problem = BROKEN_FILES[defect]
    bad = folder / sub / (f"{cases[1]}_0002.nii.gz" if sub == "imagesTr" else f"{cases[1]}.nii.gz")
    spoil(bad)
    result = check(folder)
    assert result.returncode == 1
    assert errors_of(result) == [next(e for e in errors_of(result) if problem in e)]
    error = errors_of(result)[0]
    assert f"case '{cases[1]}'" in error and f"file '{bad}'" in error and "again" in error  # how to fix it
    report = json.loads(check(folder, "--json").stdout)
    assert len(report["errors"]) == 1 and problem in report["errors"][0]
    assert sorted(report["splits"]["imagesTr"]["cases"]) == [cases[0], cases[2]]


@pytest.mark.parametrize("defect, expected", [
    ("invalid JSON", "not valid JSON"),
    ("no channel_names", '"channel_names" is missing'),
    ("no labels", '"labels" is missing'),
    ("no file_ending", '"file_ending" is missing'),
    ("a list", "must be a JSON object"),
])
def test_a_malformed_dataset_json_is_one_clear_error(tmp_path, defect, expected):
    folder, _ = small_dataset(tmp_path, num_train=2)
    json_file = folder / "dataset.json"
    content = json.loads(json_file.read_text())
    if defect == "invalid JSON":
        json_file.write_text(json.dumps(content, indent=2).replace('"numTraining"', "numTraining"))
    elif defect == "a list":
        json_file.write_text(json.dumps([content]))
    else:
        content.pop(defect.removeprefix("no "))
        json_file.write_text(json.dumps(content))
    result = check(folder)
    assert result.returncode == 1
    assert len(errors_of(result)) == 1 and result.stdout.count("nnunet-dsmm:") == 1, result.stdout
    assert f"file '{json_file}'" in result.stdout and expected in result.stdout
    assert "until dataset.json is fixed" in result.stdout
    if defect == "invalid JSON":
        assert "line " in result.stdout  # where the syntax breaks
    else:
        assert "e.g." in result.stdout or "keys" in result.stdout  # what it should hold
    report = json.loads(check(folder, "--json").stdout)
    assert report["splits"] == {} and len(report["errors"]) == 1 and expected in report["errors"][0]


@pytest.mark.parametrize("value, expected", [
    (7, 'values that dataset.json "labels" does not declare (7; it declares 0, 1, 2, 3); relabel the file'),
    (0.5, "values that are not whole numbers (0.5): a label holds class numbers only; write it again"),
])
def test_a_label_value_nnunet_rejects_is_an_error(tmp_path, value, expected):
    folder, cases = small_dataset(tmp_path)
    label = folder / "labelsTr" / f"{cases[2]}.nii.gz"

    def put(array):
        array = array.astype(np.float32 if isinstance(value, float) else array.dtype)
        array[0, 0, 0] = value
        return array

    rewrite_label(label, put)
    result = check(folder)
    assert result.returncode == 1
    assert len(errors_of(result)) == 1, result.stdout
    assert f"case '{cases[2]}', file '{label}'" in errors_of(result)[0]
    assert expected in errors_of(result)[0]


def test_no_case_found_says_what_was_looked_for(tmp_path):
    folder, _ = small_dataset(tmp_path, num_train=2)
    json_file = folder / "dataset.json"
    json_file.write_text(json.dumps({**json.loads(json_file.read_text()), "file_ending": ".nii"}))
    result = check(folder)
    assert result.returncode == 1 and "No errors" not in result.stdout
    [error] = errors_of(result)
    assert f"folder '{folder / 'imagesTr'}'" in error and "no training case found" in error
    assert "CASE_XXXX.nii" in error and 'file_ending ".nii"' in error and ".nii.gz'" in error
    assert 'set "file_ending"' in error


def test_num_training_that_does_not_match_the_cases_is_an_error(tmp_path):
    folder, _ = small_dataset(tmp_path)
    json_file = folder / "dataset.json"
    json_file.write_text(json.dumps({**json.loads(json_file.read_text()), "numTraining": 5}))
    result = check(folder)
    assert result.returncode == 1
    [error] = errors_of(result)
    assert f"file '{json_file}'" in error and '"numTraining" is 5 but imagesTr holds 3' in error
    assert 'set "numTraining": 3' in error


def test_geometry_errors_use_the_users_words(tmp_path):
    folder, cases = small_dataset(tmp_path, num_train=2)
    path = folder / "imagesTr" / f"{cases[0]}_0003.nii.gz"
    image = sitk.ReadImage(str(path))
    image.SetSpacing((1.0, 1.0, 2.5))
    sitk.WriteImage(image, str(path), useCompression=True)
    result = check(folder)
    assert result.returncode == 1
    [error] = errors_of(result)
    assert f"case '{cases[0]}', file '{path}': spacing" in error and "sitk_stuff" not in error
    assert "resample" in error


def test_every_error_of_the_dataset_is_listed(tmp_path):
    folder, cases = small_dataset(tmp_path, num_train=4)
    images, labels = folder / "imagesTr", folder / "labelsTr"
    (images / f"{cases[0]}_0000.nii.gz").write_bytes(b"")
    truncate(images / f"{cases[0]}_0002.nii.gz")  # a second broken file of the same case
    (images / f"{cases[1]}_0001.nii.gz").write_text("plain text")
    rewrite_label(labels / f"{cases[2]}.nii.gz", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 0, 7, a))
    json_file = folder / "dataset.json"
    json_file.write_text(json.dumps({**json.loads(json_file.read_text()), "numTraining": 9}))
    result = check(folder, console_script=True)
    assert result.returncode == 1
    errors = errors_of(result)
    assert "5 error(s)" in result.stdout and len(errors) == 5, result.stdout
    for case, file, problem in [(cases[0], images / f"{cases[0]}_0000.nii.gz", "empty"),
                                (cases[0], images / f"{cases[0]}_0002.nii.gz", "truncated"),
                                (cases[1], images / f"{cases[1]}_0001.nii.gz", "not gzip-compressed"),
                                (cases[2], labels / f"{cases[2]}.nii.gz", "does not declare (7;")]:
        assert any(f"case '{case}', file '{file}'" in e and problem in e for e in errors), (case, problem)
    assert any('"numTraining" is 9 but imagesTr holds 4' in e for e in errors)
    report = json.loads(check(folder, "--json", console_script=True).stdout)
    assert isinstance(report["errors"], list) and sorted(report["errors"]) == sorted(errors)
    assert list(report["splits"]["imagesTr"]["cases"]) == [cases[3]]
