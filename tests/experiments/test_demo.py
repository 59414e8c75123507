"""Pieces of the demo that the end-to-end tests do not run: the demo configuration and the overlays."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_dsmm.data.brats import brats_dataset_json
from nnunet_dsmm.evaluation.reporting import draw_overlays
from nnunet_dsmm.experiments.demo import CONFIGURATION, add_demo_configuration
from tests.conftest import run_cmd, run_until


def test_demo_configuration_caps_features_and_reuses_the_preprocessed_data(tmp_path):
    plans = {"dataset_name": "Dataset1_X", "plans_name": "DSMMPlans", "configurations": {"3d_fullres": {
        "data_identifier": "DSMMPlans_3d_fullres", "batch_size": 2, "patch_size": [32, 32, 32],
        "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                         "arch_kwargs": {"n_stages": 4, "features_per_stage": [32, 64, 128, 256]},
                         "_kw_requires_import": []}}}}
    path = tmp_path / "DSMMPlans.json"
    path.write_text(json.dumps(plans))
    add_demo_configuration(str(path), 64)
    manager = PlansManager(str(path))
    demo = manager.get_configuration(CONFIGURATION)
    assert demo.network_arch_init_kwargs["features_per_stage"] == [32, 64, 64, 64]
    assert demo.data_identifier == "DSMMPlans_3d_fullres" and demo.batch_size == 2
    assert manager.get_configuration("3d_fullres").network_arch_init_kwargs["features_per_stage"][-1] == 256


def test_one_overlay_per_combination(tmp_path):
    label = np.zeros((8, 10, 12), dtype=np.uint8)
    label[3:6, 3:7, 4:8] = 1
    label[4, 4:6, 5:7] = 3
    for name, array in (("image.nii.gz", label.astype(np.float32) + 1), ("label.nii.gz", label),
                        ("pred.nii.gz", np.roll(label, 1, axis=2))):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / name))
    predictions = {model: {"FLAIR": str(tmp_path / "pred.nii.gz"), "FLAIR+T1": str(tmp_path / "pred.nii.gz")}
                   for model in ("baseline", "ours")}
    written = draw_overlays(str(tmp_path / "image.nii.gz"), str(tmp_path / "label.nii.gz"), predictions,
                            brats_dataset_json(1, "X"), str(tmp_path / "overlays"))
    assert [p.rsplit("/", 1)[1] for p in written] == ["00_FLAIR.png", "01_FLAIR+T1.png"]
    assert all((tmp_path / "overlays" / p.rsplit("/", 1)[1]).stat().st_size > 1000 for p in written)


@pytest.mark.slow
def test_an_interrupted_demo_resumes_then_trains_every_model_per_seed_and_reports_mean_and_std(tmp_path):
    """The whole demo at smoke size with 2 seeds and plain labels, through the console script. Killed during
    its first training, then run again in the same folder, it keeps what is done (synthesis, planning) and
    continues that training with --c instead of refusing the folder."""
    out = tmp_path / "demo"
    command = ["nnunet_dsmm", "demo", "-device", "cpu", "-o", str(out), "--budget", "smoke", "--seeds", "2",
               "--labels", "plain"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    run_until(command, env, lambda line: line.rstrip().endswith("Epoch 1"))
    assert json.loads((out / "demo_state.json").read_text())["done"] == ["synthesise", "plan and preprocess"]
    resumed = run_cmd(command, env, timeout=2400)  # 10 trainings, evaluation and recovery: ~17 min on a busy CPU
    assert "resuming the demo run" in resumed.stdout and "synthesise ..." not in resumed.stdout
    assert "DSMMBaselineTrainer: interrupted at epoch 1 of 2; continuing it: nnUNetv2_train" in resumed.stdout
    log = (out / "logs" / "seed0_DSMMBaselineTrainer.log").read_text()
    assert log.count("=== ") == 2 and log.splitlines()[0].endswith("-device cpu")

    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    assert summary["seeds"] == ["seed_0", "seed_1"]
    assert summary["models"] == ["DSMMBaselineTrainer", "DSMMBaselineEpochMatchedTrainer", "DSMMTrainer"]
    assert summary["regions"] == ["oedema", "necrosis", "enhancing tumor"]
    assert " ± " in (out / "evaluation" / "summary.md").read_text()
    for seed, root in enumerate(("nnUNet_results", "nnUNet_results_seed1")):
        models = out / root / "Dataset990_DSMMDemo"
        epochs = {m.name.split("__")[0]: json.loads((m / "fold_0" / "dsmm_schedule.json").read_text())["num_epochs"]
                  for m in models.iterdir()}
        # smoke budget: stage 1 2 epochs, stage 2 1, stage 3 2; the matched baseline gets stages 2 + 3
        assert epochs == {"DSMMBaselineTrainer": 2, "DSMMTeacherTrainer": 2, "DSMMPretrainTrainer": 1,
                          "DSMMTrainer": 2, "DSMMBaselineEpochMatchedTrainer": 3}
        log = next((models / "DSMMTrainer__DSMMPlans__3d_demo" / "fold_0").glob("training_log_*.txt")).read_text()
        assert f"DSMM_SEED={seed}" in log and "L_task = Dice + CE/BCE (task_loss='dice_ce', plain labels)" in log
    report = json.loads((out / "demo_report.json").read_text())
    assert report["seeds"] == 2 and set(report["mean_dsc_std_over_seeds"]) == set(summary["models"])
