"""The layout of an ablation table: its rows (a label, the trainer that reproduces it, its ✓ marks) and
columns. Shared by ``reporting`` (which draws it) and ``experiments.ablation`` (which fills it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AblationRow:
    """One row: its label in the paper, the trainer that reproduces it and its ✓ columns."""

    label: str
    trainer: str
    marks: tuple[str, ...] = ()


@dataclass(frozen=True)
class AblationTable:
    name: str
    title: str
    #: the ✓ columns of the paper's table, in its order
    columns: tuple[str, ...]
    rows: tuple[AblationRow, ...]
    #: the trainer every row is tested against (paired Wilcoxon); None: the row above
    reference: str | None = None
    #: whether ``ablate`` also trains and reports the baselines beside this table's rows
    with_baselines: bool = True
