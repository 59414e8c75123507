"""The trainings of an experiment as one dependency graph: every training (trainer, epochs) per seed and
fold, what to do with it (done, continue, start; ``experiment.plan_step``) and the trainings of the same
seed and fold it builds on (its trainer's ``earlier_stages()``). ``train``, ``ablate`` and ``demo`` build
one with ``build_plan`` and hand it to an executor (``nnunet_dsmm.experiments.executors``); ``--dry-run`` lists it
with ``describe_plan`` and estimates its cost with ``estimate_seconds``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from nnunet_dsmm.experiments.experiment import (
    CONTINUE,
    DONE,
    START,
    ExperimentError,
    Step,
    Training,
    describe,
    plan_step,
    train_command,
    training_folder,
)

#: nnU-Net's iterations per epoch (``nnUNetTrainer.num_iterations_per_epoch``), for the cost estimate
NNUNET_ITERATIONS_PER_EPOCH = 250


@dataclass(frozen=True)
class Job:
    """One training of a plan at a seed (None: no ``DSMM_SEED``) and fold, the environment it runs in,
    the keys of the jobs it waits for and its log."""

    key: str
    step: Step
    seed: int | None
    fold: int | str
    env: Mapping[str, str]
    needs: tuple[str, ...]
    log: str

    @property
    def label(self) -> str:
        seed = "" if self.seed is None else f" seed {self.seed}"
        return f"{self.step.training.trainer}{seed} fold {self.fold}"


@dataclass(frozen=True)
class Plan:
    """The jobs of an experiment on one dataset, configuration and plans, earlier stages first."""

    dataset: str
    configuration: str
    plans: str
    jobs: tuple[Job, ...]

    def command(self, job: Job, device: str) -> list[str]:
        """The ``nnUNetv2_train`` command line of ``job`` on ``device`` (``experiment.train_command``)."""
        return train_command(job.step, self.dataset, self.configuration, job.fold, self.plans, device)

    def environment(self, job: Job) -> dict[str, str]:
        """The environment ``job`` runs in: its seed's, with its epochs in ``DSMM_NUM_EPOCHS`` when fixed."""
        epochs = job.step.training.epochs
        return {**job.env, **({} if epochs is None else {"DSMM_NUM_EPOCHS": str(epochs)})}

    def pending(self) -> list[Job]:
        """The jobs that train (continue or start), in order."""
        return [job for job in self.jobs if job.step.action != DONE]


def job_key(trainer: str, seed: int | None, fold: int | str) -> str:
    """A name for a job that is unique in its plan and safe in file names."""
    return f"{trainer}{'' if seed is None else f'_seed{seed}'}_fold{fold}"


def seed_log(log_dir: str) -> Callable[[Training, int | None, int | str, str], str]:
    """Logs in ``log_dir``: ``seed<k>_<trainer>.log`` for fold 0, ``seed<k>_fold<f>_<trainer>.log`` else."""
    def log(training: Training, seed: int | None, fold: int | str, folder: str) -> str:
        return os.path.join(log_dir, f"seed{seed or 0}{'' if fold == 0 else f'_fold{fold}'}_{training.trainer}.log")
    return log


def folder_log(training: Training, seed: int | None, fold: int | str, folder: str) -> str:
    """The log next to the training's checkpoints (``nnunet_dsmm train``)."""
    return os.path.join(folder, "nnunet_dsmm_train.log")


def build_plan(trainings: Sequence[Training], dataset: str, configuration: str, plans: str,
               folds: Sequence[int | str], roots: Mapping[int | None, str], env: Mapping[str, str],
               log_for: Callable[[Training, int | None, int | str, str], str]) -> Plan:
    """Every training of ``trainings`` (earlier stages first, ``experiment.trainings_for``) for each fold
    of ``folds`` and each seed of ``roots`` (seed -> its ``nnUNet_results``; None: no ``DSMM_SEED``)."""
    from nnunet_dsmm.nnunet.discovery import find_registered_class

    names = {t.trainer for t in trainings}
    jobs = []
    for seed, root in roots.items():
        seed_env = {**env, "nnUNet_results": root, **({} if seed is None else {"DSMM_SEED": str(seed)})}
        for fold in folds:
            for training in trainings:
                earlier = [c.__name__ for c in find_registered_class(training.trainer).earlier_stages().values()]
                missing = [name for name in earlier if name not in names]
                if missing:
                    raise ExperimentError(f"nnunet-dsmm: {training.trainer} builds on {', '.join(missing)}, which "
                                          "the plan lacks; list trainings with experiment.trainings_for")
                folder = training_folder(training, dataset, configuration, fold, plans, root)
                jobs.append(Job(job_key(training.trainer, seed, fold), plan_step(training, folder, seed_env), seed,
                                fold, seed_env, tuple(job_key(name, seed, fold) for name in earlier),
                                log_for(training, seed, fold, folder)))
    return Plan(dataset, configuration, plans, tuple(jobs))


def step_times_ms(step_time_ms: float | None, benchmark_json: str | None) -> tuple[dict[str, float], float | None]:
    """Training-step times in ms: per trainer from a ``nnunet_dsmm benchmark --json`` report, and the figure
    for the others (``step_time_ms``, else the report's slowest trainer); ({}, None) when neither is given."""
    if benchmark_json is None:
        return {}, step_time_ms
    try:
        with open(benchmark_json) as f:
            training = json.load(f)["training"]
        per_trainer = {name: float(entry["median_ms"]) for name, entry in training.items()}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ExperimentError(f"nnunet-dsmm: cannot read training-step times from {benchmark_json} ({error}); give "
                              "the JSON file that nnunet_dsmm benchmark --json wrote, or --step-time-ms MS") from None
    return per_trainer, step_time_ms if step_time_ms is not None else max(per_trainer.values(), default=None)


def iterations_per_epoch(env: Mapping[str, str]) -> int:
    """The training iterations of every epoch: ``DSMM_NUM_ITERATIONS_PER_EPOCH``, else nnU-Net's 250."""
    value = env.get("DSMM_NUM_ITERATIONS_PER_EPOCH", "")
    return int(value) if value.isdigit() else NNUNET_ITERATIONS_PER_EPOCH


def remaining_iterations(job: Job) -> int:
    """Training iterations ``job`` still runs (0 when done)."""
    if job.step.action == DONE:
        return 0
    return (job.step.epochs - (job.step.epoch or 0)) * iterations_per_epoch(job.env)


def estimate_seconds(plan: Plan, per_trainer_ms: Mapping[str, float], default_ms: float | None) -> dict | None:
    """The device time the plan still needs (every pending training's remaining iterations times its step
    time; validation not counted) and its longest chain of dependent trainings; None without step times."""
    if default_ms is None and not per_trainer_ms:
        return None

    def seconds(job: Job) -> float:
        return remaining_iterations(job) * per_trainer_ms.get(job.step.training.trainer, default_ms or 0.0) / 1000

    finish: dict[str, float] = {}
    for job in plan.jobs:
        finish[job.key] = seconds(job) + max((finish[key] for key in job.needs), default=0.0)
    return {"total_s": sum(seconds(job) for job in plan.jobs), "longest_chain_s": max(finish.values(), default=0.0)}


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 360 else f"{seconds / 60:.1f} min"


def describe_plan(plan: Plan, where: Callable[[Job], str], device: str) -> list[str]:
    """Two lines per job for ``--dry-run`` (what is done, continued or started, with its command line;
    then its seed, fold, epochs and where it runs), and a count."""
    lines = []
    for job in plan.jobs:
        seed = "" if job.seed is None else f"seed {job.seed}, "
        after = f" after {', '.join(job.needs)}" if job.needs else ""
        place = "" if job.step.action == DONE else f"; runs on {where(job)}{after}"
        lines += [describe(job.step, plan.command(job, device), True),
                  f"    {seed}fold {job.fold}, {job.step.epochs} epochs, {job.step.action}{place}"]
    counts = {action: sum(j.step.action == action for j in plan.jobs) for action in (DONE, CONTINUE, START)}
    epochs = sum(0 if j.step.action == DONE else j.step.epochs - (j.step.epoch or 0) for j in plan.jobs)
    lines.append(f"{len(plan.jobs)} trainings, {epochs} epochs ({sum(remaining_iterations(j) for j in plan.jobs)} "
                 f"training iterations) to run: {counts[DONE]} done, {counts[CONTINUE]} to continue, "
                 f"{counts[START]} to start; nothing trained")
    return lines


def describe_cost(plan: Plan, step_time_ms: float | None, benchmark_json: str | None, slots: int) -> str:
    """The estimated device time of ``plan`` for ``--dry-run``, or how to get one."""
    per_trainer, default = step_times_ms(step_time_ms, benchmark_json)
    estimate = estimate_seconds(plan, per_trainer, default)
    if estimate is None:
        return ("estimated device time: unknown; give --step-time-ms MS or --benchmark-json FILE (from nnunet_dsmm "
                "benchmark --json on the training device)")
    source = f"step times of {benchmark_json}" if benchmark_json else f"{step_time_ms:g} ms per training step"
    wall = max(estimate["longest_chain_s"], estimate["total_s"] / slots)
    return (f"estimated device time: {hours(estimate['total_s'])} ({source}, validation not counted); longest "
            f"chain of dependent trainings {hours(estimate['longest_chain_s'])}; at least {hours(wall)} of wall "
            f"time on {slots} device(s) or job slot(s)")
