"""Modality sets: channel names, the 2^M - 1 combinations and their two orders, their prompts,
and the paper's rule for simulating missing modalities in a training set.

A combination (availability code) is one bool per channel in dataset.json order. Two orders of
the 2^M - 1 non-empty codes are used: the *display order* of tables and figures
(``all_combinations``: fewest channels first) and the *index order* of the prompt-embedding table
(``code_index``: the code read as a binary number, channel 0 the lowest bit, minus one).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

PROMPT_TEMPLATE = "The input MRI modalities are {}."


def channel_names(dataset_json: dict) -> list[str]:
    """Channel names in channel-index order, from dataset.json's ``channel_names``."""
    names = dataset_json.get("channel_names", dataset_json.get("modality"))
    return [names[str(i)] for i in range(len(names))]


def all_combinations(num_channels: int) -> list[tuple[bool, ...]]:
    """Every non-empty availability code, fewest channels first (2^M - 1 of them)."""
    codes = [code for code in itertools.product((False, True), repeat=num_channels) if any(code)]
    return sorted(codes, key=lambda code: (sum(code), [not c for c in code]))


def code_index(code):
    """Row of each (B, M) bool code in the index order: the code as a binary number minus 1 (a torch tensor)."""
    bits = code.long()
    return (bits * bits.new_tensor([1 << i for i in range(bits.shape[1])])).sum(dim=1) - 1


def code_from_index(index: int, num_channels: int) -> list[bool]:
    """The code in row ``index`` of the index order (inverse of ``code_index``)."""
    return [bool((index + 1) >> i & 1) for i in range(num_channels)]


def combination_name(code: Sequence[bool], names: Sequence[str]) -> str:
    """Short name of a combination, e.g. ``FLAIR+T1ce``."""
    return "+".join(name for name, present in zip(names, code) if present)


def prompt(code: Sequence[bool], names: Sequence[str]) -> str:
    """The textual prompt of Eq. 6 for one availability code."""
    present = [name for name, on in zip(names, code) if on]
    if not present:
        raise ValueError("a prompt needs at least one available modality")
    listed = present[0] if len(present) == 1 else ", ".join(present[:-1]) + " and " + present[-1]
    return PROMPT_TEMPLATE.format(listed)


def prompts_in_index_order(names: Sequence[str]) -> list[str]:
    """The prompt of every combination, row by row of the index order (the prompt-embedding table)."""
    return [prompt(code_from_index(i, len(names)), names) for i in range(2 ** len(names) - 1)]


def simulate_missing(case_names: Sequence[str], num_channels: int, fm_ratio: float,
                     rng: np.random.Generator, missing_rates: Sequence[float] | None = None) -> dict[str, list[int]]:
    """Which channels each training case loses. Returns the dropped channel indices per case.

    The paper's rule (``missing_rates`` None): a share ``fm_ratio`` of the cases keeps every
    modality, each other case loses 1 to 3 modalities (at most M - 1) chosen at random.
    Per-modality rates, as in clinical archives: channel ``c`` is missing from a share
    ``missing_rates[c]`` of the cases (cases drawn at random per channel); a case that would lose
    every channel keeps the one of lowest rate (ties: the first), so that share can end up a little lower.
    """
    if not 0.0 <= fm_ratio <= 1.0:
        raise ValueError(f"fm_ratio must lie in [0, 1], got {fm_ratio}")
    if missing_rates is not None:
        return _missing_by_rate(case_names, num_channels, missing_rates, rng)
    order = rng.permutation(len(case_names))
    num_full = int(round(fm_ratio * len(case_names)))
    max_drop = min(3, num_channels - 1)
    dropped: dict[str, list[int]] = {}
    for rank, index in enumerate(order):
        if rank < num_full or max_drop < 1:
            dropped[case_names[index]] = []
        else:
            k = int(rng.integers(1, max_drop + 1))
            dropped[case_names[index]] = sorted(int(c) for c in rng.choice(num_channels, k, replace=False))
    return {name: dropped[name] for name in case_names}


def _missing_by_rate(case_names: Sequence[str], num_channels: int, missing_rates: Sequence[float],
                     rng: np.random.Generator) -> dict[str, list[int]]:
    if len(missing_rates) != num_channels:
        raise ValueError(f"missing rates must give one value per channel ({num_channels}), got {len(missing_rates)}")
    if any(not 0.0 <= rate <= 1.0 for rate in missing_rates):
        raise ValueError(f"every missing rate must lie in [0, 1], got {list(missing_rates)}")
    missing = np.zeros((len(case_names), num_channels), dtype=bool)
    for channel, rate in enumerate(missing_rates):
        missing[rng.permutation(len(case_names))[:int(round(rate * len(case_names)))], channel] = True
    missing[missing.all(axis=1), int(np.argmin(missing_rates))] = False
    return {name: [int(c) for c in np.flatnonzero(row)] for name, row in zip(case_names, missing)}
