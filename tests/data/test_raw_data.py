"""Reading raw cases with missing channels, and a clear error for every bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

from nnunet_dsmm.data.raw_data import RawDataError, case_from_files, read_case, training_cases
from tests.conftest import make_dataset

DATASET_JSON = {"channel_names": {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}, "file_ending": ".nii.gz"}


def write(path, array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None):
    image = sitk.GetImageFromArray(np.asarray(array, dtype=np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return str(path)


@pytest.fixture
def case_dir(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    return tmp_path


def channel_value(c):
    return np.full((4, 5, 6), float(c + 1))


def test_files_go_to_the_channel_of_their_suffix_and_missing_channels_are_zero(case_dir):
    files = [write(case_dir / "imagesTr" / f"a_{c:04d}.nii.gz", channel_value(c)) for c in (0, 3)]
    files.append(write(case_dir / "imagesTr" / "a_0002.nii.gz", np.zeros((4, 5, 6))))
    case = case_from_files(sorted(files), None, DATASET_JSON)
    data, seg, _, available = read_case(case, 4, SimpleITKIO)
    assert available.tolist() == [True, False, False, True]
    assert np.all(data[0] == 1) and np.all(data[3] == 4)
    assert not data[1].any() and not data[2].any()
    assert seg is None


@pytest.mark.parametrize("problem, expected", [
    ("size", "size"), ("spacing", "spacing"), ("origin", "origin"), ("direction", "direction"),
])
def test_channels_with_disagreeing_geometry_name_case_and_file(case_dir, problem, expected):
    first = write(case_dir / "imagesTr" / "a_0000.nii.gz", channel_value(0))
    kwargs = {"size": {}, "spacing": {"spacing": (1.0, 1.0, 2.0)}, "origin": {"origin": (0.0, 5.0, 0.0)},
              "direction": {"direction": (0, 1, 0, 1, 0, 0, 0, 0, 1)}}[problem]
    array = np.ones((4, 5, 7)) if problem == "size" else channel_value(1)
    second = write(case_dir / "imagesTr" / "a_0001.nii.gz", array, **kwargs)
    with pytest.raises(RawDataError) as error:
        read_case(case_from_files([first, second], None, DATASET_JSON), 4, SimpleITKIO)
    message = str(error.value)
    assert "case 'a'" in message and second in message and expected in message


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_voxels_name_case_and_file(case_dir, bad):
    array = channel_value(2)
    array[1, 2, 3] = bad
    path = write(case_dir / "imagesTr" / "b_0002.nii.gz", array)
    with pytest.raises(RawDataError, match="NaN or infinite") as error:
        read_case(case_from_files([path], None, DATASET_JSON), 4, SimpleITKIO)
    assert "case 'b'" in str(error.value) and path in str(error.value)


def test_undeclared_channel_index_is_an_error(case_dir):
    path = write(case_dir / "imagesTr" / "c_0007.nii.gz", channel_value(0))
    with pytest.raises(RawDataError, match="0007 is not declared") as error:
        case_from_files([path], None, DATASET_JSON)
    assert "case 'c'" in str(error.value)


def test_case_whose_channels_are_all_zero_has_no_modality(case_dir):
    path = write(case_dir / "imagesTr" / "d_0001.nii.gz", np.zeros((4, 5, 6)))
    with pytest.raises(RawDataError, match="no modality at all") as error:
        read_case(case_from_files([path], None, DATASET_JSON), 4, SimpleITKIO)
    assert "case 'd'" in str(error.value)


def test_dataset_level_naming_errors_are_all_listed(case_dir):
    write(case_dir / "imagesTr" / "ok_0000.nii.gz", channel_value(0))
    write(case_dir / "labelsTr" / "ok.nii.gz", np.zeros((4, 5, 6)))
    write(case_dir / "imagesTr" / "nolabel_0000.nii.gz", channel_value(0))
    write(case_dir / "imagesTr" / "ok_0007.nii.gz", channel_value(0))
    write(case_dir / "labelsTr" / "noimage.nii.gz", np.zeros((4, 5, 6)))
    with pytest.raises(RawDataError) as error:
        training_cases(str(case_dir), DATASET_JSON)
    message = str(error.value)
    assert "case 'nolabel'" in message and "no label file" in message
    assert "case 'ok'" in message and "ok_0007.nii.gz" in message
    assert "case 'noimage'" in message and "no channel file at all" in message


def test_synthetic_dataset_matches_its_manifest(tmp_path):
    folder, manifest = make_dataset(tmp_path, 990, num_train=8, fm_ratio=0.25)
    dataset_json = json.loads((folder / "dataset.json").read_text())
    cases = {c.name: c for c in training_cases(str(folder), dataset_json)}
    assert sum(1 for d in manifest["dropped"].values() if not d) == 2
    for name, dropped in manifest["dropped"].items():
        assert 0 <= len(dropped) <= 3
        available = read_case(cases[name], 4, SimpleITKIO)[3]
        assert [i for i in range(4) if not available[i]] == dropped
        for channel, how in manifest["written_as"].get(name, {}).items():
            exists = os.path.exists(folder / "imagesTr" / f"{name}_{int(channel):04d}.nii.gz")
            assert exists == (how == "zero")
    for name in manifest["test_cases"]:
        assert len(list((folder / "imagesTs").glob(f"{name}_*.nii.gz"))) == 4
        assert (folder / "labelsTs" / f"{name}.nii.gz").exists()
