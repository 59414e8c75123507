"""Every table and figure of an evaluation, from its ``EvaluationResult``: the paper's Table 1
(``summary.md``), the DSC heatmap, the ablation tables, Fig. 5 and the per-combination differences
(``ablate``), the Fig.-4-style overlays (``demo``) and the recovery preview (``recover``).
All figures are drawn through ``figure``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from nnunet_dsmm.evaluation.metrics import region_masks
from nnunet_dsmm.evaluation.results import EvaluationResult, RegionSummary, Score, mean_and_std
from nnunet_dsmm.evaluation.tables import AblationTable
from nnunet_dsmm.model.modalities import combination_name

#: overlay colour per region (regions) or class (plain labels); "enhancing tumor" is both
REGION_COLOURS = {"whole tumor": (0.9, 0.1, 0.1), "tumor core": (0.1, 0.8, 0.1), "enhancing tumor": (0.6, 0.2, 0.8),
                  "oedema": (0.9, 0.1, 0.1), "necrosis": (0.1, 0.8, 0.1)}


@contextmanager
def figure(path: str, dpi: int, *grid: int, **options: Any) -> Iterator[tuple[Any, Any]]:
    """matplotlib's ``subplots(*grid, **options)`` without a display; on leaving, laid out, saved to
    ``path`` at ``dpi`` and closed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*grid, **options)
    try:
        yield fig, axes
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)


def _percent(mean: float, std: float, with_std: bool) -> str:
    """A DSC in %, with its std over trainings when asked."""
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if with_std else "")


def _column(summary: RegionSummary, column: str) -> Score | None:
    """The score of a combination code, or of the average (``"avg"``)."""
    return summary.average if column == "avg" else summary.combinations.get(column)


def table1_markdown(result: EvaluationResult, alpha: float = 0.05) -> str:
    """The paper's Table 1 layout: ●/○ per modality and combination, Avg., a row per model and
    region with DSC in % (mean ± std over independent trainings when there are several), the best
    mean per column and region in bold; on another model's average, * where the reference model is
    significantly better and † where it is significantly worse (paired Wilcoxon, p < alpha)."""
    codes, names = result.combinations, result.channels
    several = len(result.seeds) > 1
    lines = []
    for i, name in enumerate(names):
        head = "Region | Model" if i == 0 else " | "
        marks = " | ".join("●" if code[i] == "1" else "○" for code in codes)
        lines.append(f"| {head} | {name} | {marks} | {'Avg.' if i == 0 else ''} |")
        if i == 0:
            lines.append("|" + "---|" * (len(codes) + 4))
    for region in result.regions:
        columns = [*codes, "avg"]
        best = {c: max(getattr(_column(result.results[m][region], c), "dsc", -1) for m in result.models)
                for c in columns}
        for model in result.models:
            cells = []
            for c in columns:
                score = _column(result.results[model][region], c)
                if score is None:
                    cells.append("–")
                    continue
                text = _percent(score.dsc, score.dsc_std, several)
                test = result.wilcoxon.get(model, {}).get(region)
                if c == "avg" and test is not None and test.p < alpha:
                    text += "*" if test.mean_difference > 0 else "†"
                cells.append(f"**{text}**" if np.isclose(score.dsc, best[c]) else text)
            lines.append(f"| {region} | {model} |  | " + " | ".join(cells) + " |")
    if several:
        lines.append(f"\nDSC in %: mean ± standard deviation over {len(result.seeds)} independent trainings "
                     f"({', '.join(result.seeds)}); * paired Wilcoxon over cases (each case's DSC averaged over "
                     f"combinations and trainings), p < {alpha}: {result.reference_model} better (*) or worse (†).")
    return "\n".join(lines) + "\n"


def summary_markdown(result: EvaluationResult) -> str:
    """``summary.md``: Table 1, and what the post-processed ET region is when there is one."""
    et = result.et_post_processing
    note = "" if et is None else (
        f"\n{et.post_processed_region}: {et.region} with a predicted {et.region} of fewer than {et.min_voxels} "
        f"voxels set to background (RFNet's evaluation convention); {et.region}: as predicted.\n")
    return table1_markdown(result) + note


def heatmap(result: EvaluationResult, path: str) -> None:
    """DSC per combination (rows) and region (columns), one panel per model."""
    models, regions, codes = result.models, result.regions, result.combinations
    size = (3 + 2.2 * len(models) * len(regions) / 3, 0.35 * len(codes) + 2)
    with figure(path, 120, 1, len(models), figsize=size, squeeze=False) as (_, axes):
        for ax, model in zip(axes[0], models):
            values = np.array([[getattr(result.results[model][r].combinations.get(c), "dsc", np.nan) for r in regions]
                               for c in codes])
            ax.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
            ax.set_xticks(range(len(regions)), regions, rotation=30, ha="right")
            ax.set_yticks(range(len(codes)), [combination_name([b == "1" for b in c], result.channels) for c in codes])
            for (i, j), v in np.ndenumerate(values):
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", color="w" if v < 0.6 else "k", fontsize=7)
            ax.set_title(model, fontsize=9)


def _average_over_regions(result: EvaluationResult, trainer: str) -> tuple[float, float, int]:
    """Mean over regions of the per-region averages (mean ± std over seeds of that mean)."""
    per_seed = result.average_over_regions(trainer)
    return (*mean_and_std(per_seed), len(per_seed))


def _comparison(result: EvaluationResult, trainer: str, previous: str, alpha: float) -> str:
    """Per region: the p of this row against the previous one, ↑/↓ when p < alpha."""
    parts = []
    for region in result.regions:
        test = result.compare(trainer, previous, region)
        arrow = ("↑" if test.mean_difference > 0 else "↓") if test.p < alpha else ""
        parts.append(f"{test.p:.2g}{arrow}")
    return " / ".join(parts)


def ablation_markdown(table: AblationTable, result: EvaluationResult, alpha: float = 0.05) -> str:
    """An ablation table in the paper's layout: ✓ columns, then per region and on average the DSC (%) over
    all combinations, and the paired Wilcoxon p of each row against the previous row (or the table's reference)."""
    against = "vs previous row (p)" if table.reference is None else f"vs {table.reference} (p)"
    head = ["Row", "Trainer", *table.columns, *result.regions, "Avg.", against]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    previous = None
    for row in table.rows:
        averages = [result.results[row.trainer][region].average for region in result.regions]
        mean, std, seeds = _average_over_regions(result, row.trainer)
        cells = [row.label, f"`{row.trainer}`", *["✓" if c in row.marks else "" for c in table.columns],
                 *[_percent(a.dsc, a.dsc_std, a.trainings > 1) for a in averages], _percent(mean, std, seeds > 1)]
        reference = table.reference or previous
        cells.append(_comparison(result, row.trainer, reference, alpha) if reference and reference != row.trainer
                     else "")
        lines.append("| " + " | ".join(cells) + " |")
        previous = row.trainer
    return f"**{table.title}**\n\n" + "\n".join(lines) + "\n"


def per_fold_markdown(rows: Sequence[tuple[str, str]], per_fold: dict[int | str, EvaluationResult],
                      ensemble: EvaluationResult) -> str:
    """Avg. DSC (%) of each fold's model alone, their mean ± std over folds, and the folds' ensemble (what
    the tables report), one line per (label, trainer) of ``rows``."""
    folds = list(per_fold)
    head = ["Row", "Trainer", *[f"fold {f}" for f in folds], "mean ± std over folds",
            f"ensemble of folds {', '.join(map(str, folds))}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, trainer in rows:
        by_fold = [_average_over_regions(per_fold[f], trainer)[0] for f in folds]
        mean, std, _ = _average_over_regions(ensemble, trainer)
        lines.append("| " + " | ".join([label, f"`{trainer}`", *[_percent(a, 0, False) for a in by_fold],
                                        _percent(*mean_and_std(by_fold), True), _percent(mean, std, False)]) + " |")
    return ("**Per fold: each fold's model alone and the ensemble of the folds**\n\n"
            "Avg. DSC (%) over regions and combinations of the test cases (mean over seeds); the tables above "
            "evaluate the ensemble, as `nnUNetv2_predict -f` does.\n\n" + "\n".join(lines) + "\n")


def figure5(table: AblationTable, result: EvaluationResult, path: str) -> None:
    """Bar chart of Fig. 5: average DSC per region and on average, one bar per row (std over seeds)."""
    groups = [*result.regions, "Avg."]
    width = 0.8 / len(table.rows)
    with figure(path, 120, figsize=(2 + 1.6 * len(groups), 4.2)) as (_, ax):
        for i, row in enumerate(table.rows):
            averages = [result.results[row.trainer][r].average for r in result.regions]
            mean, std, _ = _average_over_regions(result, row.trainer)
            positions = np.arange(len(groups)) + (i - (len(table.rows) - 1) / 2) * width
            ax.bar(positions, 100 * np.array([*[a.dsc for a in averages], mean]), width,
                   yerr=100 * np.array([*[a.dsc_std for a in averages], std]), label=row.label, capsize=2)
        ax.set_xticks(range(len(groups)), groups)
        ax.set_ylabel(f"DSC (%), mean over {len(result.combinations)} combinations")
        ax.set_title(table.title, fontsize=9)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)


def compared_rows(table: AblationTable) -> list[tuple[str, str]]:
    """(trainer, the trainer it is compared with) for every row after the first: the row above, or the
    table's reference."""
    pairs, previous = [], None
    for row in table.rows:
        reference = table.reference or previous
        if reference and reference != row.trainer:
            pairs.append((row.trainer, reference))
        previous = row.trainer
    return pairs


def row_differences(result: EvaluationResult, trainer: str, reference: str) -> np.ndarray:
    """DSC of ``trainer`` minus that of ``reference`` in points, shape (combinations, regions)."""
    return np.array([[100 * (result.results[trainer][r].combinations[c].dsc -
                             result.results[reference][r].combinations[c].dsc) for r in result.regions]
                     for c in result.combinations])


def difference_heatmap(table: AblationTable, result: EvaluationResult, path: str) -> None:
    """Where a row helps: its DSC minus that of the row it is compared with (``compared_rows``), in points,
    per combination (rows) and region (columns), one panel per row; red where it gains, blue where it loses."""
    pairs, regions, codes = compared_rows(table), result.regions, result.combinations
    panels = [(f"{trainer}\nminus {reference}", row_differences(result, trainer, reference))
              for trainer, reference in pairs]
    limit = max([1.0, *(float(np.nanmax(np.abs(values))) for _, values in panels)])
    size = (2.5 + 2.6 * len(pairs) * len(regions) / 3, 0.35 * len(codes) + 2)
    with figure(path, 120, 1, len(pairs), figsize=size, squeeze=False) as (_, axes):
        for ax, (title, values) in zip(axes[0], panels):
            ax.imshow(values, vmin=-limit, vmax=limit, cmap="RdBu_r", aspect="auto")
            ax.set_xticks(range(len(regions)), regions, rotation=30, ha="right")
            ax.set_yticks(range(len(codes)), [combination_name([b == "1" for b in c], result.channels) for c in codes])
            for (i, j), v in np.ndenumerate(values):
                ax.text(j, i, f"{v:+.0f}", ha="center", va="center", fontsize=7)
            ax.set_title(title, fontsize=8)


def draw_overlays(image_file: str, label_file: str, predictions: dict[str, dict[str, str]], dataset_json: dict,
                  out_dir: str) -> list[str]:
    """One PNG per combination: FLAIR slice with the reference and each model's WT/TC/ET."""
    import SimpleITK as sitk

    background = sitk.GetArrayFromImage(sitk.ReadImage(image_file))
    label = sitk.GetArrayFromImage(sitk.ReadImage(label_file))
    z = int(np.argmax((label > 0).sum(axis=(1, 2))))
    os.makedirs(out_dir, exist_ok=True)
    legend = "red WT, green TC, purple ET" if "regions_class_order" in dataset_json else \
        "red oedema, green necrosis, purple enhancing"
    written = []
    for index, combination in enumerate(next(iter(predictions.values()))):
        panels = [("reference", label)] + [(model, sitk.GetArrayFromImage(sitk.ReadImage(paths[combination])))
                                           for model, paths in predictions.items()]
        path = os.path.join(out_dir, f"{index:02d}_{combination}.png")
        with figure(path, 100, 1, len(panels), figsize=(3 * len(panels), 3.2)) as (fig, axes):
            for ax, (title, seg) in zip(axes, panels):
                ax.imshow(background[z], cmap="gray")
                overlay = np.zeros((*seg.shape[1:], 4))
                for region, mask in region_masks(seg[z], dataset_json).items():
                    overlay[mask] = (*REGION_COLOURS.get(region, (1, 1, 0)), 0.55)
                ax.imshow(overlay)
                ax.set_title(title, fontsize=8)
                ax.axis("off")
            fig.suptitle(f"input: {combination}  ({legend})", fontsize=9)
        written.append(path)
    return written


def draw_case(image_files: Sequence[str], label_file: str, dataset_json: dict, path: str) -> None:
    """A case's channels side by side with its reference labels, at the slice with the most tumour."""
    import SimpleITK as sitk

    images = [sitk.GetArrayFromImage(sitk.ReadImage(f)) for f in image_files]
    label = sitk.GetArrayFromImage(sitk.ReadImage(label_file))
    z = int(np.argmax((label > 0).sum(axis=(1, 2))))
    names = [dataset_json["channel_names"][str(c)] for c in range(len(images))]
    with figure(path, 100, 1, len(images) + 1, figsize=(2.6 * (len(images) + 1), 2.9)) as (_, axes):
        for ax, name, image in zip(axes, names, images):
            ax.imshow(image[z], cmap="gray")
            ax.set_title(name, fontsize=9)
        axes[-1].imshow(images[0][z], cmap="gray")
        overlay = np.zeros((*label.shape[1:], 4))
        for region, mask in region_masks(label[z], dataset_json).items():
            overlay[mask] = (*REGION_COLOURS.get(region, (1, 1, 0)), 0.6)
        axes[-1].imshow(overlay)
        axes[-1].set_title("reference labels", fontsize=9)
        for ax in axes:
            ax.axis("off")


def recovery_preview(path: str, names: Sequence[str], inputs: np.ndarray, available: Sequence[bool],
                     recovered: dict[int, np.ndarray], truth: dict[int, np.ndarray]) -> None:
    """Three axial slices of each input channel, each recovered one and (where hidden) its real image."""
    columns = [(f"{names[c]} (input)", inputs[c]) for c in range(len(names)) if available[c]]
    for c, volume in recovered.items():
        columns.append((f"{names[c]} (recovered)", volume))
        if c in truth:
            columns.append((f"{names[c]} (hidden real)", truth[c]))
    slices = [int(f * inputs.shape[1]) for f in (0.35, 0.5, 0.65)]
    with figure(path, 100, len(slices), len(columns), figsize=(2.2 * len(columns), 2.2 * len(slices)),
                squeeze=False) as (_, axes):
        for j, (title, volume) in enumerate(columns):
            low, high = np.percentile(volume[volume != 0], (1, 99)) if np.any(volume) else (0, 1)
            for i, z in enumerate(slices):
                axes[i][j].imshow(volume[z], cmap="gray", vmin=low, vmax=high)
                axes[i][j].axis("off")
            axes[0][j].set_title(title, fontsize=8)
