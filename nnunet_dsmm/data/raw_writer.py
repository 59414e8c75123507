"""Writing a raw dataset with simulated missing modalities (``synth``, ``convert-brats``): each case's
channels as ``CASE_XXXX<ending>`` with the dropped ones left out or written all zero, the true dropped
channels kept aside on request, dataset.json and ``missing_manifest.json``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence

import numpy as np

from nnunet_dsmm.data.raw_data import DROPPED_FOLDER, RawDataError, num_channels

MISSING_AS = ("absent", "zero", "mixed")

#: what a written dataset lacks, per case and channel (absent file or all-zero), and its test cases
MANIFEST_FILE = "missing_manifest.json"


def write_raw_case(images_dir: str, case: str, channels: Sequence, reference, dropped: Sequence[int],
                   missing_as: str, file_ending: str, rng: np.random.Generator,
                   indices: Sequence[int] | None = None) -> dict[int, str]:
    """Write one case's channels (SimpleITK images or arrays in ``reference``'s geometry) as
    ``CASE_XXXX<ending>`` (XXXX: the channel's position, or its entry in ``indices``); a dropped
    channel is left out (``absent``), written all zero (``zero``), or either at random (``mixed``).
    Returns how each dropped channel was written."""
    import SimpleITK as sitk

    how: dict[int, str] = {}
    for index, channel in zip(indices if indices is not None else range(len(channels)), channels):
        path = os.path.join(images_dir, f"{case}_{index:04d}{file_ending}")
        if index in dropped:
            mode = missing_as if missing_as != "mixed" else ("absent", "zero")[int(rng.integers(2))]
            how[index] = mode
            if mode == "absent":
                continue
            channel = np.zeros(sitk.GetArrayViewFromImage(reference).shape, dtype=np.float32)
        image = channel if isinstance(channel, sitk.Image) else sitk.GetImageFromArray(np.asarray(channel))
        if not isinstance(channel, sitk.Image):
            image.CopyInformation(reference)
        sitk.WriteImage(image, path, useCompression=True)
    return how


def write_raw_dataset(out_dir: str, dataset_json: dict, cases: Iterable[tuple[str, Sequence, object]],
                      dropped: dict[str, list[int]], missing_as: str, rng: np.random.Generator,
                      manifest: dict, progress: str, keep_dropped: bool = False) -> dict:
    """Write a raw dataset with simulated missing modalities, then dataset.json and ``missing_manifest.json``.

    ``cases`` yields ``(name, channels, label_image)``: channel images (SimpleITK images or arrays)
    and the label as a SimpleITK image whose geometry the arrays take. Cases named in ``dropped``
    go to imagesTr/labelsTr without their dropped channels; the others go complete to
    imagesTs/labelsTs. With ``keep_dropped``, the dropped channels themselves are kept in ``DROPPED_FOLDER``
    (for an oracle that may see the true complete case). The manifest gets the channels, what was dropped and
    how each dropped channel was written, and the test cases. Refuses a folder that already holds a dataset;
    on an error, removes what it wrote (the output folder too if it made it).
    """
    import SimpleITK as sitk
    from tqdm import tqdm

    if os.path.exists(os.path.join(out_dir, "dataset.json")):
        raise RawDataError(f"nnunet-dsmm: {out_dir} already holds a dataset; choose an empty output folder")
    ending = dataset_json["file_ending"]
    written, test_cases, created = {}, [], []
    if not os.path.isdir(out_dir):
        os.makedirs(out_dir)
        created.append(out_dir)
    try:
        for name, channels, label in tqdm(cases, desc=progress):
            part = "Tr" if name in dropped else "Ts"
            if part == "Ts":
                test_cases.append(name)
            for sub in (f"images{part}", f"labels{part}"):
                folder = os.path.join(out_dir, sub)
                if not os.path.isdir(folder):
                    os.makedirs(folder)
                    created.append(folder)
            how = write_raw_case(os.path.join(out_dir, f"images{part}"), name, channels, label,
                                 dropped.get(name, []), missing_as, ending, rng)
            if how:
                written[name] = how
            if keep_dropped and dropped.get(name):
                side = os.path.join(out_dir, DROPPED_FOLDER)
                if not os.path.isdir(side):
                    os.makedirs(side)
                    created.append(side)
                write_raw_case(side, name, [channels[c] for c in dropped[name]], label, [], missing_as, ending, rng,
                               indices=dropped[name])
            sitk.WriteImage(label, os.path.join(out_dir, f"labels{part}", name + ending), useCompression=True)
    except BaseException:  # leave nothing half-written
        for folder in created:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    manifest = {**manifest, "channels": [dataset_json["channel_names"][str(c)] for c in range(num_channels(
        dataset_json))], "dropped": dropped, "written_as": written, "test_cases": test_cases}
    for file, content in (("dataset.json", dataset_json), (MANIFEST_FILE, manifest)):
        with open(os.path.join(out_dir, file), "w") as f:
            json.dump(content, f, indent=2)
    return manifest
