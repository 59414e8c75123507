"""BraTS in nnU-Net raw format: the channel and region conventions (shared by ``synth`` and the
benchmark's plans), and the conversion of BraTS 2018 to 2021 and 2023/2024 GLI folders.

Two namings are recognised (``BRATS_NAMINGS``). BraTS 2018 to 2021: a case folder ``<CASE>/`` holds
``<CASE>_flair.nii.gz``, ``_t1``, ``_t1ce``, ``_t2`` and ``_seg`` (2018 and 2019 nest the cases under
``HGG/`` and ``LGG/``); labels 1 necrosis, 2 oedema, 4 enhancing. BraTS 2023/2024 GLI: ``<CASE>-t2f``,
``-t1n``, ``-t1c``, ``-t2w`` and ``-seg``; labels 1 non-enhancing core, 2 oedema, 3 enhancing (2024
adds 4, the resection cavity, which is no tumour region and becomes background). Both become nnU-Net's
labels 1 oedema, 2 necrosis/non-enhancing core, 3 enhancing, as in nnU-Net's own BraTS conversion.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from nnunet_dsmm.data.raw_data import RawDataError
from nnunet_dsmm.data.raw_writer import write_raw_dataset
from nnunet_dsmm.model.modalities import simulate_missing

BRATS_CHANNELS = ("FLAIR", "T1", "T1ce", "T2")
# nnU-Net's BraTS convention: labels 1 oedema, 2 necrosis/non-enhancing core, 3 enhancing tumour.
BRATS_LABELS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
BRATS_REGIONS_CLASS_ORDER = [1, 2, 3]
#: the same label values as mutually exclusive classes (softmax training, no regions)
BRATS_PLAIN_LABELS = {"background": 0, "oedema": 1, "necrosis": 2, "enhancing tumor": 3}
LABEL_KINDS = ("regions", "plain")


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


@dataclass(frozen=True)
class BratsNaming:
    """How one BraTS release names a case's files and labels."""

    name: str
    separator: str
    #: file suffixes of the channels, in ``BRATS_CHANNELS`` order
    suffixes: tuple[str, str, str, str]
    #: BraTS label -> nnU-Net label
    labels: dict[int, int]

    def file_name(self, case: str, suffix: str) -> str:
        return f"{case}{self.separator}{suffix}.nii.gz"


BRATS_NAMINGS = (
    BratsNaming("BraTS 2018-2021", "_", ("flair", "t1", "t1ce", "t2"), {0: 0, 1: 2, 2: 1, 4: 3}),
    BratsNaming("BraTS 2023/2024 GLI", "-", ("t2f", "t1n", "t1c", "t2w"), {0: 0, 1: 2, 2: 1, 3: 3, 4: 0}),
)
#: the paper's splits (train/val/test case counts), the RFNet lineage's protocol
SPLIT_PROTOCOLS = {"brats2018": (199, 29, 57), "brats2020": (219, 50, 100)}


class BratsFolderError(RawDataError):
    """A folder holds no BraTS cases this package recognises, or cases of two namings."""


def find_brats_cases(source: str) -> tuple[BratsNaming, dict[str, str]]:
    """The naming of the BraTS cases below ``source`` and case name -> folder, for every folder that
    holds its FLAIR image under that naming (``<CASE>_flair`` or ``<CASE>-t2f``, .nii.gz or .nii)."""
    if not os.path.isdir(source):
        raise BratsFolderError(f"nnunet-dsmm: {source} is not a folder")
    found: dict[str, dict[str, str]] = {naming.name: {} for naming in BRATS_NAMINGS}
    for root, _dirs, files in os.walk(source):
        case = os.path.basename(root)
        for naming in BRATS_NAMINGS:
            flair = naming.file_name(case, naming.suffixes[0])
            if flair in files or flair[:-len(".gz")] in files:
                found[naming.name][case] = root
    namings = [naming for naming in BRATS_NAMINGS if found[naming.name]]
    if not namings:
        expected = " or ".join(f"<CASE>/{n.file_name('<CASE>', n.suffixes[0])} ({n.name})" for n in BRATS_NAMINGS)
        raise BratsFolderError(f"nnunet-dsmm: no BraTS case folders below {source}: expected {expected}. For the "
                               "Medical Segmentation Decathlon's Task01_BrainTumour use nnU-Net's "
                               "nnUNetv2_convert_MSD_dataset")
    if len(namings) > 1:
        raise BratsFolderError(f"nnunet-dsmm: {source} mixes cases of {namings[0].name} and {namings[1].name}; "
                               "convert each release into its own dataset")
    return namings[0], dict(sorted(found[namings[0].name].items()))


def _brats_file(folder: str, case: str, naming: BratsNaming, suffix: str) -> str:
    gz = os.path.join(folder, naming.file_name(case, suffix))
    for path in (gz, gz[:-len(".gz")]):
        if os.path.isfile(path):
            return path
    raise RawDataError(f"nnunet-dsmm: case '{case}', file '{gz}': missing from the BraTS folder")


def convert_label(label: np.ndarray, case: str, path: str, naming: BratsNaming) -> np.ndarray:
    """BraTS labels of ``naming`` as nnU-Net's; a ``RawDataError`` naming the file on another value."""
    unknown = sorted(set(np.unique(label).tolist()) - set(naming.labels))
    if unknown:
        raise RawDataError(f"nnunet-dsmm: case '{case}', file '{path}': unexpected {naming.name} labels {unknown}")
    out = np.zeros_like(label, dtype=np.uint8)
    for brats, nnunet in naming.labels.items():
        out[label == brats] = nnunet
    return out


def load_split(path: str) -> dict[str, list[str]]:
    """A split file: JSON ``{"train": [...], "val": [...], "test": [...]}`` (val optional)."""
    with open(path) as f:
        split = json.load(f)
    if not isinstance(split, dict) or "train" not in split or "test" not in split:
        raise RawDataError(f"nnunet-dsmm: split file '{path}' must be a JSON object with 'train' and 'test' lists")
    return {"train": list(split["train"]), "val": list(split.get("val", [])), "test": list(split["test"])}


def split_counts(spec: str) -> tuple[int, int, int] | None:
    """The train/val/test counts of a ``--split`` that is no file: a protocol name or ``TRAIN/VAL/TEST``."""
    if spec in SPLIT_PROTOCOLS:
        return SPLIT_PROTOCOLS[spec]
    parts = spec.split("/")
    if len(parts) == 3 and all(part.isdigit() for part in parts):
        return int(parts[0]), int(parts[1]), int(parts[2])
    return None


def seeded_split(cases: list[str], spec: str, counts: tuple[int, int, int], seed: int) -> dict[str, list[str]]:
    """A random split of ``cases`` (seeded) into exactly ``counts`` cases; a ``RawDataError`` saying which
    counts would fit when the folder has another number of cases."""
    if sum(counts) != len(cases):
        scaled = [round(c * len(cases) / sum(counts)) for c in counts[1:]]
        fitting = f"{len(cases) - sum(scaled)}/{scaled[0]}/{scaled[1]}"
        raise RawDataError(f"nnunet-dsmm: --split {spec} needs {sum(counts)} cases ({'/'.join(map(str, counts))} "
                           f"train/val/test), the folder has {len(cases)}; the same proportions: --split {fitting}")
    order = [cases[i] for i in np.random.default_rng(seed).permutation(len(cases))]
    train, val = counts[0], counts[0] + counts[1]
    return {"train": sorted(order[:train]), "val": sorted(order[train:val]), "test": sorted(order[val:])}


def convert_brats(source: str, out_dir: str, fm_ratio: float | None, seed: int, split: str | None = None,
                  missing_as: str = "absent", name: str = "BraTS",
                  missing_rates: list[float] | None = None) -> dict:
    """Write the raw dataset and ``missing_manifest.json`` (the naming, the split and what was removed).

    Every modality is kept unless ``fm_ratio`` (the paper's rule) or ``missing_rates`` asks to simulate
    missing ones in the training and validation cases (imagesTr). ``split`` is a JSON file, a protocol of
    ``SPLIT_PROTOCOLS`` or ``TRAIN/VAL/TEST`` counts (the latter two seeded with ``seed``); its test cases
    go complete to imagesTs/labelsTs, and with validation cases ``splits_final.json`` (one fold:
    train/val) is written next to dataset.json, to be copied to nnUNet_preprocessed.
    """
    import SimpleITK as sitk

    naming, cases_found = find_brats_cases(source)
    counts = None if split is None else split_counts(split)
    if split is None:
        parts = {"train": list(cases_found), "val": [], "test": []}
    elif counts is not None:
        parts = seeded_split(list(cases_found), split, counts, seed)
    elif os.path.isfile(split):
        parts = load_split(split)
    else:
        raise RawDataError(f"nnunet-dsmm: --split {split}: neither a JSON file nor one of "
                           f"{', '.join(SPLIT_PROTOCOLS)} nor TRAIN/VAL/TEST case counts")
    unknown = [c for part in parts.values() for c in part if c not in cases_found]
    if unknown:
        raise RawDataError(f"nnunet-dsmm: split file names cases not found below {source}: {unknown[:5]}")
    rng = np.random.default_rng(seed)
    training = parts["train"] + parts["val"]
    if fm_ratio is None and missing_rates is None:
        dropped = {case: [] for case in training}
    else:
        dropped = simulate_missing(training, len(BRATS_CHANNELS), 1.0 if fm_ratio is None else fm_ratio, rng,
                                   missing_rates)

    def cases():
        for case in training + parts["test"]:
            folder = cases_found[case]
            images = [sitk.ReadImage(_brats_file(folder, case, naming, s)) for s in naming.suffixes]
            label_path = _brats_file(folder, case, naming, "seg")
            original = sitk.ReadImage(label_path)
            converted = convert_label(sitk.GetArrayFromImage(original), case, label_path, naming)
            label = sitk.GetImageFromArray(converted)
            label.CopyInformation(original)
            yield case, images, label

    manifest = {"source": os.path.abspath(source), "naming": naming.name, "fm_ratio": fm_ratio,
                "missing_rates": missing_rates, "seed": seed, "missing_as": missing_as, "split_from": split,
                "split": parts}
    manifest = write_raw_dataset(out_dir, brats_dataset_json(len(training), name), cases(), dropped, missing_as,
                                 rng, manifest, f"Converting {naming.name} cases")
    if parts["val"]:
        with open(os.path.join(out_dir, "splits_final.json"), "w") as f:
            json.dump([{"train": parts["train"], "val": parts["val"]}], f, indent=2)
    return manifest
