"""Export the modalities that a trained DSMMTrainer's recovery module M_rec reconstructs.

Each case is preprocessed as for prediction; M_rec completes the missing channels tile by tile
(sliding window over the plan's patch size with nnU-Net's Gaussian blending, so memory does not
grow with the volume; x̂_full keeps the real ones); each recovered channel is brought back to the
input geometry (resampling, crop and transpose reverted as nnU-Net does for its predictions) and
written as ``CASE_XXXX`` so that nnU-Net would read it as that channel. Values are in the dataset's intensity scale: the
case-normalised reconstruction times the channel's foreground std plus mean from the plans. With
several folds, the reconstruction is the mean of the folds' reconstructions (as nnU-Net ensembles
folds by averaging their outputs).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from nnunet_dsmm.data.raw_data import RawDataError, list_cases
from nnunet_dsmm.errors import DSMMError
from nnunet_dsmm.evaluation.prediction import load_predictor, preprocess
from nnunet_dsmm.evaluation.reporting import recovery_preview
from nnunet_dsmm.model.modalities import channel_names
from nnunet_dsmm.nnunet.locations import as_folds


class RecoveryError(DSMMError, RuntimeError):
    """The model or the output location cannot be used for recovery."""


def _check_output_location(out_dir: str, images_dir: str, input_files: Sequence[str]) -> None:
    out, images = os.path.realpath(out_dir), os.path.realpath(images_dir)
    if out == images:
        raise RecoveryError(f"nnunet-dsmm: the output folder {out_dir} is the input folder; recovered channels are "
                            f"never written next to the inputs (choose another -o)")
    inputs = {os.path.realpath(f) for f in input_files}
    if any(os.path.dirname(f) == out for f in inputs):
        raise RecoveryError(f"nnunet-dsmm: {out_dir} holds input files; choose another output folder")


def complete_case(network, data: np.ndarray, available: np.ndarray, patch_size: Sequence[int], device,
                  tile_step_size: float = 0.5) -> np.ndarray:
    """x̂_full of one preprocessed case (C, *spatial): the available channels, M_rec's reconstruction
    for the others, by sliding window with Gaussian blending in tiles of the plan's patch size."""
    import torch

    from nnunet_dsmm.evaluation.sliding_window import sliding_window

    mask = torch.from_numpy(np.asarray(available, dtype=bool))[None].to(device)
    completed = sliding_window(torch.from_numpy(np.asarray(data, dtype=np.float32))[None], patch_size,
                               lambda tiles: network.complete(tiles, mask.expand(len(tiles), -1)).float(),
                               data.shape[0], tile_step_size, torch.device(device), torch.device("cpu"),
                               torch.float32)[0].numpy()
    completed[available] = data[available]  # the real channels, exactly
    return completed


def _to_input_geometry(volume: np.ndarray, properties: dict, plans_manager, configuration_manager) -> np.ndarray:
    """(C, ...) preprocessed-space array → input space, as nnU-Net reverts its predictions."""
    from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image

    spacing = [properties["spacing"][i] for i in plans_manager.transpose_forward]
    current = configuration_manager.spacing
    if len(current) != len(properties["shape_after_cropping_and_before_resampling"]):
        current = [spacing[0], *current]
    resampled = np.asarray(configuration_manager.resampling_fn_probabilities(
        volume, properties["shape_after_cropping_and_before_resampling"], current, spacing), dtype=np.float32)
    full = np.zeros((volume.shape[0], *properties["shape_before_cropping"]), dtype=np.float32)
    for c in range(volume.shape[0]):
        full[c] = insert_crop_into_image(full[c], resampled[c], properties["bbox_used_for_cropping"])
    return full.transpose([0] + [i + 1 for i in plans_manager.transpose_backward])


def complete_case_with_folds(network, parameters: Sequence[dict], data: np.ndarray, available: np.ndarray,
                             patch_size: Sequence[int], device) -> np.ndarray:
    """``complete_case`` with each fold's weights in turn, averaged (one fold: that fold's x̂_full)."""
    completed = None
    for weights in parameters:
        network.load_state_dict(weights)
        fold_completed = complete_case(network, data, available, patch_size, device)
        completed = fold_completed if completed is None else completed + fold_completed
    return completed / len(parameters)


def recover(model_folder: str, folds: int | str | Sequence[int | str], images_dir: str, out_dir: str,
            hide: Sequence[str] = (), cases: Sequence[str] | None = None, device: str = "cpu",
            checkpoint: str = "checkpoint_final.pth") -> dict:
    """Write recovered channels, a preview PNG per case and ``recovery_metrics.json`` (PSNR/SSIM of
    hidden channels, computed in the normalised space inside the nonzero region). Several ``folds``:
    their reconstructions are averaged."""
    import SimpleITK as sitk
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    folds = as_folds(folds)
    predictor = load_predictor(model_folder, folds, device, checkpoint)
    network = predictor.network
    if not hasattr(network, "complete"):
        raise RecoveryError(f"nnunet-dsmm: the model in {model_folder} has no recovery module; use a DSMMTrainer "
                            f"model (or one of its ablations)")
    network.eval().to(device)
    dataset_json, plans, config = predictor.dataset_json, predictor.plans_manager, predictor.configuration_manager
    names = channel_names(dataset_json)
    unknown = [h for h in hide if h not in names]
    if unknown:
        raise RecoveryError(f"nnunet-dsmm: --hide {unknown} are not channels of this dataset ({', '.join(names)})")
    hidden = np.array([n in hide for n in names])
    all_cases = list_cases(images_dir, None, dataset_json)
    if cases:
        missing = sorted(set(cases) - {c.name for c in all_cases})
        if missing:
            raise RawDataError(f"nnunet-dsmm: cases {missing} not found in {images_dir}")
        all_cases = [c for c in all_cases if c.name in cases]
    _check_output_location(out_dir, images_dir, [f for c in all_cases for f in c.images.values()])
    os.makedirs(out_dir, exist_ok=True)
    intensity = plans.foreground_intensity_properties_per_channel
    report: dict = {"model": model_folder, "folds": folds, "hidden": list(hide), "cases": {}}
    for case in all_cases:
        preprocessed = preprocess(predictor, case)
        data, properties, real_available = preprocessed.data, preprocessed.properties, preprocessed.available
        available = real_available & ~hidden
        targets = np.flatnonzero(~available)
        if targets.size == 0 or not available.any():
            continue
        inputs = data * available[:, None, None, None]
        completed = complete_case_with_folds(network, predictor.list_of_parameters, inputs, available,
                                             config.patch_size, device)
        geometry = properties["sitk_stuff"]
        restored = _to_input_geometry(completed[targets], properties, plans, config)
        brain = _to_input_geometry((np.abs(inputs).sum(0, keepdims=True) > 0).astype(np.float32), properties,
                                   plans, config)[0] > 0.5
        entry = {"recovered": {}, "metrics": {}}
        recovered_views, truth_views = {}, {}
        for k, c in enumerate(targets):
            stats = intensity[str(c)]
            volume = np.where(brain, restored[k] * stats["std"] + stats["mean"], 0).astype(np.float32)
            image = sitk.GetImageFromArray(volume)
            image.SetSpacing(geometry["spacing"])
            image.SetOrigin(geometry["origin"])
            image.SetDirection(geometry["direction"])
            path = os.path.join(out_dir, f"{case.name}_{c:04d}{dataset_json['file_ending']}")
            sitk.WriteImage(image, path, useCompression=True)
            entry["recovered"][names[c]] = path
            recovered_views[c] = completed[c]
            if hidden[c] and real_available[c]:
                mask = np.abs(inputs).sum(0) > 0
                truth, guess = data[c][mask], completed[c][mask]
                data_range = float(truth.max() - truth.min())
                entry["metrics"][names[c]] = {
                    "psnr": float(peak_signal_noise_ratio(truth, guess, data_range=data_range)),
                    "ssim": float(structural_similarity(data[c], np.where(mask, completed[c], 0),
                                                        data_range=data_range)),
                }
                truth_views[c] = data[c]
        preview = os.path.join(out_dir, f"{case.name}_recovery_preview.png")
        recovery_preview(preview, names, data, available, recovered_views, truth_views)
        entry["preview"] = preview
        report["cases"][case.name] = entry
    with open(os.path.join(out_dir, "recovery_metrics.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report
