"""``nnunet_dsmm check``: every channel's availability in every case, the channel combinations, the
full-modal ratio and every input error of a raw dataset; writes nothing."""

from __future__ import annotations

import json
import os

from tqdm import tqdm

from nnunet_dsmm.modalities import channel_names, combination_name
from nnunet_dsmm.raw_data import RawDataError, combination_counts, num_channels, read_case, scan_cases


def check_dataset(folder: str, show_progress: bool = True) -> dict:
    """Availability of every channel of every case, combination counts, FM ratio and all errors."""
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    json_file = os.path.join(folder, "dataset.json")
    if not os.path.isfile(json_file):
        raise RawDataError(f"nnunet-dsmm: {folder} has no dataset.json; is it an nnU-Net raw dataset folder?")
    with open(json_file) as f:
        dataset_json = json.load(f)
    channels = num_channels(dataset_json)
    report = {"dataset": folder, "channels": channel_names(dataset_json), "splits": {}, "errors": []}
    for split, labels in (("imagesTr", "labelsTr"), ("imagesTs", None)):
        images_dir = os.path.join(folder, split)
        if not os.path.isdir(images_dir):
            continue
        cases, problems = scan_cases(images_dir, os.path.join(folder, labels) if labels else None, dataset_json)
        report["errors"] += problems
        availability = {}
        readable = [c for c in cases if not (labels and c.label is None)]
        if readable:
            rw = determine_reader_writer_from_dataset_json(dataset_json, next(iter(readable[0].images.values())),
                                                           verbose=False)
        for case in tqdm(readable, desc=f"Reading {split}", disable=not show_progress):
            try:
                availability[case.name] = [bool(a) for a in read_case(case, channels, rw)[3]]
            except RawDataError as e:
                report["errors"].append(str(e))
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
