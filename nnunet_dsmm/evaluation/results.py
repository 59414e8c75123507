"""What an evaluation measured: per-case scores, their summary per model, region and channel
combination (mean over cases of each independent training, then mean ± std over the trainings), and
the paired Wilcoxon comparisons. ``evaluate`` returns an ``EvaluationResult``; ``save`` writes it as
``results.csv`` (one row per case × combination × region) and ``summary.json``, ``load`` reads it back.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from nnunet_dsmm.evaluation.metrics import EmptyMaskConvention
from nnunet_dsmm.evaluation.prediction import code_string
from nnunet_dsmm.model.modalities import all_combinations, channel_names

RESULTS_CSV, SUMMARY_JSON = "results.csv", "summary.json"


@dataclass(frozen=True)
class CaseScore:
    """One case of one model (of one training, ``seed``; "" if one) under one combination, in one region."""

    model: str
    seed: str
    case: str
    combination: str
    code: str
    region: str
    dsc: float
    hd95: float


@dataclass(frozen=True)
class Score:
    """DSC and HD95: the mean over cases of each training, then mean and sample std over ``trainings``;
    ``n``: cases per training (None for the average over combinations)."""

    dsc: float
    dsc_std: float
    hd95: float
    hd95_std: float
    trainings: int
    n: int | None = None

    def to_json(self) -> dict:
        values = {"dsc": self.dsc, "dsc_std": self.dsc_std, "hd95": self.hd95, "hd95_std": self.hd95_std}
        return {**values, **({} if self.n is None else {"n": self.n}), "trainings": self.trainings}


@dataclass(frozen=True)
class RegionSummary:
    """A model's scores on a region: per combination code it was evaluated on, and ``average`` over them."""

    combinations: dict[str, Score]
    average: Score

    def to_json(self) -> dict:
        return {**{code: score.to_json() for code, score in self.combinations.items()}, "avg": self.average.to_json()}


@dataclass(frozen=True)
class Comparison:
    """Paired Wilcoxon signed-rank test over cases (each case's DSC averaged over combinations and
    trainings): p, number of cases, mean difference of the first model minus the second."""

    p: float
    n_cases: int
    mean_difference: float


@dataclass(frozen=True)
class EtPostProcessing:
    """The enhancing-tumour region scored also post-processed, its threshold and the added region's name."""

    region: str
    min_voxels: int
    post_processed_region: str


@dataclass(frozen=True)
class EvaluationResult:
    """Everything an evaluation measured; ``wilcoxon[model][region]`` compares ``reference_model`` with ``model``."""

    channels: tuple[str, ...]
    combinations: tuple[str, ...]
    models: tuple[str, ...]
    regions: tuple[str, ...]
    seeds: tuple[str, ...]
    reference_model: str
    results: dict[str, dict[str, RegionSummary]]
    wilcoxon: dict[str, dict[str, Comparison]]
    rows: tuple[CaseScore, ...]
    empty_mask_convention: EmptyMaskConvention = EmptyMaskConvention()
    folds: tuple[int | str, ...] = (0,)
    et_post_processing: EtPostProcessing | None = None

    def compare(self, model: str, other: str, region: str) -> Comparison:
        """``model`` against ``other`` on ``region`` (see ``Comparison``)."""
        return paired_wilcoxon(self.rows, model, other, region)

    def average_over_regions(self, model: str) -> list[float]:
        """Per training (seeds in sorted order): ``model``'s DSC averaged over cases, combinations and regions."""
        seeds = sorted({r.seed for r in self.rows if r.model == model})
        return [float(np.mean([r.dsc for r in self.rows if r.model == model and r.seed == s])) for s in seeds]

    def to_json(self) -> dict:
        """The summary as written to ``summary.json`` (without the per-case rows)."""
        summary = {"channels": list(self.channels), "combinations": list(self.combinations),
                   "models": list(self.models), "regions": list(self.regions), "seeds": list(self.seeds),
                   "reference_model": self.reference_model,
                   "results": {m: {r: s.to_json() for r, s in by_region.items()} for m, by_region in
                               self.results.items()},
                   "wilcoxon": {m: {r: asdict(c) for r, c in by_region.items()} for m, by_region in
                                self.wilcoxon.items()},
                   "empty_mask_convention": asdict(self.empty_mask_convention), "folds": list(self.folds)}
        if self.et_post_processing is not None:
            summary["et_post_processing"] = asdict(self.et_post_processing)
        return summary


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def per_case_dsc(rows: Sequence[CaseScore], model: str, region: str) -> dict[str, float]:
    """Case -> DSC of ``model`` on ``region`` averaged over combinations and independent trainings."""
    by_case: dict[str, list[float]] = {}
    for r in rows:
        if r.model == model and r.region == region:
            by_case.setdefault(r.case, []).append(r.dsc)
    return {c: float(np.mean(by_case[c])) for c in sorted(by_case)}


def paired_wilcoxon(rows: Sequence[CaseScore], model: str, other: str, region: str) -> Comparison:
    """Paired Wilcoxon signed-rank test over cases of ``model`` against ``other`` on ``region``."""
    from scipy.stats import wilcoxon

    ours, theirs = per_case_dsc(rows, model, region), per_case_dsc(rows, other, region)
    common = sorted(set(ours) & set(theirs))
    differences = [ours[c] - theirs[c] for c in common]
    p = float(wilcoxon(differences).pvalue) if any(d != 0 for d in differences) else 1.0
    return Comparison(p, len(common), float(np.mean(differences)))


def _region_summary(by_seed: dict[str, dict[str, list[CaseScore]]], codes: Sequence[str]) -> RegionSummary:
    """``by_seed``: seed -> code -> that training's rows of one model and region."""
    means = {seed: {code: (np.mean([r.dsc for r in by_code[code]]), np.mean([r.hd95 for r in by_code[code]]),
                           len(by_code[code])) for code in codes if code in by_code}
             for seed, by_code in by_seed.items()}
    combinations = {}
    for code in codes:
        trainings = [by_code[code] for by_code in means.values() if code in by_code]
        if trainings:
            dsc, dsc_std = mean_and_std([t[0] for t in trainings])
            hd95, hd95_std = mean_and_std([t[1] for t in trainings])
            combinations[code] = Score(dsc, dsc_std, hd95, hd95_std, len(trainings), trainings[0][2])
    averages = [(np.mean([m[0] for m in by_code.values()]), np.mean([m[1] for m in by_code.values()]))
                for by_code in means.values()]
    dsc, dsc_std = mean_and_std([a[0] for a in averages])
    hd95, hd95_std = mean_and_std([a[1] for a in averages])
    return RegionSummary(combinations, Score(dsc, dsc_std, hd95, hd95_std, len(averages)))


def summarise(rows: Sequence[CaseScore], dataset_json: dict, reference_model: str | None = None,
              **settings) -> EvaluationResult:
    """Per model, region and combination (and on average over combinations): DSC and HD95 as the mean
    over cases of each independent training (``seed`` of the rows), then mean and standard deviation
    over the trainings (0 with one). Paired Wilcoxon signed-rank tests of every model against
    ``reference_model`` (default: the last model). ``settings``: the remaining fields of the result
    (``empty_mask_convention``, ``folds``, ``et_post_processing``)."""
    codes = tuple(code_string(c) for c in all_combinations(len(channel_names(dataset_json))))
    models = tuple(dict.fromkeys(r.model for r in rows))
    regions = tuple(dict.fromkeys(r.region for r in rows))
    seeds = tuple(dict.fromkeys(r.seed for r in rows))
    reference_model = reference_model or models[-1]
    grouped: dict[tuple[str, str], dict[str, dict[str, list[CaseScore]]]] = {}  # (model, region) -> seed -> code
    for r in rows:
        grouped.setdefault((r.model, r.region), {}).setdefault(r.seed, {}).setdefault(r.code, []).append(r)
    results = {m: {region: _region_summary({s: grouped[m, region][s] for s in seeds if s in grouped[m, region]},
                                           codes) for region in regions} for m in models}
    wilcoxon = {m: {region: paired_wilcoxon(rows, reference_model, m, region) for region in regions}
                for m in models if m != reference_model}
    return EvaluationResult(tuple(channel_names(dataset_json)), codes, models, regions, seeds, reference_model,
                            results, wilcoxon, tuple(rows), **settings)


def save(result: EvaluationResult, folder: str) -> None:
    """``results.csv`` (the rows) and ``summary.json`` (the rest) into ``folder``."""
    with open(os.path.join(folder, RESULTS_CSV), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[field.name for field in fields(CaseScore)])
        writer.writeheader()
        writer.writerows(asdict(row) for row in result.rows)
    with open(os.path.join(folder, SUMMARY_JSON), "w") as f:
        json.dump(result.to_json(), f, indent=2)


def load(folder: str) -> EvaluationResult:
    """The result that ``save`` wrote into ``folder``."""
    with open(os.path.join(folder, RESULTS_CSV)) as f:
        rows = tuple(CaseScore(**{**row, "dsc": float(row["dsc"]), "hd95": float(row["hd95"])})
                     for row in csv.DictReader(f))
    with open(os.path.join(folder, SUMMARY_JSON)) as f:
        summary = json.load(f)

    def region(entry: dict) -> RegionSummary:
        return RegionSummary({code: Score(**score) for code, score in entry.items() if code != "avg"},
                             Score(**entry["avg"]))

    et = summary.get("et_post_processing")
    return EvaluationResult(
        *(tuple(summary[key]) for key in ("channels", "combinations", "models", "regions", "seeds")),
        summary["reference_model"],
        {m: {r: region(entry) for r, entry in by_region.items()} for m, by_region in summary["results"].items()},
        {m: {r: Comparison(**test) for r, test in by_region.items()} for m, by_region in summary["wilcoxon"].items()},
        rows, EmptyMaskConvention(**summary["empty_mask_convention"]), tuple(summary["folds"]),
        None if et is None else EtPostProcessing(**et))
