"""ET post-processing of the missing-modality literature (RFNet lineage): the threshold, which
region it applies to, and the rows it adds to the results."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_dsmm.data.brats import BRATS_PLAIN_LABELS
from nnunet_dsmm.evaluation.evaluate import EmptyMaskConvention, score_predictions
from nnunet_dsmm.evaluation.postprocessing import PostProcessingError, enhancing_tumour_region, remove_small_et
from tests.evaluation.test_evaluation import BRATS_JSON


def blob(voxels: int, shape=(20, 20, 20), start: int = 0) -> np.ndarray:
    """A mask whose ``voxels`` foreground voxels are one connected run (C order) from ``start``."""
    mask = np.zeros(int(np.prod(shape)), dtype=bool)
    mask[start:start + voxels] = True
    return mask.reshape(shape)


def test_a_predicted_et_below_the_threshold_is_removed_and_one_at_it_kept():
    assert not remove_small_et(blob(499), 500).any()
    assert np.array_equal(remove_small_et(blob(500), 500), blob(500))
    # the count is over the whole volume, not per connected component, as in RFNet's code
    two = blob(300) | blob(300, start=4000)
    assert np.array_equal(remove_small_et(two, 500), two)


def test_the_enhancing_tumour_is_a_region_or_a_plain_label_and_its_absence_is_named():
    assert enhancing_tumour_region(BRATS_JSON) == "enhancing tumor"
    assert enhancing_tumour_region({"labels": BRATS_PLAIN_LABELS}) == "enhancing tumor"
    with pytest.raises(PostProcessingError, match="enhancing-tumour label.*'enhancing tumor'.*'liver', 'tumour'"):
        enhancing_tumour_region({"labels": {"background": 0, "liver": 1, "tumour": 2}})


def test_the_post_processed_et_is_scored_beside_the_raw_one(tmp_path):
    def write(array: np.ndarray, name: str) -> str:
        path = str(tmp_path / name)
        sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint8)), path)
        return path

    reference = np.where(blob(600), 3, np.where(blob(2000), 1, 0))  # ET of 600 voxels inside a larger WT
    small, large = np.where(blob(499), 3, np.where(blob(2000), 1, 0)), reference
    (tmp_path / "labels").mkdir()
    write(reference, "labels/case.nii.gz")
    predictions = {"case": {"1111": write(small, "small.nii.gz"), "1011": write(large, "large.nii.gz")}}
    rows = score_predictions(predictions, str(tmp_path / "labels"), BRATS_JSON, "m", EmptyMaskConvention(),
                             et_min_voxels=500)
    by = {(r.code, r.region): r for r in rows}
    processed = "enhancing tumor (post-processed, < 500 voxels removed)"
    assert [r.region for r in rows[:4]] == ["whole tumor", "tumor core", "enhancing tumor", processed]
    assert by["1111", "enhancing tumor"].dsc == pytest.approx(2 * 499 / (499 + 600))
    assert (by["1111", processed].dsc, by["1111", processed].hd95) == (0.0, 373.13)  # removed: one empty
    assert by["1011", processed].dsc == by["1011", "enhancing tumor"].dsc == pytest.approx(1.0)
    assert by["1111", "whole tumor"].dsc == pytest.approx(1.0)  # other regions as predicted
    without = score_predictions(predictions, str(tmp_path / "labels"), BRATS_JSON, "m", EmptyMaskConvention())
    assert without == [r for r in rows if r.region != processed]
