"""Region masks, Dice and HD95 of a prediction against its reference.

Dice and HD95 come from MONAI (maintained, spacing-aware, used across medical imaging); empty masks
follow an explicit, configurable convention (BraTS's by default). ET post-processing of the
missing-modality literature (off by default): see ``nnunet_dsmm.evaluation.postprocessing``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EmptyMaskConvention:
    """Scores when the prediction or the reference of a region is empty (BraTS defaults)."""

    both_empty_dsc: float = 1.0
    both_empty_hd95: float = 0.0
    one_empty_dsc: float = 0.0
    one_empty_hd95: float = 373.13


def region_masks(segmentation: np.ndarray, dataset_json: dict) -> dict[str, np.ndarray]:
    """Binary mask per evaluated region: dataset.json's regions for region-based datasets, else labels."""
    masks = {}
    for name, value in dataset_json["labels"].items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if values == [0]:
            continue
        masks[name] = np.isin(segmentation, values)
    return masks


def dice_and_hd95(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float],
                  convention: EmptyMaskConvention = EmptyMaskConvention()) -> tuple[float, float]:
    """Dice and 95th-percentile Hausdorff distance (in the units of ``spacing``) of two binary masks."""
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance

    pred_empty, ref_empty = not prediction.any(), not reference.any()
    if pred_empty and ref_empty:
        return convention.both_empty_dsc, convention.both_empty_hd95
    if pred_empty or ref_empty:
        return convention.one_empty_dsc, convention.one_empty_hd95
    p = torch.from_numpy(prediction[None, None].astype(np.float32))
    r = torch.from_numpy(reference[None, None].astype(np.float32))
    dsc = float(compute_dice(p, r, include_background=True))
    hd95 = float(compute_hausdorff_distance(p, r, include_background=True, percentile=95,
                                            spacing=[float(s) for s in spacing]))
    return dsc, hd95
