"""Evaluate trained models on every modality combination (the paper's Table 1 for your data).

Each model is loaded once with nnU-Net's predictor; each case is preprocessed once, and the
2^M - 1 combinations are made by zeroing channels of the preprocessed data in memory (a missing
channel is exactly zero after preprocessing, so this equals deleting its file). Predictions are
saved per model and combination, which makes a re-run skip what is already there. Several folds
(``-f 0 1 2 3 4``) are ensembled by nnU-Net's predictor as ``nnUNetv2_predict`` does.

Metrics: Dice and HD95 from MONAI (maintained, spacing-aware, used across medical imaging);
empty masks follow an explicit, configurable convention (BraTS's by default). ET post-processing of
the missing-modality literature (off by default): see ``nnunet_dsmm.postprocessing``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from nnunet_dsmm.errors import DSMMError
from nnunet_dsmm.locations import as_folds
from nnunet_dsmm.modalities import all_combinations, channel_names, combination_name
from nnunet_dsmm.postprocessing import add_post_processed_et, enhancing_tumour_region, post_processed_name
from nnunet_dsmm.raw_data import available_channels, list_cases

if TYPE_CHECKING:
    import torch


#: combinations of a case per network call when not given: all of them on a GPU; on CPU, groups of 4
#: were fastest (cpu-small plan, 2 cores: 15 one at a time 11.2-11.8 s, groups of 4 9.7-10.4 s, all 15 11.9-12.2 s)
CPU_COMBINATIONS_PER_BATCH = 4
#: how the predictions of a model folder were made (folds, checkpoint, mirroring), next to them
PREDICTION_SETTINGS = "prediction_settings.json"


def default_combinations_per_batch(device: str) -> int | None:
    """None (all combinations of a case at once) on CUDA, ``CPU_COMBINATIONS_PER_BATCH`` on CPU."""
    return None if device == "cuda" else CPU_COMBINATIONS_PER_BATCH


class EvaluationError(DSMMError, ValueError):
    """An evaluation that cannot run as asked."""


@dataclass(frozen=True)
class EmptyMaskConvention:
    """Scores when the prediction or the reference of a region is empty (BraTS defaults)."""

    both_empty_dsc: float = 1.0
    both_empty_hd95: float = 0.0
    one_empty_dsc: float = 0.0
    one_empty_hd95: float = 373.13


def region_masks(segmentation: np.ndarray, dataset_json: dict) -> dict[str, np.ndarray]:
    """Binary mask per evaluated region: dataset.json's regions for region-based datasets, else labels."""
    masks = {}
    for name, value in dataset_json["labels"].items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if values == [0]:
            continue
        masks[name] = np.isin(segmentation, values)
    return masks


def dice_and_hd95(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float],
                  convention: EmptyMaskConvention = EmptyMaskConvention()) -> tuple[float, float]:
    """Dice and 95th-percentile Hausdorff distance (in the units of ``spacing``) of two binary masks."""
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance

    pred_empty, ref_empty = not prediction.any(), not reference.any()
    if pred_empty and ref_empty:
        return convention.both_empty_dsc, convention.both_empty_hd95
    if pred_empty or ref_empty:
        return convention.one_empty_dsc, convention.one_empty_hd95
    p = torch.from_numpy(prediction[None, None].astype(np.float32))
    r = torch.from_numpy(reference[None, None].astype(np.float32))
    dsc = float(compute_dice(p, r, include_background=True))
    hd95 = float(compute_hausdorff_distance(p, r, include_background=True, percentile=95,
                                            spacing=[float(s) for s in spacing]))
    return dsc, hd95


def seed_label(index: int) -> str:
    """Name of the ``index``-th independent training (its predictions' subfolder)."""
    return f"seed_{index}"


def code_string(code: Sequence[bool]) -> str:
    return "".join("1" if c else "0" for c in code)


def predict_logits_of_combinations(predictor, volumes: torch.Tensor) -> torch.Tensor:
    """nnU-Net's ``predict_logits_from_preprocessed_data`` for K volumes (K, C, *spatial) at once: every
    sliding-window tile goes through the network (and its mirrored views) as one batch of K, with
    nnU-Net's tiles, Gaussian weighting, padding and float16 accumulation. Falls back to one volume
    at a time where the batched path does not apply (2D tiles on 3D data, no Gaussian; several folds, which
    nnU-Net's ``predict_logits_from_preprocessed_data`` ensembles by averaging their logits)."""
    import torch
    from nnunetv2.utilities.helpers import dummy_context

    from nnunet_dsmm.sliding_window import sliding_window

    config = predictor.configuration_manager
    if len(config.patch_size) != volumes.ndim - 2 or len(predictor.list_of_parameters) != 1 \
            or not predictor.use_gaussian:
        return torch.stack([predictor.predict_logits_from_preprocessed_data(v) for v in volumes])
    device = predictor.device
    on_device = predictor.perform_everything_on_device and device.type != "cpu"
    with torch.autocast(device.type, enabled=True) if device.type == "cuda" else dummy_context():
        logits = sliding_window(volumes, config.patch_size, predictor._internal_maybe_mirror_and_predict,
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
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    if combinations_per_batch is not None and combinations_per_batch < 1:
        raise EvaluationError(f"nnunet-dsmm: combinations per batch must be at least 1, got {combinations_per_batch}")
    predictor = nnUNetPredictor(perform_everything_on_device=device == "cuda", device=torch.device(device),
                                use_mirroring=use_mirroring, allow_tqdm=False)
    folds = as_folds(folds)
    predictor.initialize_from_trained_model_folder(model_folder, use_folds=tuple(folds), checkpoint_name=checkpoint)
    predictor.network.load_state_dict(predictor.list_of_parameters[0])
    check_prediction_settings(os.path.join(out_dir, model_name),
                              {"folds": folds, "checkpoint": checkpoint, "use_mirroring": use_mirroring})
    dataset_json, plans, config = predictor.dataset_json, predictor.plans_manager, predictor.configuration_manager
    names = channel_names(dataset_json)
    preprocessor = config.preprocessor_class(verbose=False)
    writer = plans.image_reader_writer_class()
    ending = dataset_json["file_ending"]
    outputs: dict[str, dict[str, str]] = {}
    for case in list_cases(images_dir, None, dataset_json):
        paths = {code_string(code): os.path.join(out_dir, model_name, combination_name(code, names),
                                                 case.name + ending) for code in all_combinations(len(names))}
        outputs[case.name] = {key: path for key, path in paths.items() if os.path.isfile(path)}
        todo = [key for key in paths if key not in outputs[case.name]]
        if todo:
            files = [case.images[c] for c in sorted(case.images)]
            data, _, properties = preprocessor.run_case(files, None, plans, config, dataset_json)
            available = available_channels(properties, len(names))
            todo = [key for key in todo if not any(c == "1" and not a for c, a in zip(key, available))]
        step = combinations_per_batch or default_combinations_per_batch(device) or len(paths)
        for start in range(0, len(todo), step):
            keys = todo[start:start + step]
            codes = np.array([[c == "1" for c in key] for key in keys], dtype=np.float32)
            volumes = torch.from_numpy(data[None] * codes[:, :, None, None, None])
            for key, logits in zip(keys, predict_logits_of_combinations(predictor, volumes)):
                segmentation = convert_predicted_logits_to_segmentation_with_correct_shape(
                    logits, plans, config, predictor.label_manager, properties)
                os.makedirs(os.path.dirname(paths[key]), exist_ok=True)
                tmp = paths[key][: -len(ending)] + ".partial" + ending
                writer.write_seg(segmentation, tmp, properties)
                os.replace(tmp, paths[key])
                outputs[case.name][key] = paths[key]
        if progress is not None:
            progress.update(len(paths))
    return outputs


def score_predictions(predictions: dict[str, dict[str, str]], labels_dir: str, dataset_json: dict, model: str,
                      convention: EmptyMaskConvention, seed: str = "", et_min_voxels: int | None = None
                      ) -> list[dict]:
    """One row per case × combination × region; ``seed`` names the independent training ("" if one).
    With ``et_min_voxels``, also the post-processed ET (``nnunet_dsmm.postprocessing``) as a region."""
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
                rows.append({"model": model, "seed": seed, "case": case, "combination": combination_name(code, names),
                             "code": key, "region": region, "dsc": dsc, "hd95": hd95})
    return rows


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def per_case_dsc(rows: Sequence[dict], model: str, region: str) -> dict[str, float]:
    """Case -> DSC of ``model`` on ``region`` averaged over combinations and independent trainings."""
    by_case: dict[str, list[float]] = {}
    for r in rows:
        if r["model"] == model and r["region"] == region:
            by_case.setdefault(r["case"], []).append(float(r["dsc"]))
    return {c: float(np.mean(by_case[c])) for c in sorted(by_case)}


def paired_wilcoxon(rows: Sequence[dict], model: str, other: str, region: str) -> dict:
    """Paired Wilcoxon signed-rank test over cases of ``model`` against ``other`` on ``region`` (each
    case's DSC averaged over combinations and trainings): p, number of cases, mean difference."""
    from scipy.stats import wilcoxon

    ours, theirs = per_case_dsc(rows, model, region), per_case_dsc(rows, other, region)
    common = sorted(set(ours) & set(theirs))
    differences = [ours[c] - theirs[c] for c in common]
    p = float(wilcoxon(differences).pvalue) if any(d != 0 for d in differences) else 1.0
    return {"p": p, "n_cases": len(common), "mean_difference": float(np.mean(differences))}


def summarise(rows: list[dict], dataset_json: dict, reference_model: str | None = None) -> dict:
    """Per model, region and combination (and ``avg``, the mean over combinations): DSC and HD95 as the
    mean over cases of each independent training (``seed`` of the rows), then mean and standard deviation
    over the trainings (``dsc_std``, ``hd95_std``; 0 with one). Paired Wilcoxon signed-rank tests of every
    model against ``reference_model`` (default: the last model) over cases, on each case's DSC averaged
    over combinations and trainings."""
    names = channel_names(dataset_json)
    codes = [code_string(c) for c in all_combinations(len(names))]
    models = list(dict.fromkeys(r["model"] for r in rows))
    regions = list(dict.fromkeys(r["region"] for r in rows))
    seeds = list(dict.fromkeys(r.get("seed", "") for r in rows))
    reference_model = reference_model or models[-1]
    summary = {"channels": names, "combinations": codes, "models": models, "regions": regions, "seeds": seeds,
               "reference_model": reference_model, "results": {}}
    grouped: dict[tuple, list[dict]] = {}  # (model, region, seed, code) -> that training's rows, one pass
    for r in rows:
        grouped.setdefault((r["model"], r["region"], r.get("seed", ""), r["code"]), []).append(r)
    for model in models:
        summary["results"][model] = {}
        for region in regions:
            # seed -> code -> mean over that training's cases
            by_seed: dict[str, dict[str, dict]] = {}
            for seed in seeds:
                for code in codes:
                    values = grouped.get((model, region, seed, code))
                    if values:
                        by_seed.setdefault(seed, {})[code] = {
                            "dsc": np.mean([v["dsc"] for v in values]), "hd95": np.mean([v["hd95"] for v in values]),
                            "n": len(values)}
            entry = {}
            for code in codes:
                trainings = [means[code] for means in by_seed.values() if code in means]
                if trainings:
                    dsc, dsc_std = mean_and_std([t["dsc"] for t in trainings])
                    hd95, hd95_std = mean_and_std([t["hd95"] for t in trainings])
                    entry[code] = {"dsc": dsc, "dsc_std": dsc_std, "hd95": hd95, "hd95_std": hd95_std,
                                   "n": trainings[0]["n"], "trainings": len(trainings)}
            averages = [(np.mean([m["dsc"] for m in means.values()]), np.mean([m["hd95"] for m in means.values()]))
                        for means in by_seed.values()]
            dsc, dsc_std = mean_and_std([a[0] for a in averages])
            hd95, hd95_std = mean_and_std([a[1] for a in averages])
            entry["avg"] = {"dsc": dsc, "dsc_std": dsc_std, "hd95": hd95, "hd95_std": hd95_std,
                            "trainings": len(averages)}
            summary["results"][model][region] = entry
    summary["wilcoxon"] = {model: {region: paired_wilcoxon(rows, reference_model, model, region)
                                   for region in regions} for model in models if model != reference_model}
    return summary


def table1_markdown(summary: dict, alpha: float = 0.05) -> str:
    """The paper's Table 1 layout: ●/○ per modality and combination, Avg., a row per model and
    region with DSC in % (mean ± std over independent trainings when there are several), the best
    mean per column and region in bold; on another model's average, * where the reference model is
    significantly better and † where it is significantly worse (paired Wilcoxon, p < alpha)."""
    codes, names = summary["combinations"], summary["channels"]
    several = len(summary.get("seeds", [""])) > 1
    lines = []
    for i, name in enumerate(names):
        head = "Region | Model" if i == 0 else " | "
        marks = " | ".join("●" if code[i] == "1" else "○" for code in codes)
        lines.append(f"| {head} | {name} | {marks} | {'Avg.' if i == 0 else ''} |")
        if i == 0:
            lines.append("|" + "---|" * (len(codes) + 4))
    for region in summary["regions"]:
        columns = codes + ["avg"]
        best = {c: max(summary["results"][m][region].get(c, {"dsc": -1})["dsc"] for m in summary["models"])
                for c in columns}
        for model in summary["models"]:
            entry = summary["results"][model][region]
            cells = []
            for c in columns:
                if c not in entry:
                    cells.append("–")
                    continue
                text = f"{100 * entry[c]['dsc']:.2f}" + (f" ± {100 * entry[c]['dsc_std']:.2f}" if several else "")
                test = summary["wilcoxon"].get(model, {}).get(region, {})
                if c == "avg" and test.get("p", 1.0) < alpha:
                    text += "*" if test["mean_difference"] > 0 else "†"
                cells.append(f"**{text}**" if np.isclose(entry[c]["dsc"], best[c]) else text)
            lines.append(f"| {region} | {model} |  | " + " | ".join(cells) + " |")
    if several:
        lines.append(f"\nDSC in %: mean ± standard deviation over {len(summary['seeds'])} independent trainings "
                     f"({', '.join(summary['seeds'])}); * paired Wilcoxon over cases (each case's DSC averaged over "
                     f"combinations and trainings), p < {alpha}: {summary['reference_model']} better (*) or worse (†).")
    return "\n".join(lines) + "\n"


def heatmap(summary: dict, path: str) -> None:
    """DSC per combination (rows) and region (columns), one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models, regions, codes = summary["models"], summary["regions"], summary["combinations"]
    names = summary["channels"]
    fig, axes = plt.subplots(1, len(models), figsize=(3 + 2.2 * len(models) * len(regions) / 3, 0.35 * len(codes) + 2),
                             squeeze=False)
    for ax, model in zip(axes[0], models):
        values = np.array([[summary["results"][model][r].get(c, {"dsc": np.nan})["dsc"] for r in regions]
                           for c in codes])
        ax.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(regions)), regions, rotation=30, ha="right")
        ax.set_yticks(range(len(codes)), [combination_name([b == "1" for b in c], names) for c in codes])
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", color="w" if v < 0.6 else "k", fontsize=7)
        ax.set_title(model, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate(models: Sequence[tuple[str, str]] | None, folds: int | str | Sequence[int | str], images_dir: str,
             labels_dir: str, out_dir: str, device: str = "cpu",
             convention: EmptyMaskConvention = EmptyMaskConvention(), checkpoint: str = "checkpoint_final.pth",
             use_mirroring: bool = True,
             combinations_per_batch: int | None = None, trainings: dict[str, Sequence[tuple[str, str]]] | None = None,
             et_min_voxels: int | None = None) -> dict:
    """``models`` is a list of (name, trained model folder); or ``trainings`` maps each independent
    training (seed) to its own such list, whose predictions go to ``predictions/<seed>/``. Several
    ``folds`` are ensembled. ``et_min_voxels`` (default off) adds the post-processed ET of the RFNet
    lineage's evaluation code beside the raw one (``nnunet_dsmm.postprocessing``). Writes results.csv,
    summary.json, summary.md and heatmap.png into ``out_dir``; returns the summary."""
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
    rows: list[dict] = []
    os.makedirs(out_dir, exist_ok=True)
    with tqdm(total=total, desc="Predicting cases × combinations") as progress:
        for seed, seed_models in trainings.items():
            for name, folder in seed_models:
                predictions = predict_combinations(folder, folds, images_dir,
                                                   os.path.join(out_dir, "predictions", seed), name, device,
                                                   checkpoint, progress, use_mirroring,
                                                   combinations_per_batch)
                rows += score_predictions(predictions, labels_dir, dataset_json, name, convention, seed, et_min_voxels)
    with open(os.path.join(out_dir, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = summarise(rows, dataset_json)
    summary["empty_mask_convention"] = asdict(convention)
    summary["folds"] = as_folds(folds)
    note = ""
    if et:
        summary["et_post_processing"] = {"region": et, "min_voxels": et_min_voxels,
                                         "post_processed_region": post_processed_name(et, et_min_voxels)}
        note = (f"\n{post_processed_name(et, et_min_voxels)}: {et} with a predicted {et} of fewer than {et_min_voxels} "
                f"voxels set to background (RFNet's evaluation convention); {et}: as predicted.\n")
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(table1_markdown(summary) + note)
    heatmap(summary, os.path.join(out_dir, "heatmap.png"))
    return summary
