"""``nnunet_dsmm check``: every channel's availability in every case, the channel combinations, the
full-modal ratio and every input error of a raw dataset; writes nothing.

Every error goes to the report's ``errors`` list (one message each, naming the case and the file,
what is wrong and how to fix it) and checking goes on, so one run lists them all. Only a
dataset.json that cannot be used stops the check: the report then holds that one error (a folder
without any dataset.json is no dataset: ``RawDataError``).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import zlib

import numpy as np
from tqdm import tqdm

from nnunet_dsmm.data.raw_data import RawCase, RawDataError, combination_counts, num_channels, read_case, scan_cases
from nnunet_dsmm.model.modalities import channel_names, combination_name

#: keys nnU-Net needs in dataset.json, with an example of each
REQUIRED_KEYS = {"channel_names": '{"0": "FLAIR", "1": "T1"}', "labels": '{"background": 0, "tumour": 1}',
                 "numTraining": "the number of training cases", "file_ending": '".nii.gz"'}
_REWRITE = "copy or export the file again"  # how to fix a broken file


class DatasetJsonError(RawDataError):
    """dataset.json cannot be read or lacks what nnU-Net needs: nothing else of the dataset can be checked."""


def expected_labels(dataset_json: dict) -> list[int]:
    """The label values a label file may hold, as nnU-Net's integrity check computes them."""
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    manager = LabelManager(dataset_json["labels"], regions_class_order=dataset_json.get("regions_class_order"))
    values = [int(v) for v in manager.all_labels]
    return values + ([int(manager.ignore_label)] if manager.has_ignore_label else [])


def _dataset_json_problems(dataset_json: dict) -> list[str]:
    """What is missing or malformed in a parsed dataset.json, in its keys' names."""
    names_key = "modality" if "channel_names" not in dataset_json and "modality" in dataset_json else "channel_names"
    problems = [f'"{key}" is missing (e.g. "{key}": {example})' for key, example in REQUIRED_KEYS.items()
                if (names_key if key == "channel_names" else key) not in dataset_json]
    names = dataset_json.get(names_key)
    if names is not None and (not isinstance(names, dict) or not names
                              or set(names) != {str(i) for i in range(len(names))}):
        problems.append(f'"{names_key}" must map each channel index "0", "1", ... to its name, e.g. '
                        f'{REQUIRED_KEYS["channel_names"]}')
    ending = dataset_json.get("file_ending")
    if ending is not None and not (isinstance(ending, str) and ending.startswith(".")):
        problems.append(f'"file_ending" must be the ending of every image file, e.g. ".nii.gz", not {ending!r}')
    count = dataset_json.get("numTraining")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        problems.append(f'"numTraining" must be the number of training cases, a whole number, not {count!r}')
    if "labels" in dataset_json:
        try:
            values = expected_labels(dataset_json)
        except Exception as error:  # nnU-Net's LabelManager asserts and raises several kinds
            problems.append(f'"labels" cannot be used: {error}; e.g. "labels": {REQUIRED_KEYS["labels"]}')
        else:
            if sorted(values) != list(range(len(values))):
                problems.append(f'"labels" must be consecutive numbers 0, 1, 2, ... (nnU-Net requires it), not '
                                f'{sorted(values)}')
    return problems


def load_dataset_json(folder: str) -> dict:
    """dataset.json of a raw dataset folder; ``DatasetJsonError`` (one message) if it cannot be used."""
    json_file = os.path.join(folder, "dataset.json")
    if not os.path.isfile(json_file):
        raise RawDataError(f"nnunet-dsmm: {folder} has no dataset.json; is it an nnU-Net raw dataset folder?")
    fix = "; nothing else of the dataset can be checked until dataset.json is fixed"
    try:
        with open(json_file, encoding="utf-8") as f:
            dataset_json = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetJsonError(f"nnunet-dsmm: file '{json_file}': dataset.json is not valid JSON ({error}): fix "
                               f"the syntax (a missing or trailing comma, an unquoted name...){fix}") from None
    if not isinstance(dataset_json, dict):
        raise DatasetJsonError(f"nnunet-dsmm: file '{json_file}': dataset.json must be a JSON object {{...}} with "
                               f"the keys {', '.join(REQUIRED_KEYS)}{fix}")
    problems = _dataset_json_problems(dataset_json)
    if problems:
        raise DatasetJsonError(f"nnunet-dsmm: file '{json_file}': dataset.json: {'; '.join(problems)}{fix}")
    return dataset_json


def file_problem(path: str) -> str | None:
    """Why a file cannot be an image (empty, not gzip-compressed, cut short, no NIfTI header), or None."""
    if os.path.getsize(path) == 0:
        return f"the file is empty (0 bytes); {_REWRITE}"
    is_nifti = path.endswith((".nii", ".nii.gz"))
    header = b""
    if path.endswith(".gz"):
        with open(path, "rb") as f:
            start = f.read(348)
        if start[:2] != b"\x1f\x8b":
            if start[344:348] == b"n+1\0":
                return "the file is uncompressed NIfTI despite its .gz name; compress it (gzip) or rename it to .nii " \
                       "and set \"file_ending\": \".nii\" in dataset.json"
            return f"the file is not gzip-compressed, so it is no .nii.gz image despite its name; {_REWRITE} as " \
                   f"compressed NIfTI (e.g. with SimpleITK.WriteImage)"
        try:
            with gzip.open(path) as f:
                header = f.read(348)
                while f.read(1 << 24):
                    pass
        except (EOFError, OSError, zlib.error):
            return f"the file is truncated or corrupt (its compressed data ends early or is damaged); {_REWRITE}"
    elif is_nifti:
        with open(path, "rb") as f:
            header = f.read(348)
    if is_nifti and header[344:348] not in (b"n+1\0", b"ni1\0") and header[4:8] != b"n+2\0":
        return f"the file is not a NIfTI image (it has no NIfTI header); write it as NIfTI or {_REWRITE}"
    return None


def label_problem(seg: np.ndarray, expected: list[int]) -> str | None:
    """Label values that are not whole numbers or that dataset.json does not declare, as nnU-Net rejects them."""
    values = np.unique(seg)
    fractional = values[values != np.round(values)]
    if fractional.size:
        return f"the label holds values that are not whole numbers ({_listed(fractional)}): a label holds class " \
               f"numbers only; write it again with an integer type (resample labels with nearest-neighbour)"
    undeclared = [v for v in values if int(v) not in expected]
    if undeclared:
        return f"the label holds values that dataset.json \"labels\" does not declare ({_listed(undeclared)}; it " \
               f"declares {_listed(expected)}); relabel the file, or declare them in dataset.json"
    return None


def _listed(values) -> str:
    return ", ".join(f"{float(v):g}" for v in values)


def _sound_files(case: RawCase, errors: list[str]) -> RawCase:
    """The case without its files that cannot be images; each such file is an error."""
    sound = RawCase(case.name, dict(case.images), case.label)
    for channel, path in case.images.items():
        if problem := file_problem(path):
            errors.append(f"nnunet-dsmm: case '{case.name}', file '{path}': {problem}")
            del sound.images[channel]
    if case.label and (problem := file_problem(case.label)):
        errors.append(f"nnunet-dsmm: case '{case.name}', file '{case.label}': {problem}")
        sound.label = None
    return sound


def _reader_writer(dataset_json: dict, cases: list[RawCase]):
    """nnU-Net's reader/writer for the dataset, chosen as its planning does (from a sound example file)."""
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    example = next((p for c in cases for p in c.images.values() if file_problem(p) is None), None)
    with contextlib.redirect_stderr(io.StringIO()):  # nnU-Net prints tracebacks of the readers it tries
        return determine_reader_writer_from_dataset_json(dataset_json, example, verbose=False)


def _no_case_error(images_dir: str, dataset_json: dict) -> str:
    """The error for a training folder without any case: what was looked for, what was found instead."""
    ending, n = dataset_json["file_ending"], num_channels(dataset_json)
    others = sorted(f for f in os.listdir(images_dir) if not f.startswith("."))
    found = f"it holds {len(others)} other files, e.g. '{others[0]}'" if others else "it is empty"
    return f"nnunet-dsmm: folder '{images_dir}': no training case found: looked for image files named " \
           f"CASE_XXXX{ending} (file_ending \"{ending}\" in dataset.json, XXXX the channel index 0000 to " \
           f"{n - 1:04d}) but {found}; set \"file_ending\" in dataset.json to the ending of your files, or rename them"


def check_dataset(folder: str, show_progress: bool = True) -> dict:
    """Availability of every channel of every case, combination counts, FM ratio and all errors."""
    try:
        dataset_json = load_dataset_json(folder)
    except DatasetJsonError as error:
        return {"dataset": folder, "channels": [], "splits": {}, "errors": [str(error)]}
    channels, expected = num_channels(dataset_json), expected_labels(dataset_json)
    report = {"dataset": folder, "channels": channel_names(dataset_json), "splits": {}, "errors": []}
    if not os.path.isdir(os.path.join(folder, "imagesTr")):
        report["errors"].append(f"nnunet-dsmm: folder '{os.path.join(folder, 'imagesTr')}' is missing: nnU-Net "
                                f"trains on imagesTr/ (images) and labelsTr/ (labels); create them")
    for split, labels in (("imagesTr", "labelsTr"), ("imagesTs", None)):
        images_dir = os.path.join(folder, split)
        if not os.path.isdir(images_dir):
            continue
        cases, problems = scan_cases(images_dir, os.path.join(folder, labels) if labels else None, dataset_json)
        report["errors"] += problems
        if labels and not cases and not problems:
            report["errors"].append(_no_case_error(images_dir, dataset_json))
        elif labels and cases and len(cases) != dataset_json["numTraining"]:
            report["errors"].append(
                f"nnunet-dsmm: file '{os.path.join(folder, 'dataset.json')}': \"numTraining\" is "
                f"{dataset_json['numTraining']} but {split} holds {len(cases)} training cases; set \"numTraining\": "
                f"{len(cases)} in dataset.json (or add the missing cases)")
        availability = {}
        try:
            rw = _reader_writer(dataset_json, cases) if cases else None
        except RuntimeError:
            report["errors"].append(f"nnunet-dsmm: folder '{images_dir}': no nnU-Net reader can read files ending "
                                    f"in \"{dataset_json['file_ending']}\"; convert the images to NIfTI (.nii.gz)")
            cases = []
        for case in tqdm(cases, desc=f"Reading {split}", disable=not show_progress):
            errors: list[str] = []
            _, seg, _, available = read_case(_sound_files(case, errors), channels, rw, errors)
            if seg is not None and (problem := label_problem(seg, expected)):
                errors.append(f"nnunet-dsmm: case '{case.name}', file '{case.label}': {problem}")
            report["errors"] += errors
            if not errors and not (labels and case.label is None):
                availability[case.name] = [bool(a) for a in available]
        counts = combination_counts(availability.values())
        full = counts.get((True,) * channels, 0)
        report["splits"][split] = {
            "cases": availability,
            "combinations": [{"available": list(k), "count": v} for k, v in counts.items()],
            "full_modal_ratio": full / len(availability) if availability else 0.0,
        }
    return report


def format_check_report(report: dict) -> str:
    """The report as a table: ● available, ○ missing, per case and per combination."""
    if not report["channels"]:  # dataset.json could not be used: its one error says why
        return "\n".join(report["errors"])
    names = report["channels"]
    lines = [f"Dataset {report['dataset']}: {len(names)} channels ({', '.join(names)})"]
    for split, info in report["splits"].items():
        cases = info["cases"]
        lines.append(f"\n{split}: {len(cases)} readable cases")
        width = max([len(c) for c in cases] + [4])
        lines.append("  " + "case".ljust(width) + "  " + "  ".join(names))
        for case, available in cases.items():
            marks = "  ".join(("●" if a else "○").center(len(n)) for a, n in zip(available, names))
            lines.append("  " + case.ljust(width) + "  " + marks)
        lines.append("  channel combinations:")
        for entry in info["combinations"]:
            code = "".join("●" if a else "○" for a in entry["available"])
            lines.append(f"    {code}  {combination_name(entry['available'], names):<30} {entry['count']}")
        lines.append(f"  full-modal (FM) ratio: {100 * info['full_modal_ratio']:.1f}%")
    if report["errors"]:
        lines.append(f"\n{len(report['errors'])} error(s):")
        lines += ["  " + error for error in report["errors"]]
    else:
        lines.append("\nNo errors.")
    return "\n".join(lines)
