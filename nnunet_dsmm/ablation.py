"""``nnunet_dsmm ablate``: the paper's ablations (Table 2, Table 3, Fig. 5) on a preprocessed dataset.

Every row is a registered trainer (its docstring cites the row). The rows of the chosen tables, the
earlier stages they build on and two baselines (nnU-Net + modality dropout, and the same trained as
long as stages 2 + 3) are trained with the stock ``nnUNetv2_train`` once per seed
(``experiment.train_seed``, finished trainings are kept), evaluated on every channel combination
(``evaluation.evaluate``) and written in the paper's layouts: per row the DSC of each region averaged
over the combinations (mean ± std over seeds) and the paired Wilcoxon over cases against the row
before it.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from nnunet_dsmm.errors import DSMMError
from nnunet_dsmm.evaluation import mean_and_std, paired_wilcoxon, seed_label
from nnunet_dsmm.experiment import (
    DONE,
    SCHEDULES,
    Training,
    describe,
    results_root,
    say,
    seed_steps,
    train_command,
    train_seed,
    trainings_for,
)


class AblationError(DSMMError, ValueError):
    """An ablation that cannot run as asked."""


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


TABLES = {
    "2": AblationTable("2", "Table 2: key components", ("DA", "PGMA", "CTD"), (
        AblationRow("Mask-Rec", "DSMMFinetuneMaskRecTrainer"),
        AblationRow("+ DA", "DSMMFinetuneDATrainer", ("DA",)),
        AblationRow("+ PGMA", "DSMMTrainerNoCTD", ("DA", "PGMA")),
        AblationRow("+ CTD", "DSMMTrainer", ("DA", "PGMA", "CTD")))),
    "3": AblationTable("3", "Table 3: complete-then-distill (without PGMA)", ("M_rec", "KD", "L_Mrec"), (
        AblationRow("(a)", "DSMMFinetuneDATrainer"),
        AblationRow("(b)", "DSMMTrainerAvailableKD", ("KD",)),
        AblationRow("(c)", "DSMMTrainerFrozenRecovery", ("M_rec", "KD")),
        AblationRow("(d)", "DSMMTrainerNoPGMA", ("M_rec", "KD", "L_Mrec")))),
    "fig5": AblationTable("fig5", "Fig. 5: prompt-guided modality adaptation (without CTD)", (), (
        AblationRow("baseline", "DSMMFinetuneDATrainer"),
        AblationRow("generated heads, no prompt (control, not in the paper)", "DSMMTrainerUnconditionedHeads"),
        AblationRow("binary code (2-layer MLP)", "DSMMTrainerBinaryCode"),
        AblationRow("text prompt (CLIP)", "DSMMTrainerNoCTD"))),
    "ctd": AblationTable("ctd", "Complete-then-distill study: readings of Eq. 4 / Eq. 7 against + PGMA", (), (
        AblationRow("+ PGMA (no CTD)", "DSMMTrainerNoCTD"),
        AblationRow("+ CTD, the paper's reading (β = 0.1, MSE at every level, T = stage 1)", "DSMMTrainer"),
        AblationRow("H1 bases: T = + PGMA model (shares S's initialisation)", "DSMMTrainerPGMATeacher"),
        AblationRow("H2 levels: KD on bottleneck and decoder only", "DSMMTrainerDeepKD"),
        AblationRow("H3 L_KD does not reach M_rec", "DSMMTrainerDetachedKD"),
        AblationRow("H4 β = 0.01", "DSMMTrainerBeta001")), reference="DSMMTrainerNoCTD"),
}
FULL_MODEL = "DSMMTrainer"
#: compared with the full model in every run: the plain baseline and the baseline given stages 2 + 3's epochs
BASELINES = (AblationRow("stage 1 alone (f/T, PGMA, from scratch)", "DSMMTeacherTrainer"),
             AblationRow("nnU-Net + modality dropout", "DSMMBaselineTrainer"),
             AblationRow("same, compute-matched (epochs of stages 2 + 3)", "DSMMBaselineComputeMatchedTrainer"),
             AblationRow("DSMMTrainer (full model)", FULL_MODEL))


#: what ``--table all`` runs: the paper's tables (the complete-then-distill study is asked for by name)
PAPER_TABLES = ("2", "3", "fig5")


def selected_tables(choice: str) -> list[AblationTable]:
    if choice == "all":
        return [TABLES[name] for name in PAPER_TABLES]
    if choice not in TABLES:
        raise AblationError(f"nnunet-dsmm: unknown table {choice!r}; choose one of {', '.join(TABLES)} or all")
    return [TABLES[choice]]


def evaluated_trainers(tables: Sequence[AblationTable]) -> list[str]:
    """The baselines and every row's trainer, each once, the full model last (the reference of the
    Table-1 summary in ``evaluation/``)."""
    names = list(dict.fromkeys([row.trainer for row in BASELINES] +
                               [row.trainer for table in tables for row in table.rows]))
    return sorted(names, key=lambda name: name == FULL_MODEL)


def _cell(values: dict, key: str) -> str:
    mean, std, seeds = values[key]["dsc"], values[key]["dsc_std"], values[key]["trainings"]
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if seeds > 1 else "")


def table_markdown(table: AblationTable, summary: dict, rows: Sequence[dict], alpha: float = 0.05) -> str:
    """The table in the paper's layout: ✓ columns, then per region and on average the DSC (%) over all
    combinations, and the paired Wilcoxon p of each row against the previous row (or the table's reference)."""
    regions = summary["regions"]
    against = "vs previous row (p)" if table.reference is None else f"vs {table.reference} (p)"
    head = ["Row", "Trainer", *table.columns, *regions, "Avg.", against]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    previous = None
    for row in table.rows:
        results = summary["results"][row.trainer]
        cells = [row.label, f"`{row.trainer}`", *["✓" if c in row.marks else "" for c in table.columns]]
        cells += [_cell(results[region], "avg") for region in regions]
        averages = _average_over_regions(summary, row.trainer)
        cells.append(f"{100 * averages[0]:.2f}" + (f" ± {100 * averages[1]:.2f}" if averages[2] > 1 else ""))
        reference = table.reference or previous
        cells.append(_comparison(rows, row.trainer, reference, regions, alpha)
                     if reference and reference != row.trainer else "")
        lines.append("| " + " | ".join(cells) + " |")
        previous = row.trainer
    return f"**{table.title}**\n\n" + "\n".join(lines) + "\n"


def _average_over_regions(summary: dict, trainer: str) -> tuple[float, float, int]:
    """Mean over regions of the per-region averages (mean ± std over seeds of that mean)."""
    per_seed = summary["avg_over_regions"][trainer]
    return (*mean_and_std(per_seed), len(per_seed))


def _comparison(rows: Sequence[dict], trainer: str, previous: str, regions: Sequence[str], alpha: float) -> str:
    """Per region: the p of this row against the previous one, ↑/↓ when p < alpha."""
    parts = []
    for region in regions:
        test = paired_wilcoxon(rows, trainer, previous, region)
        arrow = ("↑" if test["mean_difference"] > 0 else "↓") if test["p"] < alpha else ""
        parts.append(f"{test['p']:.2g}{arrow}")
    return " / ".join(parts)


def per_seed_average_over_regions(rows: Sequence[dict], trainer: str) -> list[float]:
    """For each training (seed): the DSC of ``trainer`` averaged over cases, combinations and regions."""
    seeds = sorted({r["seed"] for r in rows if r["model"] == trainer})
    return [float(np.mean([float(r["dsc"]) for r in rows if r["model"] == trainer and r["seed"] == s]))
            for s in seeds]


def figure5(table: AblationTable, summary: dict, path: str) -> None:
    """Bar chart of Fig. 5: average DSC per region and on average, one bar per row (std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [*summary["regions"], "Avg."]
    width = 0.8 / len(table.rows)
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(groups), 4.2))
    for i, row in enumerate(table.rows):
        results = summary["results"][row.trainer]
        means = [results[r]["avg"]["dsc"] for r in summary["regions"]]
        stds = [results[r]["avg"]["dsc_std"] for r in summary["regions"]]
        mean, std, _ = _average_over_regions(summary, row.trainer)
        positions = np.arange(len(groups)) + (i - (len(table.rows) - 1) / 2) * width
        ax.bar(positions, 100 * np.array([*means, mean]), width, yerr=100 * np.array([*stds, std]), label=row.label,
               capsize=2)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(f"DSC (%), mean over {len(summary['combinations'])} combinations")
    ax.set_title(table.title, fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report_plan(trainings: Sequence[Training], name: str, configuration: str, fold: str, plans: str, out_dir: str,
                seeds: int, iterations: int, env: dict, device: str, report: Callable[[str], None] = say) -> None:
    """What ``ablate`` would train, seed by seed (finished trainings are kept, interrupted ones continued),
    without training anything."""
    pending = 0
    for k in range(seeds):
        for step in seed_steps(trainings, name, configuration, fold, plans, env, out_dir, k)[0]:
            pending += 0 if step.action == DONE else step.epochs - (step.epoch or 0)
            report(f"seed {k}: " + describe(step, train_command(step, name, configuration, fold, plans, device), True))
    report(f"ablate --dry-run: {pending} epochs ({pending * iterations} training iterations) to run; nothing trained")


def run_ablation(dataset: str, configuration: str, fold: str, plans: str, table_choice: str, images: str,
                 labels: str, out_dir: str, device: str = "cuda", seeds: int = 1, budget: str = "cpu",
                 use_mirroring: bool = True, report: Callable[[str], None] = say, dry_run: bool = False) -> dict:
    """Train, evaluate and tabulate (see the module docstring); returns {table name: markdown}. With
    ``dry_run`` only report what would be trained (and return {})."""
    from nnunet_dsmm.evaluation import evaluate
    from nnunet_dsmm.locations import dataset_name, trained_model_folder

    if seeds < 1:
        raise AblationError(f"nnunet-dsmm: --seeds must be at least 1, got {seeds}")
    if budget not in SCHEDULES:
        raise AblationError(f"nnunet-dsmm: unknown budget {budget!r}; choose one of {', '.join(SCHEDULES)}")
    tables = selected_tables(table_choice)
    name = dataset_name(dataset)
    out_dir = os.path.abspath(out_dir)
    schedule = SCHEDULES[budget]
    trainers = evaluated_trainers(tables)
    trainings = trainings_for(trainers, schedule)
    report(f"ablate: {len(trainings)} trainings per seed ({', '.join(t.trainer for t in trainings)}), "
           f"{seeds} seed(s), schedule {budget} {asdict(schedule)}")
    env = {**os.environ, **schedule.environment()}
    if dry_run:
        report_plan(trainings, name, configuration, fold, plans, out_dir, seeds, schedule.iterations, env, device,
                    report)
        return {}
    logs = os.path.join(out_dir, "logs")
    for k in range(seeds):
        train_seed(trainings, name, configuration, fold, plans, device, env, out_dir, k, logs, report)
    report("ablate: evaluating every trained row on every channel combination ...")
    evaluation = os.path.join(out_dir, "evaluation")
    models = {seed_label(k): [(t, trained_model_folder(name, t, plans, configuration, fold, results_root(out_dir, k)))
                              for t in trainers] for k in range(seeds)}
    summary = evaluate(None, fold, images, labels, evaluation, device, use_mirroring=use_mirroring, trainings=models)
    with open(os.path.join(evaluation, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    summary["avg_over_regions"] = {t: per_seed_average_over_regions(rows, t) for t in trainers}
    written = {}
    for table in [*tables, AblationTable("baselines", "Baselines against the full model", (), BASELINES)]:
        written[table.name] = table_markdown(table, summary, rows)
        if table.name == "fig5":
            figure5(table, summary, os.path.join(out_dir, "fig5.png"))
    seeds_note = f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed"
    document = (f"# Ablations on {name} ({configuration}, fold {fold}, schedule {budget}, {seeds_note})\n\n"
                "DSC in % averaged over all channel combinations of the test cases; last column: paired Wilcoxon "
                "over cases (each case averaged over combinations and seeds) against the row above, per region, "
                "↑/↓ where p < 0.05.\n\n" + "\n".join(written.values()))
    with open(os.path.join(out_dir, "ablation.md"), "w") as f:
        f.write(document)
    with open(os.path.join(out_dir, "ablation.json"), "w") as f:
        json.dump({"schedule": asdict(schedule), "budget": budget, "seeds": seeds, "tables": written,
                   "summary": summary}, f, indent=2)
    return written
