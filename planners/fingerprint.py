"""``DSMMFingerprintExtractor``: dataset fingerprint where each channel's intensity statistics
come only from the cases in which that channel exists."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import (
    isfile,
    join,
    load_json,
    maybe_mkdir_p,
    save_json,
)
from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
from tqdm import tqdm

from nnunet_dsmm.data.raw_data import RawCase, RawDataError, num_channels, read_case, training_cases

PERCENTILES = np.array((0.5, 50.0, 99.5))


def analyze_case(case: RawCase, channels: int, reader_writer_class, num_samples: int):
    """Shape after cropping, spacing, sampled foreground intensities (None where missing), crop ratio."""
    images, seg, properties, available = read_case(case, channels, reader_writer_class)
    cropped, seg_cropped, _ = crop_to_nonzero(images, seg)
    foreground = seg_cropped[0] > 0
    rng = np.random.RandomState(1234)
    intensities = []
    for c in range(channels):
        voxels = cropped[c][foreground]
        keep = available[c] and voxels.size > 0
        intensities.append(rng.choice(voxels, num_samples, replace=True) if keep else None)
    relative_size = np.prod(cropped.shape[1:]) / np.prod(images.shape[1:])
    return cropped.shape[1:], properties["spacing"], intensities, relative_size


class DSMMFingerprintExtractor(DatasetFingerprintExtractor):
    """Fingerprint extractor that tolerates absent/all-zero channels (same JSON as nnU-Net's)."""

    def run(self, overwrite_existing: bool = False) -> dict:
        output_folder = join(nnUNet_preprocessed, self.dataset_name)
        fingerprint_file = join(output_folder, "dataset_fingerprint.json")
        if isfile(fingerprint_file) and not overwrite_existing:
            return load_json(fingerprint_file)

        cases = training_cases(self.input_folder, self.dataset_json)
        channels = num_channels(self.dataset_json)
        first_file = next(iter(cases[0].images.values()))
        reader_writer_class = determine_reader_writer_from_dataset_json(self.dataset_json, first_file)
        samples_per_case = int(self.num_foreground_voxels_for_intensitystats // len(cases))
        jobs = [(case, channels, reader_writer_class, samples_per_case) for case in cases]
        with multiprocessing.get_context("spawn").Pool(max(1, min(self.num_processes, len(cases)))) as pool:
            results = list(tqdm(pool.imap(_analyze_job, jobs), total=len(jobs), desc="Extracting dataset fingerprint",
                                disable=not self.show_progress_bar))

        statistics = {}
        for c in range(channels):
            samples = [r[2][c] for r in results if r[2][c] is not None]
            if not samples:
                name = self.dataset_json["channel_names"][str(c)]
                raise RawDataError(f"nnunet-dsmm: channel {c} ({name}) is missing (or has no foreground) in every "
                                   f"training case of {self.input_folder}; nothing can be learned from it")
            values = np.concatenate(samples)
            p005, median, p995 = np.percentile(values, PERCENTILES)
            statistics[c] = {"mean": float(values.mean()), "median": float(median), "std": float(values.std()),
                             "min": float(values.min()), "max": float(values.max()),
                             "percentile_99_5": float(p995), "percentile_00_5": float(p005)}
        fingerprint = {
            "spacings": [r[1] for r in results],
            "shapes_after_crop": [r[0] for r in results],
            "foreground_intensity_properties_per_channel": statistics,
            "median_relative_size_after_cropping": float(np.median([r[3] for r in results])),
        }
        maybe_mkdir_p(output_folder)
        tmp_file = fingerprint_file + ".tmp"
        save_json(fingerprint, tmp_file)
        os.replace(tmp_file, fingerprint_file)
        return fingerprint


def _analyze_job(job):
    return analyze_case(*job)
