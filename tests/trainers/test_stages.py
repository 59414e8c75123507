"""Finding the earlier stages: what a stage says when one is not trained, in process (the quick
counterpart of the stock ``nnUNetv2_train`` run in tests/test_end_to_end.py, which is marked slow)."""

from __future__ import annotations

from types import SimpleNamespace

import nnunetv2.utilities.file_path_utilities as nnunet_paths
import pytest

from nnunet_dsmm.benchmark.runner import trainer_class
from nnunet_dsmm.trainers.stages import STAGE_CHECKPOINT_VARIABLE, TEACHER, MissingStageError, stage_checkpoint


def test_a_missing_earlier_stage_names_the_command_that_trains_it_and_the_checkpoint_it_wants(tmp_path, monkeypatch):
    monkeypatch.setattr(nnunet_paths, "nnUNet_results", str(tmp_path))
    monkeypatch.delenv(TEACHER.override_variable, raising=False)
    monkeypatch.delenv(STAGE_CHECKPOINT_VARIABLE, raising=False)
    stage_2 = SimpleNamespace(plans_manager=SimpleNamespace(dataset_name="Dataset901_Synth", plans_name="DSMMPlans"),
                              configuration_name="3d_fullres", fold=1)
    teacher = trainer_class("DSMMTeacherTrainer")
    with pytest.raises(MissingStageError) as missing:
        stage_checkpoint(stage_2, teacher, TEACHER)
    assert "nnUNetv2_train 901 3d_fullres 1 -p DSMMPlans -tr DSMMTeacherTrainer" in str(missing.value)
    assert "fold_1/checkpoint_final.pth does not exist" in str(missing.value)
    monkeypatch.setenv(STAGE_CHECKPOINT_VARIABLE, "checkpoint_best.pth")
    with pytest.raises(MissingStageError, match="fold_1/checkpoint_best.pth does not exist"):
        stage_checkpoint(stage_2, teacher, TEACHER)
    found = tmp_path / "Dataset901_Synth" / "DSMMTeacherTrainer__DSMMPlans__3d_fullres" / "fold_1"
    found.mkdir(parents=True)
    (found / "checkpoint_best.pth").touch()
    assert stage_checkpoint(stage_2, teacher, TEACHER) == str(found / "checkpoint_best.pth")
