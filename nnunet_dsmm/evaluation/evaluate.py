"""Evaluate trained models on every modality combination (the paper's Table 1 for your data).

``evaluate`` predicts every case under every channel combination (``prediction``), scores each region
with Dice and HD95 (``metrics``; ET post-processing on request: ``postprocessing``), summarises the
scores (``results``) and writes the files and figures (``reporting``), all modules of this package.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from tqdm import tqdm

from nnunet_dsmm.data.raw_data import list_cases
from nnunet_dsmm.evaluation import results
from nnunet_dsmm.evaluation.metrics import EmptyMaskConvention, dice_and_hd95, region_masks
from nnunet_dsmm.evaluation.postprocessing import add_post_processed_et, enhancing_tumour_region, post_processed_name
from nnunet_dsmm.evaluation.prediction import EvaluationError, predict_combinations
from nnunet_dsmm.evaluation.reporting import heatmap, summary_markdown
from nnunet_dsmm.evaluation.results import CaseScore, EtPostProcessing, EvaluationResult
from nnunet_dsmm.model.modalities import all_combinations, channel_names, combination_name
from nnunet_dsmm.nnunet.locations import as_folds

__all__ = ["EmptyMaskConvention", "EvaluationError", "EvaluationResult", "evaluate", "score_predictions",
           "seed_label"]


def seed_label(index: int) -> str:
    """Name of the ``index``-th independent training (its predictions' subfolder)."""
    return f"seed_{index}"


def score_predictions(predictions: dict[str, dict[str, str]], labels_dir: str, dataset_json: dict, model: str,
                      convention: EmptyMaskConvention, seed: str = "", et_min_voxels: int | None = None
                      ) -> list[CaseScore]:
    """One row per case × combination × region; ``seed`` names the independent training ("" if one).
    With ``et_min_voxels``, also the post-processed ET (``nnunet_dsmm.evaluation.postprocessing``) as a region."""
    import SimpleITK as sitk

    names = channel_names(dataset_json)
    et = enhancing_tumour_region(dataset_json) if et_min_voxels else None
    rows = []
    for case, by_code in predictions.items():
        reference_image = sitk.ReadImage(os.path.join(labels_dir, case + dataset_json["file_ending"]))
        spacing = reference_image.GetSpacing()[::-1]  # numpy axis order
        references = region_masks(sitk.GetArrayFromImage(reference_image), dataset_json)
        for key, path in by_code.items():
            predicted = region_masks(sitk.GetArrayFromImage(sitk.ReadImage(path)), dataset_json)
            code = [c == "1" for c in key]
            truth = references
            if et is not None:
                predicted, truth = add_post_processed_et(predicted, references, et, et_min_voxels)
            for region, reference in truth.items():
                dsc, hd95 = dice_and_hd95(predicted[region], reference, spacing, convention)
                rows.append(CaseScore(model, seed, case, combination_name(code, names), key, region, dsc, hd95))
    return rows


def evaluate(models: Sequence[tuple[str, str]] | None, folds: int | str | Sequence[int | str], images_dir: str,
             labels_dir: str, out_dir: str, device: str = "cpu",
             convention: EmptyMaskConvention = EmptyMaskConvention(), checkpoint: str = "checkpoint_final.pth",
             use_mirroring: bool = True,
             combinations_per_batch: int | None = None, trainings: dict[str, Sequence[tuple[str, str]]] | None = None,
             et_min_voxels: int | None = None) -> EvaluationResult:
    """``models`` is a list of (name, trained model folder); or ``trainings`` maps each independent
    training (seed) to its own such list, whose predictions go to ``predictions/<seed>/``. Several
    ``folds`` are ensembled. ``et_min_voxels`` (default off) adds the post-processed ET of the RFNet
    lineage's evaluation code beside the raw one (``nnunet_dsmm.evaluation.postprocessing``). Writes results.csv,
    summary.json, summary.md and heatmap.png into ``out_dir``."""
    trainings = trainings or {"": models}
    first_folder = next(iter(trainings.values()))[0][1]
    with open(os.path.join(first_folder, "dataset.json")) as f:
        dataset_json = json.load(f)
    if et_min_voxels is not None and et_min_voxels < 1:
        raise EvaluationError(f"nnunet-dsmm: --et-min-voxels must be at least 1, got {et_min_voxels}")
    et = enhancing_tumour_region(dataset_json) if et_min_voxels else None
    num_cases = len(list_cases(images_dir, None, dataset_json))
    combinations = len(all_combinations(len(channel_names(dataset_json))))
    total = sum(len(m) for m in trainings.values()) * num_cases * combinations
    rows: list[CaseScore] = []
    os.makedirs(out_dir, exist_ok=True)
    with tqdm(total=total, desc="Predicting cases × combinations") as progress:
        for seed, seed_models in trainings.items():
            for name, folder in seed_models:
                predictions = predict_combinations(folder, folds, images_dir,
                                                   os.path.join(out_dir, "predictions", seed), name, device,
                                                   checkpoint, progress, use_mirroring,
                                                   combinations_per_batch)
                rows += score_predictions(predictions, labels_dir, dataset_json, name, convention, seed, et_min_voxels)
    et_post_processing = None if et is None else EtPostProcessing(et, et_min_voxels,
                                                                  post_processed_name(et, et_min_voxels))
    result = results.summarise(rows, dataset_json, empty_mask_convention=convention, folds=tuple(as_folds(folds)),
                               et_post_processing=et_post_processing)
    results.save(result, out_dir)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(summary_markdown(result))
    heatmap(result, os.path.join(out_dir, "heatmap.png"))
    return result
