"""How much each modality matters: a model's Dice profile over the 15 combinations of available
modalities against the paper's Table 1 (BraTS 2018, 1 % full-modal, the mean of its six methods).

A profile maps region -> combination name (``FLAIR+T1ce``) -> DSC in %. Its comparison with Table 1
gives the Spearman rank correlation over the 45 cells and within each region, and the gaps that
make missing modalities matter on BraTS: the enhancing tumour's and the tumour core's Dice with
T1ce minus without it, and the whole tumour's with FLAIR minus without it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np

from nnunet_dsmm.evaluation.results import EvaluationResult
from nnunet_dsmm.model.modalities import combination_name

TABLE1_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "brats2018_table1.json")
REGIONS = ("whole tumor", "tumor core", "enhancing tumor")
#: the gaps reported, as (region, modality): Dice with the modality minus without it
GAPS = (("enhancing tumor", "T1ce"), ("tumor core", "T1ce"), ("whole tumor", "FLAIR"), ("whole tumor", "T1ce"))

Profile = dict[str, dict[str, float]]


def _combination_key(name: str) -> frozenset[str]:
    return frozenset(name.split("+"))


def table1() -> dict:
    """Table 1 as stored: its source and ``methods[method][region][combination]``."""
    with open(TABLE1_FILE) as f:
        return json.load(f)


def table1_profile() -> Profile:
    """The mean of Table 1's six methods per region and combination."""
    methods = table1()["methods"].values()
    return {region: {combination: float(np.mean([m[region][combination] for m in methods]))
                     for combination in next(iter(methods))[region]} for region in REGIONS}


def model_profile(result: EvaluationResult, model: str) -> Profile:
    """``model``'s DSC in % per region and combination (mean over its trainings) in an evaluation of
    BraTS regions; a ``KeyError`` naming the region when the evaluation has other labels."""
    def name(code: str) -> str:
        return combination_name([bit == "1" for bit in code], result.channels)

    return {region: {name(code): 100 * score.dsc for code, score in result.results[model][region].combinations.items()}
            for region in REGIONS}


def gap(profile: Profile, region: str, modality: str) -> float:
    """Mean DSC of the combinations with ``modality`` minus the mean of those without it."""
    cells = profile[region]
    with_it = [v for name, v in cells.items() if modality in _combination_key(name)]
    without = [v for name, v in cells.items() if modality not in _combination_key(name)]
    return float(np.mean(with_it) - np.mean(without))


@dataclass(frozen=True)
class ProfileComparison:
    """Spearman ρ against Table 1 over all 45 cells and per region, and the gaps of both profiles."""

    rho_all: float
    rho_per_region: dict[str, float]
    gaps: dict[str, float]
    table1_gaps: dict[str, float]

    def to_json(self) -> dict:
        return asdict(self)


def gap_name(region: str, modality: str) -> str:
    return f"{region}: {modality} gap"


def compare_with_table1(profile: Profile) -> ProfileComparison:
    from scipy.stats import spearmanr

    reference = table1_profile()

    def cells(p: Profile, regions) -> tuple[list[float], list[float]]:
        pairs = [(p[r][c], reference[r][k]) for r in regions for k in reference[r]
                 for c in p[r] if _combination_key(c) == _combination_key(k)]
        if len(pairs) != 15 * len(regions):
            raise ValueError("a profile needs all 15 combinations of FLAIR, T1, T1ce and T2 in every region")
        return [a for a, _ in pairs], [b for _, b in pairs]

    def rho(regions) -> float:
        ours, theirs = cells(profile, regions)
        return float(spearmanr(ours, theirs).statistic)

    return ProfileComparison(rho((*REGIONS,)), {r: rho((r,)) for r in REGIONS},
                             {gap_name(r, m): gap(profile, r, m) for r, m in GAPS},
                             {gap_name(r, m): gap(reference, r, m) for r, m in GAPS})
