"""``DSMMTrainerOracleTeacher``, the bound of the complete-then-distill study: T sees the true complete
case (the channels ``synth`` keeps in ``droppedTr``), the student only the available channels; a dataset
without ``droppedTr`` is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_dsmm.benchmark.runner import random_stage_checkpoints, trainer_class
from nnunet_dsmm.benchmark.runtime import temporary_environment
from nnunet_dsmm.data.raw_data import DROPPED_FOLDER, RawDataError
from tests.conftest import SYNTH_ID, build_trainer

ORACLE = "DSMMTrainerOracleTeacher"


def test_the_oracle_refuses_a_dataset_without_the_dropped_channels(tmp_path):
    raw = tmp_path / "raw"
    with temporary_environment(nnUNet_raw=str(raw)), pytest.raises(RawDataError, match=DROPPED_FOLDER) as error:
        build_trainer(ORACLE, tmp_path)
    assert str(raw) in str(error.value)
    assert not [p for p in (tmp_path / "preprocessed").rglob("*") if p.is_dir() and "complete" in p.name]


def oracle_on(root: Path, results: Path):
    """The oracle built and initialised as ``nnUNetv2_train`` does, on the session's planned dataset (random
    earlier stages), with its training loader in this process."""
    pre = root / "preprocessed" / f"Dataset{SYNTH_ID}_Synth"
    plans = json.loads((pre / "DSMMPlans.json").read_text())
    dataset_json = json.loads((pre / "dataset.json").read_text())
    cls = trainer_class(ORACLE)
    results.mkdir()
    with temporary_environment(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"),
                               nnUNet_results=str(results), nnUNet_n_proc_DA="0", DSMM_TEXT_ENCODER="untrained",
                               **random_stage_checkpoints(cls, plans, "3d_fullres", dataset_json, str(results))):
        trainer = cls({**plans, "continue_training": False}, "3d_fullres", 0, dataset_json, torch.device("cpu"))
        trainer.initialize()
        loader = trainer.get_dataloaders()[0]
    return trainer, loader


def test_the_oracle_teacher_sees_the_true_channels_and_the_student_only_the_available_ones(planned, tmp_path):
    root, folder, manifest, _ = planned
    trainer, loader = oracle_on(root, tmp_path / "results")
    original = trainer.dataset_class(trainer.preprocessed_dataset_folder, None)
    complete = trainer.dataset_class(trainer.complete_dataset_folder, None)
    # the complete cases: the plan's preprocessing of the true channels, cropped alike
    for case, dropped in manifest["dropped"].items():
        data, _, _, properties = complete.load_case(case)
        real = original.load_case(case)[0]
        assert properties["available_channels"] == [c not in dropped for c in range(4)]
        for c in range(4):
            if c not in dropped:
                np.testing.assert_allclose(data[c], real[c], atol=1e-5, err_msg=f"{case}, channel {c}")
                continue
            true = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / DROPPED_FOLDER / f"{case}_{c:04d}.nii.gz")))
            box = tuple(slice(*b) for b in properties["bbox_used_for_cropping"])
            inside = true[box] != 0
            assert np.corrcoef(data[c][inside], true[box][inside])[0, 1] > 0.999, f"{case}, channel {c}"

    # one training step: T gets every true channel, the student zeros wherever a channel is not available
    seen = {}
    teacher, student_input = trainer.teacher_outputs, trainer.segmentation_input

    def teacher_spy(x):
        seen["teacher"] = x.detach().clone()
        return teacher(x)

    def student_spy(step):
        seen["student"], seen["code"] = student_input(step)
        return seen["student"], seen["code"]

    trainer.teacher_outputs, trainer.segmentation_input = teacher_spy, student_spy
    batch = next(loader)
    available = trainer.available_channels_of(batch["keys"])
    assert not available.all(), "every training case of the dataset misses a channel"
    trainer.train_step(batch)
    torch.testing.assert_close(seen["teacher"], batch["data"])
    assert (seen["teacher"].flatten(2).std(-1) > 0).all(), "a channel T sees is empty"
    assert not (seen["code"] & ~available).any()
    assert not seen["student"][~seen["code"]].any()
