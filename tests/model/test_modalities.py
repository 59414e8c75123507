"""Modality combinations, prompts, the FM-ratio rule, and modality dropout."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from nnunet_dsmm.model.masking import apply_channel_mask, modality_dropout
from nnunet_dsmm.model.modalities import (
    all_combinations,
    channel_names,
    code_from_index,
    code_index,
    prompt,
    prompts_in_index_order,
    simulate_missing,
)


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_all_non_empty_combinations(m):
    codes = all_combinations(m)
    assert len(codes) == 2**m - 1 == len(set(codes))
    assert all(any(c) and len(c) == m for c in codes)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_the_index_order_enumerates_every_combination_of_the_display_order_once(m):
    codes = torch.tensor(all_combinations(m))
    assert sorted(code_index(codes).tolist()) == list(range(2**m - 1))
    assert all(code_from_index(int(i), m) == c.tolist() for i, c in zip(code_index(codes), codes))
    names = [f"M{i}" for i in range(m)]
    table = prompts_in_index_order(names)
    assert [table[int(i)] for i in code_index(codes)] == [prompt(c.tolist(), names) for c in codes]


@pytest.mark.parametrize("names", [["FLAIR", "T1", "T1ce", "T2"], ["CT", "PET", "MR"], ["a b", "c"]])
def test_prompts_are_distinct_and_name_the_present_modalities(names):
    dataset_json = {"channel_names": {str(i): n for i, n in enumerate(names)}}
    assert channel_names(dataset_json) == names
    prompts = [prompt(code, names) for code in all_combinations(len(names))]
    assert len(set(prompts)) == 2 ** len(names) - 1
    assert prompt([True] + [False] * (len(names) - 1), names) == f"The input MRI modalities are {names[0]}."
    assert prompt([True] * len(names), names).endswith(f" and {names[-1]}.")


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.5, 1.0])
def test_simulate_missing_follows_the_papers_rule(ratio):
    cases = [f"c{i}" for i in range(40)]
    dropped = simulate_missing(cases, 4, ratio, np.random.default_rng(1))
    assert sum(1 for d in dropped.values() if not d) == round(ratio * 40)
    assert all(len(d) in (1, 2, 3) for d in dropped.values() if d)
    assert dropped == simulate_missing(cases, 4, ratio, np.random.default_rng(1))


def test_modality_dropout_invariants_and_distribution():
    available = torch.tensor([[True, True, True, True], [True, False, True, False], [False, False, False, True]])
    generator = torch.Generator().manual_seed(0)
    seen = [Counter() for _ in range(3)]
    for _ in range(3000):
        keep = modality_dropout(available, generator)
        assert keep.any(dim=1).all(), "never drops every channel"
        assert not (keep & ~available).any(), "never restores a missing channel"
        for row in range(3):
            seen[row][tuple(keep[row].tolist())] += 1
    assert len(seen[0]) == 15 and len(seen[1]) == 3 and len(seen[2]) == 1
    # uniform over the non-empty subsets of the available channels
    assert min(seen[0].values()) > 3000 / 15 * 0.7 and max(seen[0].values()) < 3000 / 15 * 1.3
    assert min(seen[1].values()) > 3000 / 3 * 0.85


def test_modality_dropout_rejects_an_empty_sample():
    with pytest.raises(ValueError):
        modality_dropout(torch.tensor([[True, False], [False, False]]))


def test_apply_channel_mask_zeroes_exactly_the_dropped_channels():
    data = torch.ones(2, 3, 4, 4, 4)
    out = apply_channel_mask(data, torch.tensor([[True, False, True], [False, False, True]]))
    assert out[0, 1].abs().sum() == 0 and out[1, :2].abs().sum() == 0
    assert torch.equal(out[0, 0], data[0, 0]) and torch.equal(out[1, 2], data[1, 2])
