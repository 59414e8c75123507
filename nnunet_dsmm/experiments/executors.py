"""Run a plan (``nnunet_dsmm.experiments.plan``): here, several trainings at a time (one per device with ``--devices``,
or ``--jobs N`` on the CPU), each after the trainings it builds on; or on SLURM (``nnunet_dsmm.experiments.slurm``).

A failing training stops the trainings that build on it, not the others; the summary names its log."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from nnunet_dsmm.experiments.experiment import DONE, ExperimentError, Training, describe, results_root, run_logged, say
from nnunet_dsmm.experiments.plan import Job, Plan, build_plan, describe_cost, describe_plan, seed_log
from nnunet_dsmm.experiments.request import ExecutorOptions
from nnunet_dsmm.trainers.schedules import CPU_THREADS_VARIABLE


@dataclass
class Outcome:
    """What a local run did: the wall time in seconds of each training that ran (by job key), the
    failed ones (key -> log) and those not run (key -> the failed job they build on)."""

    timings: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)

    def raise_for_failures(self, plan: Plan) -> None:
        """An ``ExperimentError`` naming every failed training's log and the trainings it stopped."""
        if not self.failed:
            return
        jobs = {job.key: job for job in plan.jobs}
        failed = "; ".join(f"{jobs[key].label} (see its log {log})" for key, log in self.failed.items())
        blocked = ", ".join(f"{jobs[key].label} (builds on {jobs[root].label})" for key, root in self.blocked.items())
        raise ExperimentError(f"nnunet-dsmm: {len(self.failed)} training(s) failed: {failed}"
                              + (f"; not run: {blocked}" if blocked else "")
                              + f"; the other {len(plan.jobs) - len(self.failed) - len(self.blocked)} are trained. "
                              "Fix the cause shown in the log, then run the same command again: finished trainings "
                              "are kept and interrupted ones continue")


def cpu_threads_per_job(jobs: int) -> int:
    """The machine's cores shared among ``jobs`` concurrent CPU trainings (at least one each)."""
    return max(1, (os.cpu_count() or 1) // jobs)


def _prefix(job: Job) -> str:
    return ("" if job.seed is None else f"seed {job.seed} ") + f"fold {job.fold}: "


def run_local(plan: Plan, slots: Sequence[str | None], device: str,
              report: Callable[[str], None] = say) -> Outcome:
    """Run the pending jobs of ``plan`` on this machine, at most ``len(slots)`` at a time, each once the
    jobs it needs are done; a job given a slot that is a device id sees only that GPU
    (``CUDA_VISIBLE_DEVICES``)."""
    outcome = Outcome()
    done = {job.key for job in plan.jobs if job.step.action == DONE}
    for job in plan.jobs:
        if job.step.action == DONE:
            report(_prefix(job) + describe(job.step, plan.command(job, device)))
    waiting = plan.pending()
    free = list(slots)
    running: dict[Future, tuple[Job, str | None, float]] = {}

    def start(pool: ThreadPoolExecutor, job: Job, slot: str | None) -> None:
        command = plan.command(job, device)
        env = plan.environment(job) | ({} if slot is None else {"CUDA_VISIBLE_DEVICES": slot})
        if slot is None and len(slots) > 1 and device == "cpu":
            env[CPU_THREADS_VARIABLE] = str(cpu_threads_per_job(len(slots)))
        visible = "" if slot is None else f" (CUDA_VISIBLE_DEVICES={slot})"
        report(_prefix(job) + describe(job.step, command) + visible)
        prefix = f"    [{job.label}] " if len(slots) > 1 else "    "
        running[pool.submit(run_logged, command, env, job.log, prefix=prefix)] = (job, slot, time.time())

    with ThreadPoolExecutor(max_workers=len(free)) as pool:
        while waiting or running:
            for job in list(waiting):
                stopped = [k for k in job.needs if k in outcome.failed or k in outcome.blocked]
                if stopped:
                    waiting.remove(job)
                    outcome.blocked[job.key] = outcome.blocked.get(stopped[0], stopped[0])
                    report(f"{_prefix(job)}{job.step.training.trainer}: not run, it builds on "
                           f"{stopped[0]}, which did not train")
                elif free and all(k in done for k in job.needs):
                    waiting.remove(job)
                    start(pool, job, free.pop(0))
            if not running:
                break
            for future in wait(running, return_when=FIRST_COMPLETED)[0]:
                job, slot, began = running.pop(future)
                free.append(slot)
                try:
                    future.result()
                except (ExperimentError, OSError) as error:
                    outcome.failed[job.key] = job.log
                    report(f"{_prefix(job)}{job.step.training.trainer} failed: {error}")
                    continue
                done.add(job.key)
                outcome.timings[job.key] = round(time.time() - began, 1)
                report(f"{_prefix(job)}{job.step.training.trainer} done in {outcome.timings[job.key]:.0f} s")
    return outcome


def train_seed(trainings: Sequence[Training], dataset: str, configuration: str, fold: int | str, plans: str,
               device: str, env: Mapping[str, str], out_dir: str, seed: int, log_dir: str,
               report: Callable[[str], None] = say) -> dict[str, float]:
    """Train ``trainings`` in order for one seed under ``results_root(out_dir, seed)`` on this machine,
    keeping finished ones and continuing interrupted ones; the wall time in seconds of each that ran."""
    plan = build_plan(trainings, dataset, configuration, plans, [fold], {seed: results_root(out_dir, seed)}, env,
                      seed_log(log_dir))
    outcome = run_local(plan, [None], device, report)
    outcome.raise_for_failures(plan)
    return {job.step.training.trainer: outcome.timings[job.key] for job in plan.jobs if job.key in outcome.timings}


def run_plan(plan: Plan, options: ExecutorOptions, device: str, slurm_folder: str,
             report: Callable[[str], None] = say, final=None) -> Outcome | None:
    """Run ``plan`` as ``options`` say: locally (raises when a training failed; returns the outcome), or
    submitted to SLURM with the record in ``slurm_folder`` (``final``: a ``slurm.FinalJob`` that runs
    after every training; returns None: the trainings run later)."""
    if options.executor == "slurm":
        from nnunet_dsmm.experiments.slurm import submit_plan

        submit_plan(plan, options, options.device(device), slurm_folder, final, report)
        return None
    outcome = run_local(plan, options.slots(), options.device(device), report)
    outcome.raise_for_failures(plan)
    return outcome


def dry_run(plan: Plan, options: ExecutorOptions, device: str, slurm_folder: str) -> list[str]:
    """The ``--dry-run`` lines: every training, where it would run, and the estimated device time."""
    if options.executor == "slurm":
        from nnunet_dsmm.experiments.slurm import recorded_states

        states = recorded_states(slurm_folder)

        def where(job: Job) -> str:
            return f"SLURM job {states[job.key]}" if job.key in states else "new SLURM job"
        slots = len(plan.jobs) or 1
    else:
        slots = len(options.slots())
        devices = ",".join(options.devices)

        def where(job: Job) -> str:
            if options.devices:
                return f"cuda, one of CUDA_VISIBLE_DEVICES {devices}"
            return f"{device}, {slots} at a time" if slots > 1 else device
    return [*describe_plan(plan, where, options.device(device)),
            describe_cost(plan, options.step_time_ms, options.benchmark_json, slots)]
