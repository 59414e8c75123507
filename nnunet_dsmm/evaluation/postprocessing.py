"""ET post-processing of the missing-modality literature's evaluation code (off by default).

Conventions. RFNet's BraTS evaluation code, reused by mmFormer, M3AE and PASSION, scores the enhancing
tumour (ET) twice: as predicted, and after setting the whole predicted ET of a case to background when
it has fewer than 500 voxels in total (a count over the volume, not per connected component; exactly
500 is kept). Only the ET score changes; whole tumour and tumour core are scored as predicted. The
published tables of that lineage report the post-processed ET. The paper does not say which it reports;
it uses that lineage's data splits and compares with its methods, so its ET is probably post-processed
(not stated). ``nnunet_dsmm evaluate`` scores every region as predicted by default (nnU-Net's
and the BraTS challenge's convention; all our own measured tables use it); ``--et-min-voxels N``
adds the post-processed ET as its own region beside the raw one, so that both conventions are reported.
"""

from __future__ import annotations

import numpy as np

from nnunet_dsmm.errors import DSMMError

#: the threshold of RFNet's BraTS evaluation code
RFNET_ET_MIN_VOXELS = 500
#: names of the enhancing-tumour region (or label) in dataset.json, compared in lower case
ET_NAMES = ("enhancing tumor", "enhancing tumour", "et")


class PostProcessingError(DSMMError, ValueError):
    """ET post-processing asked of a dataset without an enhancing-tumour region or label."""


def remove_small_et(et: np.ndarray, min_voxels: int) -> np.ndarray:
    """The binary ET mask, or an empty one when it has fewer than ``min_voxels`` voxels in total."""
    return et if int(np.count_nonzero(et)) >= min_voxels else np.zeros_like(et)


def enhancing_tumour_region(dataset_json: dict) -> str:
    """The name under which dataset.json declares the enhancing tumour: a region of a region-based
    dataset, else a plain label. Raises ``PostProcessingError`` naming what is missing."""
    labels = [name for name, value in dataset_json["labels"].items() if value not in (0, [0], (0,))]
    for name in labels:
        if name.strip().lower() in ET_NAMES:
            return name
    kind = "region" if "regions_class_order" in dataset_json else "label"
    raise PostProcessingError(
        f"nnunet-dsmm: --et-min-voxels needs an enhancing-tumour {kind} in dataset.json, named one of "
        f"{', '.join(repr(n) for n in ET_NAMES)}; this dataset's {kind}s are {', '.join(map(repr, labels))}")


def post_processed_name(region: str, min_voxels: int) -> str:
    """The name of the post-processed ET region in the results, e.g. 'enhancing tumor (post-processed, <
    500 voxels removed)'."""
    return f"{region} (post-processed, < {min_voxels} voxels removed)"


def add_post_processed_et(predicted: dict[str, np.ndarray], references: dict[str, np.ndarray], region: str,
                          min_voxels: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Both mask dicts with the post-processed ET inserted right after ``region``: the prediction
    through ``remove_small_et``, the reference unchanged."""
    name = post_processed_name(region, min_voxels)

    def insert(masks: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for key, value in masks.items():
            out[key] = value
            if key == region:
                out[name] = mask
        return out

    return insert(predicted, remove_small_et(predicted[region], min_voxels)), insert(references, references[region])
