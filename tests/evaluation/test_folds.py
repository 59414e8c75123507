"""Several folds (``-f 0 1``) in ``evaluate`` and ``recover``, ensembled as ``nnUNetv2_predict`` does,
and ``evaluate --et-min-voxels``, through the real commands on two tiny trained folds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from tests.conftest import SYNTH_ID, TINY_SCHEDULE, nnunet_env, run_cmd

DATASET_ID = SYNTH_ID
EVALUATE = ["nnunet_dsmm", "evaluate", "-d", str(DATASET_ID), "-c", "3d_fullres", "-tr", "DSMMTrainer",
            "-device", "cpu", "--disable-tta"]
RECOVER = ["nnunet_dsmm", "recover", "-d", str(DATASET_ID), "-c", "3d_fullres", "--hide", "T2", "-device", "cpu"]


@pytest.fixture(scope="module")
def two_folds(planned, tmp_path_factory):
    """DSMMTrainer folds 0 and 1 of the session's planned dataset (one epoch of two iterations each) on
    random earlier stages; the first test case's images as their own folder."""
    from nnunet_dsmm.benchmark.runner import random_stage_checkpoints, trainer_class

    root, folder, manifest, env = planned
    env = {**env, **TINY_SCHEDULE}
    preprocessed = root / "preprocessed" / f"Dataset{DATASET_ID}_Synth"
    env.update(random_stage_checkpoints(trainer_class("DSMMTrainer"), json.loads((preprocessed / "DSMMPlans.json")
                                        .read_text()), "3d_fullres",
                                        json.loads((preprocessed / "dataset.json").read_text()),
                                        str(tmp_path_factory.mktemp("stages"))))
    for fold in (0, 1):
        run_cmd(["nnUNetv2_train", str(DATASET_ID), "3d_fullres", str(fold), "-p", "DSMMPlans", "-tr", "DSMMTrainer",
                 "-device", "cpu"], env)
    case = manifest["test_cases"][0]
    images = tmp_path_factory.mktemp("images")
    for c in range(4):
        (images / f"{case}_{c:04d}.nii.gz").symlink_to(folder / "imagesTs" / f"{case}_{c:04d}.nii.gz")
    return env, folder, case, images


def array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def predict(env, images: Path, out: Path, *folds: str) -> np.ndarray:
    """``nnUNetv2_predict -f FOLDS`` without mirroring; the single case's segmentation."""
    run_cmd(["nnUNetv2_predict", "-i", str(images), "-o", str(out), "-d", str(DATASET_ID), "-c", "3d_fullres",
             "-p", "DSMMPlans", "-tr", "DSMMTrainer", "-f", *folds, "-device", "cpu", "--disable_tta",
             "-npp", "1", "-nps", "1"], env)
    return array(next(out.glob("*.nii.gz")))


@pytest.mark.slow
def test_evaluate_ensembles_folds_as_nnunet_predict_and_post_processes_et_on_request(two_folds, tmp_path):
    env, folder, case, images = two_folds
    out = tmp_path / "evaluation"
    command = EVALUATE + ["-f", "0", "1", "-i", str(images), "-l", str(folder / "labelsTs"), "-o", str(out)]
    run_cmd(command, env)
    all_channels = out / "predictions" / "DSMMTrainer" / "FLAIR+T1+T1ce+T2" / f"{case}.nii.gz"
    ensemble = array(all_channels)
    assert np.array_equal(ensemble, predict(env, images, tmp_path / "nnunet_01", "0", "1"))
    fold_0, fold_1 = (predict(env, images, tmp_path / f"nnunet_{f}", f) for f in "01")
    assert not np.array_equal(fold_0, fold_1), "the test needs folds that predict differently"
    assert not (np.array_equal(ensemble, fold_0) and np.array_equal(ensemble, fold_1))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["folds"] == [0, 1] and "et_post_processing" not in summary
    raw = list(csv.DictReader((out / "results.csv").open()))
    assert {r["region"] for r in raw} == {"whole tumor", "tumor core", "enhancing tumor"}

    # predictions of another set of folds are not mixed in
    refused = run_cmd(command[:command.index("-f")] + ["-f", "0"] + command[command.index("-f") + 3:], env,
                      check=False)
    assert refused.returncode == 2 and "choose another output folder" in refused.stderr
    assert "Traceback" not in refused.stderr

    # above any predicted ET (the volume has 32^3 voxels): every predicted ET removed, raw ET unchanged
    shown = run_cmd(command + ["--et-min-voxels", "40000"], env)
    processed = "enhancing tumor (post-processed, < 40000 voxels removed)"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r for r in rows if r["region"] != processed] == raw
    et_predicted = [np.any(array(p) == 3) for p in (out / "predictions").rglob("*.nii.gz")]
    assert any(et_predicted), "the test needs a predicted ET"
    reference_has_et = bool(np.any(array(folder / "labelsTs" / f"{case}.nii.gz") == 3))
    post = [r for r in rows if r["region"] == processed]
    assert len(post) == 15
    assert all((float(r["dsc"]), float(r["hd95"])) == ((0.0, 373.13) if reference_has_et else (1.0, 0.0))
               for r in post)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["regions"] == ["whole tumor", "tumor core", "enhancing tumor", processed]
    assert summary["et_post_processing"]["min_voxels"] == 40000
    assert processed in shown.stdout and processed in (out / "summary.md").read_text()


@pytest.mark.slow
def test_recover_averages_the_reconstructions_of_several_folds(two_folds, tmp_path):
    env, _, case, images = two_folds
    recovered = {}
    for folds in (["0"], ["1"], ["0", "1"]):
        out = tmp_path / "_".join(folds)
        run_cmd(RECOVER + ["-f", *folds, "-i", str(images), "-o", str(out)], env)
        assert json.loads((out / "recovery_metrics.json").read_text())["folds"] == [int(f) for f in folds]
        recovered[tuple(folds)] = array(out / f"{case}_0003.nii.gz")
    one, other, both = recovered["0",], recovered["1",], recovered["0", "1"]
    assert not np.allclose(one, other)
    assert np.allclose(both, (one + other) / 2, rtol=1e-4, atol=1e-4 * float(np.abs(both).max()))


def test_folds_are_integers_or_all(tmp_path):
    result = run_cmd(EVALUATE + ["-f", "0", "x", "-i", str(tmp_path), "-l", str(tmp_path), "-o", str(tmp_path)],
                     nnunet_env(tmp_path), check=False)
    assert result.returncode == 2 and "a fold is an integer or 'all', not 'x'" in result.stderr
