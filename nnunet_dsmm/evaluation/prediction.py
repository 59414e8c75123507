"""A trained model folder through nnU-Net's predictor: loading (folds, checkpoint), preprocessing a
case, and predicting every channel combination of a case (``evaluate``; ``recover`` shares the
loading and preprocessing).

Each case is preprocessed once, and the 2^M - 1 combinations are made by zeroing channels of the
preprocessed data in memory (a missing channel is exactly zero after preprocessing, so this equals
deleting its file). Predictions are saved per model and combination, which makes a re-run skip what is
already there. Several folds (``-f 0 1 2 3 4``) are ensembled by nnU-Net's predictor as
``nnUNetv2_predict`` does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from nnunet_dsmm.data.raw_data import RawCase, available_channels, list_cases
from nnunet_dsmm.errors import DSMMError
from nnunet_dsmm.model.modalities import all_combinations, channel_names, combination_name
from nnunet_dsmm.nnunet.locations import as_folds
from nnunet_dsmm.nnunet.nnunet_internals import mirrored_prediction

if TYPE_CHECKING:
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor


#: combinations of a case per network call when not given: all of them on a GPU; on CPU, groups of 4
#: were fastest (cpu-small plan, 2 cores: 15 one at a time 11.2-11.8 s, groups of 4 9.7-10.4 s, all 15 11.9-12.2 s)
CPU_COMBINATIONS_PER_BATCH = 4
#: how the predictions of a model folder were made (folds, checkpoint, mirroring), next to them
PREDICTION_SETTINGS = "prediction_settings.json"


class EvaluationError(DSMMError, ValueError):
    """An evaluation that cannot run as asked."""


def default_combinations_per_batch(device: str) -> int | None:
    """None (all combinations of a case at once) on CUDA, ``CPU_COMBINATIONS_PER_BATCH`` on CPU."""
    return None if device == "cuda" else CPU_COMBINATIONS_PER_BATCH


def code_string(code: Sequence[bool]) -> str:
    """``"1010"``: 1 for each available channel."""
    return "".join("1" if c else "0" for c in code)


def load_predictor(model_folder: str, folds: Sequence[int | str], device: str,
                   checkpoint: str = "checkpoint_final.pth", use_mirroring: bool = True) -> nnUNetPredictor:
    """nnU-Net's predictor for ``folds`` of a trained model folder (the network holds the first fold's
    weights, ``list_of_parameters`` every fold's), everything on the device on CUDA."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(perform_everything_on_device=device == "cuda", device=torch.device(device),
                                use_mirroring=use_mirroring, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_folder, use_folds=tuple(folds), checkpoint_name=checkpoint)
    return predictor


@dataclass(frozen=True)
class PreprocessedCase:
    """A case as nnU-Net's preprocessing leaves it: data (C, *spatial), properties, and which channels it has."""

    data: np.ndarray
    properties: dict
    available: np.ndarray


def preprocess(predictor: nnUNetPredictor, case: RawCase) -> PreprocessedCase:
    """``case`` preprocessed with the plans of ``predictor``'s model."""
    config = predictor.configuration_manager
    files = [case.images[c] for c in sorted(case.images)]
    data, _, properties = config.preprocessor_class(verbose=False).run_case(
        files, None, predictor.plans_manager, config, predictor.dataset_json)
    return PreprocessedCase(data, properties,
                            available_channels(properties, len(channel_names(predictor.dataset_json))))


def predict_logits_of_combinations(predictor: nnUNetPredictor, volumes: torch.Tensor) -> torch.Tensor:
    """nnU-Net's ``predict_logits_from_preprocessed_data`` for K volumes (K, C, *spatial) at once: every
    sliding-window tile goes through the network (and its mirrored views) as one batch of K, with
    nnU-Net's tiles, Gaussian weighting, padding and float16 accumulation. Falls back to one volume
    at a time where the batched path does not apply (2D tiles on 3D data, no Gaussian; several folds, which
    nnU-Net's ``predict_logits_from_preprocessed_data`` ensembles by averaging their logits)."""
    import torch
    from nnunetv2.utilities.helpers import dummy_context

    from nnunet_dsmm.evaluation.sliding_window import sliding_window

    config = predictor.configuration_manager
    if len(config.patch_size) != volumes.ndim - 2 or len(predictor.list_of_parameters) != 1 \
            or not predictor.use_gaussian:
        return torch.stack([predictor.predict_logits_from_preprocessed_data(v) for v in volumes])
    device = predictor.device
    on_device = predictor.perform_everything_on_device and device.type != "cpu"
    with torch.autocast(device.type, enabled=True) if device.type == "cuda" else dummy_context():
        logits = sliding_window(volumes, config.patch_size, mirrored_prediction(predictor),
                                predictor.label_manager.num_segmentation_heads, predictor.tile_step_size, device,
                                device if on_device else torch.device("cpu"), torch.half)
    return logits.cpu()


def check_prediction_settings(folder: str, settings: dict) -> None:
    """Record how the predictions in ``folder`` are made; refuse to add to predictions made otherwise."""
    path = os.path.join(folder, PREDICTION_SETTINGS)
    if os.path.isfile(path):
        with open(path) as f:
            earlier = json.load(f)
        if earlier != settings:
            raise EvaluationError(f"nnunet-dsmm: {folder} holds predictions made with {earlier}, not {settings}; "
                                  f"choose another output folder (-o)")
        return
    os.makedirs(folder, exist_ok=True)
    with open(path, "w") as f:
        json.dump(settings, f)


def predict_combinations(model_folder: str, folds: int | str | Sequence[int | str], images_dir: str, out_dir: str,
                         model_name: str, device: str = "cpu", checkpoint: str = "checkpoint_final.pth",
                         progress: tqdm | None = None, use_mirroring: bool = True,
                         combinations_per_batch: int | None = None) -> dict[str, dict[str, str]]:
    """Predict every case under every channel combination; returns {case: {code: prediction path}}.

    Up to ``combinations_per_batch`` combinations of a case (default: ``default_combinations_per_batch``)
    share each network call (see ``predict_logits_of_combinations``). Combinations that need a
    channel the case lacks are skipped. Existing predictions are kept (if made with the same folds,
    checkpoint and mirroring). Several ``folds`` are ensembled as ``nnUNetv2_predict -f`` does.
    """
    import torch
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    if combinations_per_batch is not None and combinations_per_batch < 1:
        raise EvaluationError(f"nnunet-dsmm: combinations per batch must be at least 1, got {combinations_per_batch}")
    folds = as_folds(folds)
    predictor = load_predictor(model_folder, folds, device, checkpoint, use_mirroring)
    check_prediction_settings(os.path.join(out_dir, model_name),
                              {"folds": folds, "checkpoint": checkpoint, "use_mirroring": use_mirroring})
    dataset_json, plans, config = predictor.dataset_json, predictor.plans_manager, predictor.configuration_manager
    names = channel_names(dataset_json)
    writer = plans.image_reader_writer_class()
    ending = dataset_json["file_ending"]
    outputs: dict[str, dict[str, str]] = {}
    for case in list_cases(images_dir, None, dataset_json):
        paths = {code_string(code): os.path.join(out_dir, model_name, combination_name(code, names),
                                                 case.name + ending) for code in all_combinations(len(names))}
        outputs[case.name] = {key: path for key, path in paths.items() if os.path.isfile(path)}
        todo = [key for key in paths if key not in outputs[case.name]]
        if todo:
            preprocessed = preprocess(predictor, case)
            todo = [key for key in todo if not any(c == "1" and not a for c, a in zip(key, preprocessed.available))]
        group = combinations_per_batch or default_combinations_per_batch(device) or len(paths)
        for start in range(0, len(todo), group):
            keys = todo[start:start + group]
            codes = np.array([[c == "1" for c in key] for key in keys], dtype=np.float32)
            volumes = torch.from_numpy(preprocessed.data[None] * codes[:, :, None, None, None])
            for key, logits in zip(keys, predict_logits_of_combinations(predictor, volumes)):
                segmentation = convert_predicted_logits_to_segmentation_with_correct_shape(
                    logits, plans, config, predictor.label_manager, preprocessed.properties)
                os.makedirs(os.path.dirname(paths[key]), exist_ok=True)
                tmp = paths[key][: -len(ending)] + ".partial" + ending
                writer.write_seg(segmentation, tmp, preprocessed.properties)
                os.replace(tmp, paths[key])
                outputs[case.name][key] = paths[key]
        if progress is not None:
            progress.update(len(paths))
    return outputs
