"""The paper's Table 1 as data, and a profile's comparison with it (the phantom's realism check)."""

from __future__ import annotations

import pytest

from nnunet_dsmm.evaluation.brats_profile import REGIONS, compare_with_table1, gap, table1, table1_profile


def test_table1_holds_six_methods_on_15_combinations_with_the_papers_averages():
    methods = table1()["methods"]
    assert len(methods) == 6 and "Ours" in methods and "BraTS 2018" in table1()["source"]
    for method in methods.values():
        for region in REGIONS:
            assert len(method[region]) == 15
    # the paper's own averages (Table 1, "Avg." column of "Ours")
    assert sum(methods["Ours"]["enhancing tumor"].values()) / 15 == pytest.approx(60.16, abs=0.01)
    assert sum(methods["RFNet"]["whole tumor"].values()) / 15 == pytest.approx(83.79, abs=0.01)


def test_the_gaps_that_make_missing_modalities_matter_on_brats():
    reference = table1_profile()
    assert gap(reference, "enhancing tumor", "T1ce") == pytest.approx(34.1, abs=0.05)
    assert gap(reference, "tumor core", "T1ce") == pytest.approx(15.6, abs=0.05)
    assert gap(reference, "whole tumor", "FLAIR") == pytest.approx(8.3, abs=0.05)


def test_a_profile_is_ranked_against_table1():
    reference = table1_profile()
    same = compare_with_table1(reference)
    assert same.rho_all == pytest.approx(1) and all(r == pytest.approx(1) for r in same.rho_per_region.values())
    # written in another order of modality names, and reversed within each region
    reversed_profile = {region: {"+".join(reversed(name.split("+"))): -value for name, value in cells.items()}
                        for region, cells in reference.items()}
    reversed_comparison = compare_with_table1(reversed_profile)
    assert all(r == pytest.approx(-1) for r in reversed_comparison.rho_per_region.values())
    assert reversed_comparison.gaps["enhancing tumor: T1ce gap"] == pytest.approx(-34.1, abs=0.05)


def test_a_profile_without_every_combination_is_refused():
    partial = {region: dict(list(cells.items())[:14]) for region, cells in table1_profile().items()}
    with pytest.raises(ValueError, match="all 15 combinations"):
        compare_with_table1(partial)
