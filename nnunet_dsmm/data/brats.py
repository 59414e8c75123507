"""BraTS in nnU-Net raw format: the channel and region conventions (shared by ``synth`` and the
benchmark's plans), and the conversion of BraTS 2018/2020/2021 folders with simulated missing modalities.

A BraTS case is a folder ``<CASE>/`` holding ``<CASE>_flair.nii.gz``, ``_t1``, ``_t1ce``,
``_t2`` and ``_seg`` (2018 nests them under ``HGG/`` and ``LGG/``). BraTS labels 1 (necrosis),
2 (oedema), 4 (enhancing) become nnU-Net's 2, 1, 3 as in nnU-Net's own BraTS conversion.
"""

from __future__ import annotations

import json
import os

import numpy as np

from nnunet_dsmm.data.raw_data import RawDataError, write_raw_dataset
from nnunet_dsmm.model.modalities import simulate_missing

BRATS_CHANNELS = ("FLAIR", "T1", "T1ce", "T2")
BRATS_SUFFIXES = ("flair", "t1", "t1ce", "t2")  # file suffixes, same order as BRATS_CHANNELS
# nnU-Net's BraTS convention: labels 1 oedema, 2 necrosis/non-enhancing core, 3 enhancing tumour.
BRATS_LABELS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
BRATS_REGIONS_CLASS_ORDER = [1, 2, 3]
#: the same label values as mutually exclusive classes (softmax training, no regions)
BRATS_PLAIN_LABELS = {"background": 0, "oedema": 1, "necrosis": 2, "enhancing tumor": 3}
LABEL_KINDS = ("regions", "plain")
BRATS_TO_NNUNET_LABEL = {0: 0, 1: 2, 2: 1, 4: 3}


def brats_dataset_json(num_training: int, name: str, labels: str = "regions") -> dict:
    """dataset.json of a four-channel BraTS dataset: the regions WT, TC, ET (``regions``, nnU-Net's
    BraTS setting, sigmoid outputs) or oedema, necrosis and enhancing tumour as classes (``plain``)."""
    if labels not in LABEL_KINDS:
        raise ValueError(f"labels must be one of {LABEL_KINDS}, got {labels!r}")
    regions = {"labels": BRATS_LABELS, "regions_class_order": BRATS_REGIONS_CLASS_ORDER}
    return {
        "name": name,
        "channel_names": {str(i): c for i, c in enumerate(BRATS_CHANNELS)},
        **(regions if labels == "regions" else {"labels": BRATS_PLAIN_LABELS}),
        "numTraining": num_training,
        "file_ending": ".nii.gz",
    }


def find_brats_cases(source: str) -> dict[str, str]:
    """Case name -> folder, for every folder below ``source`` that holds ``<name>_flair.nii(.gz)``."""
    cases = {}
    for root, _dirs, files in os.walk(source):
        name = os.path.basename(root)
        if f"{name}_flair.nii.gz" in files or f"{name}_flair.nii" in files:
            cases[name] = root
    if not cases:
        raise RawDataError(f"nnunet-dsmm: no BraTS case folders (<CASE>/<CASE>_flair.nii.gz) below {source}")
    return dict(sorted(cases.items()))


def _brats_file(folder: str, case: str, suffix: str) -> str:
    for ending in (".nii.gz", ".nii"):
        path = os.path.join(folder, f"{case}_{suffix}{ending}")
        if os.path.isfile(path):
            return path
    raise RawDataError(f"nnunet-dsmm: case '{case}', file '{os.path.join(folder, f'{case}_{suffix}.nii.gz')}': "
                       f"missing from the BraTS folder")


def convert_label(label: np.ndarray, case: str, path: str) -> np.ndarray:
    unknown = sorted(set(np.unique(label).tolist()) - set(BRATS_TO_NNUNET_LABEL))
    if unknown:
        raise RawDataError(f"nnunet-dsmm: case '{case}', file '{path}': unexpected BraTS labels {unknown}")
    out = np.zeros_like(label, dtype=np.uint8)
    for brats, nnunet in BRATS_TO_NNUNET_LABEL.items():
        out[label == brats] = nnunet
    return out


def load_split(path: str) -> dict[str, list[str]]:
    """A split file: JSON ``{"train": [...], "val": [...], "test": [...]}`` (val optional)."""
    with open(path) as f:
        split = json.load(f)
    if not isinstance(split, dict) or "train" not in split or "test" not in split:
        raise RawDataError(f"nnunet-dsmm: split file '{path}' must be a JSON object with 'train' and 'test' lists")
    return {"train": list(split["train"]), "val": list(split.get("val", [])), "test": list(split["test"])}


def convert_brats(source: str, out_dir: str, fm_ratio: float, seed: int, split_file: str | None = None,
                  missing_as: str = "absent", name: str = "BraTS") -> dict:
    """Write the raw dataset and ``missing_manifest.json`` (what was dropped, for exact reproduction).

    Training and validation cases go to imagesTr with modalities dropped by the paper's rule;
    test cases go complete to imagesTs/labelsTs. With a split file, ``splits_final.json`` (one
    fold: train/val) is written next to dataset.json, to be copied to nnUNet_preprocessed.
    """
    import SimpleITK as sitk

    cases_found = find_brats_cases(source)
    split = load_split(split_file) if split_file else {"train": list(cases_found), "val": [], "test": []}
    unknown = [c for part in split.values() for c in part if c not in cases_found]
    if unknown:
        raise RawDataError(f"nnunet-dsmm: split file names cases not found below {source}: {unknown[:5]}")
    rng = np.random.default_rng(seed)
    training = split["train"] + split["val"]
    dropped = simulate_missing(training, len(BRATS_CHANNELS), fm_ratio, rng)

    def cases():
        for case in training + split["test"]:
            folder = cases_found[case]
            images = [sitk.ReadImage(_brats_file(folder, case, s)) for s in BRATS_SUFFIXES]
            label_path = _brats_file(folder, case, "seg")
            original = sitk.ReadImage(label_path)
            label = sitk.GetImageFromArray(convert_label(sitk.GetArrayFromImage(original), case, label_path))
            label.CopyInformation(original)
            yield case, images, label

    manifest = {"source": os.path.abspath(source), "fm_ratio": fm_ratio, "seed": seed, "missing_as": missing_as,
                "split": split}
    manifest = write_raw_dataset(out_dir, brats_dataset_json(len(training), name), cases(), dropped, missing_as,
                                 rng, manifest, "Converting BraTS cases")
    if split["val"]:
        with open(os.path.join(out_dir, "splits_final.json"), "w") as f:
            json.dump([{"train": split["train"], "val": split["val"]}], f, indent=2)
    return manifest
