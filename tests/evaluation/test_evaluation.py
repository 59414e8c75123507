"""Metrics, empty-mask conventions, the Table-1 layout and the summary statistics."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from nnunet_dsmm.evaluation import results
from nnunet_dsmm.evaluation.metrics import EmptyMaskConvention, dice_and_hd95, region_masks
from nnunet_dsmm.evaluation.reporting import (
    ablation_markdown,
    compared_rows,
    difference_heatmap,
    row_differences,
    table1_markdown,
)
from nnunet_dsmm.evaluation.results import CaseScore, summarise
from nnunet_dsmm.evaluation.tables import AblationRow, AblationTable
from nnunet_dsmm.model.modalities import all_combinations, combination_name

BRATS_JSON = {"channel_names": {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"},
              "labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]},
              "regions_class_order": [1, 2, 3], "file_ending": ".nii.gz"}


def cube(offset=(0, 0, 0), size=3, shape=(12, 12, 12)):
    mask = np.zeros(shape, dtype=bool)
    x, y, z = (2 + o for o in offset)
    mask[x:x + size, y:y + size, z:z + size] = True
    return mask


def test_hand_computable_case():
    # two 3x3x3 cubes shifted by 2 voxels along the last axis: overlap 3x3x1 = 9 voxels
    dsc, hd95 = dice_and_hd95(cube((0, 0, 2)), cube(), spacing=(1.0, 1.0, 1.0))
    assert dsc == pytest.approx(2 * 9 / (27 + 27))
    assert hd95 == pytest.approx(2.0)
    # the distance is in the units of the spacing of that axis
    assert dice_and_hd95(cube((0, 0, 2)), cube(), spacing=(1.0, 1.0, 2.5))[1] == pytest.approx(5.0)
    assert dice_and_hd95(cube(), cube(), spacing=(1, 1, 1)) == (pytest.approx(1.0), pytest.approx(0.0))


def test_empty_mask_conventions_default_to_brats_and_are_configurable():
    empty = np.zeros((12, 12, 12), dtype=bool)
    assert dice_and_hd95(empty, empty, (1, 1, 1)) == (1.0, 0.0)
    assert dice_and_hd95(cube(), empty, (1, 1, 1)) == (0.0, 373.13)
    assert dice_and_hd95(empty, cube(), (1, 1, 1)) == (0.0, 373.13)
    custom = EmptyMaskConvention(both_empty_dsc=float("nan"), both_empty_hd95=float("nan"), one_empty_hd95=100.0)
    assert np.isnan(dice_and_hd95(empty, empty, (1, 1, 1), custom)[0])
    assert dice_and_hd95(cube(), empty, (1, 1, 1), custom) == (0.0, 100.0)


def test_regions_from_dataset_json_and_labels_otherwise():
    seg = np.array([0, 1, 2, 3])
    masks = region_masks(seg, BRATS_JSON)
    assert {k: v.tolist() for k, v in masks.items()} == {
        "whole tumor": [False, True, True, True], "tumor core": [False, False, True, True],
        "enhancing tumor": [False, False, False, True]}
    plain = region_masks(seg, {"labels": {"background": 0, "liver": 1, "tumour": 2}})
    assert list(plain) == ["liver", "tumour"] and plain["tumour"].tolist() == [False, False, True, False]


def synthetic_rows(rng, seed: str = "") -> list[CaseScore]:
    rows = []
    names = ["FLAIR", "T1", "T1ce", "T2"]
    for model, shift in (("baseline", 0.0), ("ours", 0.1)):
        for case in range(8):
            for code in all_combinations(4):
                key = "".join("1" if c else "0" for c in code)
                for region in ("whole tumor", "tumor core", "enhancing tumor"):
                    rows.append(CaseScore(model, seed, f"c{case}", combination_name(code, names), key, region,
                                          0.5 + shift + rng.normal(0, 0.01), 10 - shift))
    return rows


def test_summary_and_paired_wilcoxon():
    summary = summarise(synthetic_rows(np.random.default_rng(0)), BRATS_JSON)
    assert summary.reference_model == "ours" and len(summary.combinations) == 15
    ours = summary.results["ours"]["whole tumor"].average.dsc
    base = summary.results["baseline"]["whole tumor"].average.dsc
    assert ours == pytest.approx(base + 0.1, abs=0.01)
    # 8 cases all better: the exact two-sided p of the signed-rank test is 2 / 2^8
    assert summary.wilcoxon["baseline"]["whole tumor"].p == pytest.approx(2 / 2**8)


def test_table1_layout():
    summary = summarise(synthetic_rows(np.random.default_rng(0)), BRATS_JSON)
    lines = table1_markdown(summary).strip().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:3] == ["Region", "Model", "FLAIR"] and header[-1] == "Avg."
    marks = [[cell.strip() for cell in line.strip("|").split("|")][3:18] for line in (lines[0], *lines[2:5])]
    codes = ["".join("1" if m == "●" else "0" for m in column) for column in zip(*marks)]
    assert tuple(codes) == summary.combinations
    assert [line.split("|")[2].strip() for line in lines[5:]] == ["baseline", "ours"] * 3
    ours_row, base_row = lines[6], lines[5]
    assert ours_row.count("**") == 2 * 16 and "**" not in base_row   # best per column in bold
    assert base_row.rstrip(" |").endswith("*")                        # significantly worse than the reference


def test_several_trainings_are_summarised_as_mean_and_std_over_seeds_and_tested_over_cases():
    rows = []
    for seed, offset in (("seed_0", 0.0), ("seed_1", 0.02), ("seed_2", 0.04)):
        for row in synthetic_rows(np.random.default_rng(len(rows)), seed):
            rows.append(replace(row, dsc=row.dsc + (offset if row.model == "ours" else -0.2)))
    summary = summarise(rows, BRATS_JSON)
    assert summary.seeds == ("seed_0", "seed_1", "seed_2")
    ours = summary.results["ours"]["tumor core"]
    # per training: 0.6 + offset (± noise of 0.01 / sqrt(8 cases)); over trainings: mean 0.62, sample std 0.02
    assert ours.average.dsc == pytest.approx(0.62, abs=0.005) and ours.average.dsc_std == pytest.approx(0.02,
                                                                                                        abs=0.005)
    assert ours.combinations["1111"].trainings == 3 and ours.combinations["1111"].n == 8
    test = summary.wilcoxon["baseline"]["tumor core"]
    assert test.n_cases == 8 and test.mean_difference == pytest.approx(0.2 + 0.1 + 0.02, abs=0.01)
    table = table1_markdown(summary)
    assert " ± " in table and "3 independent trainings" in table
    baseline_row = [line for line in table.splitlines() if "| tumor core | baseline |" in line][0]
    assert baseline_row.rstrip(" |").endswith("*")


def test_a_significantly_worse_reference_is_marked_with_a_dagger():
    rows = [replace(row, model={"ours": "baseline", "baseline": "ours"}[row.model])
            for row in synthetic_rows(np.random.default_rng(0))]
    summary = summarise(rows, BRATS_JSON, reference_model="ours")
    assert summary.wilcoxon["baseline"]["whole tumor"].mean_difference < 0
    baseline_row = [line for line in table1_markdown(summary).splitlines() if "| whole tumor | baseline |" in line][0]
    average = baseline_row.split("|")[-2].strip().strip("*")  # bold: the best average
    assert average.endswith("†") and "*" not in average


def test_a_saved_result_reads_back_the_same(tmp_path):
    rows = [replace(row, seed=seed) for seed in ("seed_0", "seed_1")
            for row in synthetic_rows(np.random.default_rng(int(seed[-1])))]
    summary = summarise(rows, BRATS_JSON, folds=(0, 1), empty_mask_convention=EmptyMaskConvention(one_empty_hd95=99.0),
                        et_post_processing=results.EtPostProcessing("enhancing tumor", 500, "post-processed ET"))
    results.save(summary, str(tmp_path))
    assert results.load(str(tmp_path)) == summary
    written = (tmp_path / "results.csv").read_text().splitlines()
    assert written[0] == "model,seed,case,combination,code,region,dsc,hd95" and len(written) == len(rows) + 1
    assert summary.average_over_regions("ours") == pytest.approx([0.6, 0.6], abs=0.01)


def test_each_row_is_drawn_against_the_row_above_per_combination_and_region(tmp_path):
    summary = summarise(synthetic_rows(np.random.default_rng(0)), BRATS_JSON)
    rows = (AblationRow("baseline", "baseline"), AblationRow("ours", "ours"))
    assert compared_rows(AblationTable("t", "t", (), rows)) == [("ours", "baseline")]
    assert compared_rows(AblationTable("t", "t", (), rows, reference="ours")) == [("baseline", "ours")]
    differences = row_differences(summary, "ours", "baseline")
    assert differences.shape == (15, 3)
    assert differences == pytest.approx(np.full((15, 3), 10.0), abs=2.0)  # 0.1 better, noise 0.01 per case
    path = tmp_path / "differences.png"
    difference_heatmap(AblationTable("t", "t", (), rows), summary, str(path))
    assert path.stat().st_size > 0


def test_an_ablation_table_tests_each_row_against_the_row_above_or_against_its_reference():
    summary = summarise(synthetic_rows(np.random.default_rng(0)), BRATS_JSON)
    rows = (AblationRow("(a)", "baseline", ("DA",)), AblationRow("(b)", "ours", ("DA", "CTD")))
    chained = ablation_markdown(AblationTable("t", "Chained", ("DA", "CTD"), rows), summary).splitlines()
    assert chained[0] == "**Chained**"
    assert chained[2] == "| Row | Trainer | DA | CTD | whole tumor | tumor core | enhancing tumor | Avg. | " \
                         "vs previous row (p) |"
    assert chained[4].startswith("| (a) | `baseline` | ✓ |  | ") and chained[4].endswith(" |  |")
    # 8 cases, all better: exact p = 2 / 2^8 per region, and better (↑)
    assert chained[5].startswith("| (b) | `ours` | ✓ | ✓ | ")
    assert chained[5].endswith(" | 0.0078↑ / 0.0078↑ / 0.0078↑ |")
    # the complete-then-distill study: every row against one reference row, worse (↓) than it
    study = ablation_markdown(AblationTable("ctd", "Study", ("DA", "CTD"), rows, reference="ours"), summary)
    assert "| vs ours (p) |" in study.splitlines()[2]
    assert study.splitlines()[4].endswith(" | 0.0078↓ / 0.0078↓ / 0.0078↓ |")
    assert study.splitlines()[5].endswith(" |  |")
