"""Cases in nnU-Net raw format whose channels may be absent or all zero ("missing").

nnU-Net lists a case's images as whatever ``CASE_XXXX<ending>`` files exist, so a missing
file shifts every later channel. Here every file goes to the channel index of its suffix,
absent or all-zero channels become zeros, and bad input raises ``RawDataError`` naming the
case and the file. A case's availability (one bool per channel) travels with its preprocessed
properties under ``AVAILABLE_CHANNELS_KEY``. Writing raw datasets (``synth``, ``convert-brats``)
goes through ``raw_writer``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from nnunet_dsmm.errors import DSMMError

#: key of a case's channel availability in nnU-Net's preprocessed properties (.pkl)
AVAILABLE_CHANNELS_KEY = "available_channels"
#: the side folder of a raw dataset, beside imagesTr, that keeps the true channels dropped from its training
#: cases (``synth``); only the oracle teacher reads it
DROPPED_FOLDER = "droppedTr"


class RawDataError(DSMMError, ValueError):
    """Bad input in a raw dataset; the message names the case and the file."""


def raw_error(case: str, path: str | None, problem: str) -> RawDataError:
    where = f"case '{case}'" + (f", file '{path}'" if path else "")
    return RawDataError(f"nnunet-dsmm: {where}: {problem}")


@dataclass
class RawCase:
    """The files of one case: channel index -> image path, and the label (None at prediction)."""

    name: str
    images: dict[int, str] = field(default_factory=dict)
    label: str | None = None


def num_channels(dataset_json: dict) -> int:
    return len(dataset_json.get("channel_names", dataset_json.get("modality", {})))


def available_channels(properties: dict, channels: int) -> np.ndarray:
    """A preprocessed case's stored availability (all True for data preprocessed without this plugin)."""
    return np.asarray(properties.get(AVAILABLE_CHANNELS_KEY, [True] * channels), dtype=bool)


def image_case_and_channel(path: str, dataset_json: dict) -> tuple[str, int]:
    """Case name and channel index of an image file ``CASE_XXXX<ending>``; a ``RawDataError``
    naming the file if the name has no such suffix or dataset.json does not declare the channel."""
    ending = dataset_json["file_ending"]
    file = os.path.basename(path)
    match = re.fullmatch(r"(?P<case>.+)_(?P<channel>\d{4})" + re.escape(ending), file)
    if match is None:
        raise raw_error(file.removesuffix(ending), path, f"name does not end in _XXXX{ending} (XXXX: channel)")
    n, channel = num_channels(dataset_json), int(match["channel"])
    if channel >= n:
        raise raw_error(match["case"], path, f"channel index {channel:04d} is not declared in dataset.json, "
                                             f"which has {n} channels (_0000 to _{n - 1:04d})")
    return match["case"], channel


def case_from_files(image_files: Sequence[str], label_file: str | None, dataset_json: dict) -> RawCase:
    """Group the image files nnU-Net lists for one case by channel index, checking each name."""
    case = RawCase(name="?", label=label_file)
    for path in image_files:
        case.name, channel = image_case_and_channel(path, dataset_json)
        case.images[channel] = path
    if not case.images:
        if label_file is None:
            raise RawDataError("nnunet-dsmm: a case was given without any image file")
        case.name = os.path.basename(label_file)[: -len(dataset_json["file_ending"])]
        raise raw_error(case.name, label_file, "the case has no channel file at all")
    return case


def scan_cases(images_dir: str, labels_dir: str | None, dataset_json: dict) -> tuple[list[RawCase], list[str]]:
    """All cases of an images folder (and its labels folder, for training data), checked by name.

    Returns the cases and every problem found: undeclared channel indices, training cases
    without a label, labels or cases without any channel file.
    """
    ending = dataset_json["file_ending"]
    cases: dict[str, RawCase] = {}
    problems: list[str] = []
    for file in sorted(os.listdir(images_dir)):
        if not file.endswith(ending):
            continue
        path = os.path.join(images_dir, file)
        try:
            name, channel = image_case_and_channel(path, dataset_json)
        except RawDataError as error:
            problems.append(str(error))
            continue
        cases.setdefault(name, RawCase(name)).images[channel] = path
    if labels_dir is not None:
        labels = {f[: -len(ending)]: os.path.join(labels_dir, f)
                  for f in sorted(os.listdir(labels_dir)) if f.endswith(ending)} if os.path.isdir(labels_dir) else {}
        for name, case in cases.items():
            case.label = labels.get(name)
            if case.label is None:
                problems.append(str(raw_error(name, os.path.join(labels_dir, name + ending),
                                              "training case has no label file: add it, or move the case "
                                              "to imagesTs")))
        for name, label in labels.items():
            if name not in cases:
                problems.append(str(raw_error(name, label, "label exists but the case has no channel file at all")))
    return list(cases.values()), problems


def list_cases(images_dir: str, labels_dir: str | None, dataset_json: dict) -> list[RawCase]:
    """Like ``scan_cases`` but raises one ``RawDataError`` listing every problem."""
    cases, problems = scan_cases(images_dir, labels_dir, dataset_json)
    if problems:
        raise RawDataError("\n".join(problems))
    return cases


def training_cases(raw_dataset_folder: str, dataset_json: dict) -> list[RawCase]:
    return list_cases(os.path.join(raw_dataset_folder, "imagesTr"),
                      os.path.join(raw_dataset_folder, "labelsTr"), dataset_json)


def complete_training_cases(raw_dataset_folder: str, dataset_json: dict) -> list[RawCase]:
    """The training cases as they were before channels were dropped: each channel kept in ``DROPPED_FOLDER``
    replaces the case's file in imagesTr (absent or all-zero). A ``RawDataError`` when the folder does not
    exist or a case still lacks a channel."""
    side = os.path.join(raw_dataset_folder, DROPPED_FOLDER)
    if not os.path.isdir(side):
        raise RawDataError(f"nnunet-dsmm: {side} does not exist: the true complete training cases are known only "
                           f"for a dataset whose dropped channels were kept there (nnunet_dsmm synth writes it)")
    cases = training_cases(raw_dataset_folder, dataset_json)
    kept = {case.name: case.images for case in list_cases(side, None, dataset_json)}
    ending = dataset_json["file_ending"]
    for case in cases:
        case.images.update(kept.get(case.name, {}))
        for channel in range(num_channels(dataset_json)):
            if channel not in case.images:
                raise raw_error(case.name, os.path.join(side, f"{case.name}_{channel:04d}{ending}"),
                                f"channel {channel} is in neither imagesTr nor {DROPPED_FOLDER}")
    return cases


_USER_NAMES = {"original_affine": "affine", "reoriented_affine": "reoriented affine"}  # nnU-Net's -> user's words


def _geometry_mismatch(reference: dict, other: dict) -> str | None:
    """The first geometry entry (spacing, origin, direction, affine...) that differs, in the user's words."""
    for key, value in reference.items():
        if key not in other:
            continue
        if isinstance(value, dict):
            found = _geometry_mismatch(value, other[key])
            if found:
                return found
            continue
        a, b = np.asarray(value, dtype=float), np.asarray(other[key], dtype=float)
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-4):
            return f"{_USER_NAMES.get(key, key)} {tuple(np.round(b, 5).ravel().tolist())} differs from " \
                   f"{tuple(np.round(a, 5).ravel().tolist())}"
    return None


def count_nonfinite(path: str, image: np.ndarray) -> int:
    """NaN/inf voxels of a channel. ITK's NIfTI reader silently turns them into 0, so float
    NIfTI files are checked on their stored values (nibabel) rather than on what ITK returns."""
    count = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
    if count == 0 and path.endswith((".nii", ".nii.gz")):
        import nibabel

        stored = nibabel.load(path)
        if stored.header.get_data_dtype().kind == "f":
            values = np.asanyarray(stored.dataobj)
            count = int(values.size - np.count_nonzero(np.isfinite(values)))
    return count


def read_case(case: RawCase, channels: int, reader_writer_class, errors: list[str] | None = None
              ) -> tuple[np.ndarray, np.ndarray | None, dict, np.ndarray]:
    """Read one case with every channel at its index.

    Returns ``(data, seg, properties, available)``: data (C, X, Y, Z) float32 with zeros for
    missing channels, the label (1, X, Y, Z) or None, nnU-Net's image properties, and one bool
    per channel (False where the file is absent or all zero). The first problem raises
    ``RawDataError``; given an ``errors`` list, every problem is appended to it and reading goes on.
    """
    def fail(path: str | None, problem: str) -> None:
        if errors is None:
            raise raw_error(case.name, path, problem)
        errors.append(str(raw_error(case.name, path, problem)))

    def read(path: str, reader) -> tuple:
        """Image, properties and NaN/inf voxel count of a file; Nones if it cannot be read."""
        try:
            image, props = reader(path)
            return image, props, count_nonfinite(path, image)
        except Exception as error:  # ITK and nibabel raise many kinds for a broken file
            fail(path, f"cannot be read ({str(error).strip().splitlines()[-1]}); write it again")
        return None, None, 0

    rw = reader_writer_class()
    reference_path, reference_shape, properties, data = None, None, None, None
    available = np.zeros(channels, dtype=bool)
    grid = "; all files of a case must share one voxel grid: resample this file onto the others'"
    for channel, path in sorted(case.images.items()):
        image, props, bad = read(path, lambda p: rw.read_images([p]))
        if bad:
            fail(path, f"{bad} voxels are NaN or infinite; replace them (e.g. by 0)")
        if image is None:
            continue
        if data is None:
            reference_path, reference_shape, properties, ref = path, image.shape[1:], props, os.path.basename(path)
            data = np.zeros((channels, *reference_shape), dtype=np.float32)
        elif image.shape[1:] != reference_shape:
            fail(path, f"size {image.shape[1:]} differs from {reference_shape} of {ref}{grid}")
            continue
        elif mismatch := _geometry_mismatch(properties, props):
            fail(path, f"{mismatch} of {ref}{grid}")
        data[channel] = image[0]
        available[channel] = bool(np.any(image))
    if data is not None and not available.any():
        fail(reference_path, "every channel is all zero: the case has no modality at all")
    seg = None
    if case.label is not None:
        seg, seg_props, bad = read(case.label, rw.read_seg)
        if seg is not None and data is not None and seg.shape[1:] != reference_shape:
            fail(case.label, f"label size {seg.shape[1:]} differs from image size {reference_shape}{grid}")
        elif seg is not None and data is not None and (mismatch := _geometry_mismatch(properties, seg_props)):
            fail(case.label, f"label {mismatch} of {ref}{grid}")
        if bad:
            fail(case.label, "label contains NaN or infinite values; a label holds whole class numbers only")
    return data, seg, properties, available


def combination_counts(availability: Iterable[Sequence[bool]]) -> dict[tuple[bool, ...], int]:
    """How many cases have each channel combination."""
    counts: dict[tuple[bool, ...], int] = {}
    for available in availability:
        key = tuple(bool(a) for a in available)
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
