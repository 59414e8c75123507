"""``nnunet_dsmm ablate``: the paper's ablations (Table 2, Table 3, Fig. 5) on a preprocessed dataset.

Every row is a registered trainer (its docstring cites the row). The rows of the chosen tables, the
earlier stages they build on and two baselines (nnU-Net + modality dropout, and the same trained as
long as stages 2 + 3) are trained with the stock ``nnUNetv2_train`` once per seed and fold (one plan,
``plan``, run here or on SLURM by ``executors``; finished trainings are kept), evaluated on every
channel combination (``nnunet_dsmm.evaluation.evaluate``) and written in the paper's layouts: per row
the DSC of each region averaged over the combinations (mean ± std over seeds) and the paired Wilcoxon
over cases against the row before it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict

from nnunet_dsmm.errors import DSMMError
from nnunet_dsmm.evaluation.evaluate import seed_label
from nnunet_dsmm.evaluation.reporting import (
    ablation_markdown,
    compared_rows,
    difference_heatmap,
    figure5,
    per_fold_markdown,
)
from nnunet_dsmm.evaluation.results import EvaluationResult
from nnunet_dsmm.evaluation.tables import AblationRow, AblationTable
from nnunet_dsmm.experiments.executors import dry_run as dry_run_lines
from nnunet_dsmm.experiments.executors import run_plan
from nnunet_dsmm.experiments.experiment import STUDY_ENVIRONMENT, results_root, say, trainings_for
from nnunet_dsmm.experiments.plan import build_plan, seed_log
from nnunet_dsmm.experiments.request import AblationRequest
from nnunet_dsmm.trainers.schedules import SCHEDULES


class AblationError(DSMMError, ValueError):
    """An ablation that cannot run as asked."""


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
        AblationRow("H1 scale: KD on features standardised per channel", "DSMMTrainerStandardizedKD"),
        AblationRow("H1 basis: KD through a learnable 1×1 adaptor per level", "DSMMTrainerAdaptedKD"),
        AblationRow("H1 beyond the paper: the student on x̂_full is its own teacher", "DSMMTrainerSelfKD"),
        AblationRow("H2 levels: KD on bottleneck and decoder only", "DSMMTrainerDeepKD"),
        AblationRow("H3 L_KD does not reach M_rec", "DSMMTrainerDetachedKD"),
        AblationRow("H4 β = 0.01", "DSMMTrainerBeta001"),
        AblationRow("H4 β = 0.03", "DSMMTrainerBeta003"),
        AblationRow("H4 β = 0.3", "DSMMTrainerBeta03"),
        AblationRow("H8 batch size: + PGMA at the plan's batch size", "DSMMTrainerNoCTDPlanBatch"),
        AblationRow("H8 batch size: + CTD at the plan's batch size", "DSMMTrainerPlanBatch"),
        AblationRow("H8 batch size: stage 1 alone at batch size 1", "DSMMTeacherTrainerBatch1")),
        reference="DSMMTrainerNoCTD"),
    "decisive": AblationTable("decisive", "Which trainer: each stage of the method against the row above, and the "
                              "bound on completion", (), (
        AblationRow("nnU-Net + modality dropout", "DSMMBaselineTrainer"),
        AblationRow("stage 1 alone: + PGMA from scratch (DSMMSingleStageTrainer)", "DSMMTeacherTrainer"),
        AblationRow("+ DA pre-training, + PGMA (no CTD)", "DSMMTrainerNoCTD"),
        AblationRow("+ CTD (the full model)", "DSMMTrainer"),
        AblationRow("+ CTD, oracle teacher: T sees the true complete case", "DSMMTrainerOracleTeacher")),
        with_baselines=False),
}
FULL_MODEL = "DSMMTrainer"
#: compared with the full model in every run: the plain baseline and the baseline given stages 2 + 3's epochs
BASELINES = (AblationRow("stage 1 alone (f/T, PGMA, from scratch)", "DSMMTeacherTrainer"),
             AblationRow("nnU-Net + modality dropout", "DSMMBaselineTrainer"),
             AblationRow("same, epoch-matched (epochs of stages 2 + 3)", "DSMMBaselineEpochMatchedTrainer"),
             AblationRow("DSMMTrainer (full model)", FULL_MODEL))


#: what ``--table all`` runs: the paper's tables (the complete-then-distill study is asked for by name)
PAPER_TABLES = ("2", "3", "fig5")


def selected_tables(choice: str) -> list[AblationTable]:
    if choice == "all":
        return [TABLES[name] for name in PAPER_TABLES]
    if choice not in TABLES:
        raise AblationError(f"nnunet-dsmm: unknown table {choice!r}; choose one of {', '.join(TABLES)} or all")
    return [TABLES[choice]]


def baselines(tables: Sequence[AblationTable]) -> tuple[AblationRow, ...]:
    """The baselines trained beside ``tables``: none when no table asks for them."""
    return BASELINES if any(table.with_baselines for table in tables) else ()


def evaluated_trainers(tables: Sequence[AblationTable]) -> list[str]:
    """The baselines and every row's trainer, each once, the full model last (the reference of the
    Table-1 summary in ``evaluation/``'s folders)."""
    names = list(dict.fromkeys([row.trainer for row in baselines(tables)] +
                               [row.trainer for table in tables for row in table.rows]))
    return sorted(names, key=lambda name: name == FULL_MODEL)


def final_job(request: AblationRequest, env: dict):
    """The SLURM job that evaluates and tabulates once every training is done: this same ``ablate`` run
    here, which keeps every finished training."""
    from nnunet_dsmm.experiments.slurm import FinalJob

    out_dir = os.path.abspath(request.out_dir)
    return FinalJob("evaluate_and_tabulate", request.command(), env, os.path.join(out_dir, "ablation.md"),
                    os.path.join(out_dir, "logs", "evaluate_and_tabulate.log"))


def evaluation_folder(out_dir: str, folds: Sequence[int | str]) -> str:
    """Where the models of ``folds`` (one fold, or the ensemble of several) are evaluated: one folder per
    set of folds, so that adding folds to an experiment keeps the predictions made before."""
    return os.path.join(out_dir, "evaluation", ("fold_" if len(folds) == 1 else "folds_") + "_".join(map(str, folds)))


def run_ablation(request: AblationRequest, report: Callable[[str], None] = say) -> dict:
    """Train, evaluate (the ensemble of the request's folds, as nnUNetv2_predict; with several folds each
    fold alone too) and tabulate (see the module docstring); returns {table name: markdown}. With
    ``dry_run`` only report what would be trained, and on SLURM (the request's executor) submit the
    trainings and the evaluation after them; both return {}."""
    from nnunet_dsmm.evaluation.evaluate import evaluate
    from nnunet_dsmm.nnunet.locations import dataset_name, trained_model_folder

    configuration, plans, device, seeds = request.configuration, request.plans, request.device, request.seeds
    budget, images, labels, use_mirroring = request.budget, request.images, request.labels, request.use_mirroring
    if seeds < 1:
        raise AblationError(f"nnunet-dsmm: --seeds must be at least 1, got {seeds}")
    if budget not in SCHEDULES:
        raise AblationError(f"nnunet-dsmm: unknown budget {budget!r}; choose one of {', '.join(SCHEDULES)}")
    tables = selected_tables(request.table)
    name = dataset_name(request.dataset)
    out_dir = os.path.abspath(request.out_dir)
    schedule = SCHEDULES[budget]
    trainers = evaluated_trainers(tables)
    trainings = trainings_for(trainers, schedule)
    folds = list(dict.fromkeys(request.folds))
    fold = folds[0] if len(folds) == 1 else folds  # several: evaluated as their ensemble, as nnU-Net predicts
    folds_note = f"fold {fold}" if len(folds) == 1 else f"ensemble of folds {', '.join(map(str, folds))}"
    report(f"ablate: {len(trainings)} trainings per seed and fold ({', '.join(t.trainer for t in trainings)}), "
           f"{seeds} seed(s), fold(s) {' '.join(map(str, folds))}, schedule {budget} {asdict(schedule)}")
    env = {**STUDY_ENVIRONMENT, **os.environ, **schedule.environment()}
    plan = build_plan(trainings, name, configuration, plans, folds, {k: results_root(out_dir, k) for k in range(seeds)},
                      env, seed_log(os.path.join(out_dir, "logs")))
    slurm_folder = os.path.join(out_dir, "slurm")
    if request.dry_run:
        for line in dry_run_lines(plan, request.executor, device, slurm_folder):
            report(line)
        return {}
    if run_plan(plan, request.executor, device, slurm_folder, report, final_job(request, env)) is None:
        return {}
    report("ablate: evaluating every trained row on every channel combination ...")

    def evaluated(folds_evaluated: int | str | list[int | str], folder: str) -> EvaluationResult:
        models = {seed_label(k): [(t, trained_model_folder(name, t, plans, configuration, folds_evaluated,
                                                           results_root(out_dir, k))) for t in trainers]
                  for k in range(seeds)}
        return evaluate(None, folds_evaluated, images, labels, folder, device, use_mirroring=use_mirroring,
                        trainings=models)

    result = evaluated(fold, evaluation_folder(out_dir, folds))
    # several folds: each fold's model alone as well (nnU-Net reports folds and predicts with their ensemble)
    per_fold = {} if len(folds) == 1 else {f: evaluated(f, evaluation_folder(out_dir, [f])) for f in folds}
    written = {}
    extra = [AblationTable("baselines", "Baselines against the full model", (), baselines(tables))] \
        if baselines(tables) else []
    for table in [*tables, *extra]:
        written[table.name] = ablation_markdown(table, result)
        if table.name == "fig5":
            figure5(table, result, os.path.join(out_dir, "fig5.png"))
        if compared_rows(table):
            difference_heatmap(table, result, os.path.join(out_dir, f"differences_{table.name}.png"))
    if per_fold:
        rows = {row.trainer: row.label for row in [*(r for table in tables for r in table.rows), *baselines(tables)]}
        written["per_fold"] = per_fold_markdown([(label, t) for t, label in rows.items()], per_fold, result)
    seeds_note = f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed"
    document = (f"# Ablations on {name} ({configuration}, {folds_note}, schedule {budget}, {seeds_note})\n\n"
                "DSC in % averaged over all channel combinations of the test cases; last column: paired Wilcoxon "
                "over cases (each case averaged over combinations and seeds) against the row above, per region, "
                "↑/↓ where p < 0.05.\n\n" + "\n".join(written.values()))
    with open(os.path.join(out_dir, "ablation.md"), "w") as f:
        f.write(document)
    with open(os.path.join(out_dir, "ablation.json"), "w") as f:
        json.dump({"schedule": asdict(schedule), "budget": budget, "seeds": seeds, "folds": folds, "tables": written,
                   "summary": {**result.to_json(), "avg_over_regions": {t: result.average_over_regions(t)
                                                                        for t in trainers}},
                   "per_fold_avg_over_regions": {str(f): {t: r.average_over_regions(t) for t in trainers}
                                                 for f, r in per_fold.items()}}, f, indent=2)
    return written
