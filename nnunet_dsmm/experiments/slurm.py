"""Submit a plan (``nnunet_dsmm.experiments.plan``) to SLURM: one plain sbatch script per training, written into a
folder of the experiment, each with ``--dependency=afterok:`` on the jobs of the stages it builds on, and
the job ids recorded in ``slurm_jobs.json`` there. A later call shows each job's state (``squeue``, then
``scontrol show job``; a training's ``checkpoint_final.pth`` means done, whatever SLURM still knows) and
resubmits what failed, was cancelled or timed out: its new script continues with ``--c`` (``experiment``)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from nnunet_dsmm.errors import DSMMError
from nnunet_dsmm.experiments.experiment import DONE, describe, say
from nnunet_dsmm.experiments.plan import Plan
from nnunet_dsmm.experiments.request import ExecutorOptions

#: the record of submitted jobs in the SLURM folder of an experiment
RECORD = "slurm_jobs.json"
#: SLURM states of a job that still runs or may run: kept, not resubmitted
ACTIVE = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED", "STAGE_OUT",
          "SIGNALING", "REQUEUE_HOLD", "REQUEUE_FED")
#: environment variables written into every script (sbatch also exports the submitting environment)
EXPORTED_PREFIXES = ("nnUNet_", "DSMM_")


class SlurmError(DSMMError, RuntimeError):
    """SLURM is not there or refused a job."""


@dataclass(frozen=True)
class FinalJob:
    """A command run after every training (``ablate``'s evaluation and tables); ``done_file`` existing
    means it has run."""

    key: str
    command: list[str]
    env: Mapping[str, str]
    done_file: str
    log: str


def _slurm(args: Sequence[str]) -> subprocess.CompletedProcess:
    if shutil.which(args[0]) is None:
        raise SlurmError(f"nnunet-dsmm: {args[0]} not found; run this on a SLURM login node (with sbatch, squeue and "
                         "scontrol on the PATH), or train here with --executor local")
    return subprocess.run(list(args), capture_output=True, text=True)


def job_state(job_id: str) -> str | None:
    """The state SLURM reports for ``job_id``: ``squeue`` while pending or running, else ``scontrol show
    job`` for a recently finished one; None when SLURM no longer knows it."""
    queued = _slurm(["squeue", "-h", "-j", job_id, "-o", "%T"])
    if queued.returncode == 0 and queued.stdout.strip():
        return queued.stdout.split()[0]
    shown = _slurm(["scontrol", "show", "job", job_id])
    match = re.search(r"JobState=(\S+)", shown.stdout) if shown.returncode == 0 else None
    return match.group(1) if match else None


def _console_script(name: str, setup: str | None) -> str:
    """A console script of this environment by its path, or by name when a setup line sets the PATH."""
    return name if setup else os.path.join(os.path.dirname(sys.executable), name)


def script_text(name: str, command: Sequence[str], env: Mapping[str, str], log: str, options: ExecutorOptions,
                note: str) -> str:
    """An sbatch script that appends its output to ``log``, exports the nnU-Net and DSMM variables of
    ``env``, runs ``options.setup`` and then ``command`` (its first word a console script)."""
    gpus = options.gpus_per_job
    lines = ["#!/bin/bash", f"#SBATCH --job-name=dsmm-{name}", f"#SBATCH --output={log}", "#SBATCH --open-mode=append"]
    lines += [f"#SBATCH --partition={options.partition}"] if options.partition else []
    lines += [f"#SBATCH --time={options.time_limit}"] if options.time_limit else []
    lines += [f"#SBATCH --gres=gpu:{gpus}"] if gpus else []
    lines += [f"#SBATCH {option}" for option in options.sbatch_options]
    lines += [f"# {note}", "set -eo pipefail"]
    lines += [options.setup] if options.setup else []
    lines += [f"export {key}={shlex.quote(value)}" for key, value in sorted(env.items())
              if key.startswith(EXPORTED_PREFIXES)]
    full = [_console_script(command[0], options.setup), *command[1:]]
    if gpus and gpus > 1 and command[0] == "nnUNetv2_train":
        full += ["-num_gpus", str(gpus)]
    lines += ["export PYTHONUNBUFFERED=1", f"cd {shlex.quote(os.getcwd())}",
              f"echo \"=== $(date '+%Y-%m-%d %H:%M:%S'): {shlex.join(command)} (SLURM job $SLURM_JOB_ID)\"",
              shlex.join(full)]
    return "\n".join(lines) + "\n"


def load_record(folder: str) -> dict[str, dict]:
    path = os.path.join(folder, RECORD)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)["jobs"]


def _save_record(folder: str, record: Mapping[str, dict]) -> None:
    path = os.path.join(folder, RECORD)
    with open(path + ".tmp", "w") as f:
        json.dump({"jobs": record}, f, indent=2)
    os.replace(path + ".tmp", path)


def recorded_states(folder: str) -> dict[str, str]:
    """Job key -> "<id> <state>" of every job recorded in ``folder`` (for ``--dry-run``)."""
    return {key: f"{entry['id']} {job_state(entry['id']) or 'unknown to SLURM'}"
            for key, entry in load_record(folder).items()}


def sbatch(script: str, dependencies: Sequence[str]) -> str:
    """Submit ``script`` after ``dependencies`` finish successfully; its job id."""
    after = [f"--dependency=afterok:{':'.join(dependencies)}"] if dependencies else []
    result = _slurm(["sbatch", "--parsable", *after, script])
    if result.returncode != 0:
        raise SlurmError(f"nnunet-dsmm: sbatch {script} failed: {result.stderr.strip()}; fix the option it names "
                         "(--partition, --time, --gpus-per-job, --sbatch-option) and run the command again")
    return result.stdout.strip().split(";")[0]


@dataclass(frozen=True)
class _Unit:
    """What the submission loop needs of a training or of the final job."""

    key: str
    label: str
    needs: tuple[str, ...]
    done: bool
    script: str
    log: str


def submit_plan(plan: Plan, options: ExecutorOptions, device: str, folder: str, final: FinalJob | None = None,
                report: Callable[[str], None] = say) -> dict[str, dict]:
    """Submit every pending training of ``plan`` (and ``final`` after all of them) that has no job pending
    or running, with ``afterok`` on the jobs it waits for; a job whose prerequisite is resubmitted is
    cancelled and resubmitted too. Returns the record written to ``folder/slurm_jobs.json``."""
    os.makedirs(folder, exist_ok=True)
    units = []
    for job in plan.jobs:
        command = plan.command(job, device)
        units.append(_Unit(job.key, job.label, job.needs, job.step.action == DONE,
                           script_text(job.key, command, plan.environment(job), job.log, options,
                                       f"{job.label}: {describe(job.step, command)}"), job.log))
    if final is not None:
        units.append(_Unit(final.key, final.key, tuple(job.key for job in plan.jobs), os.path.isfile(final.done_file),
                           script_text(final.key, final.command, final.env, final.log, options,
                                       shlex.join(final.command)), final.log))
    record = load_record(folder)
    active: dict[str, str] = {}
    submitted: set[str] = set()
    for unit in units:
        previous = record.get(unit.key)
        state = job_state(previous["id"]) if previous else None
        was = f"job {previous['id']} {state or 'unknown to SLURM'}" if previous else "never submitted"
        renewed = [key for key in unit.needs if key in submitted]
        if unit.done and not renewed:
            report(f"{unit.label}: done ({was})")
            continue
        if state in ACTIVE and not renewed:
            active[unit.key] = previous["id"]
            report(f"{unit.label}: {was}, kept")
            continue
        if state in ACTIVE:
            _slurm(["scancel", previous["id"]])
        os.makedirs(os.path.dirname(unit.log), exist_ok=True)  # SLURM does not create the folder of its output
        path = os.path.join(folder, f"{unit.key}.sbatch")
        with open(path, "w") as f:
            f.write(unit.script)
        job_id = sbatch(path, [active[key] for key in unit.needs if key in active])
        active[unit.key] = job_id
        submitted.add(unit.key)
        record[unit.key] = {"id": job_id, "label": unit.label, "script": path,
                            "after": [active[key] for key in unit.needs if key in active],
                            "submitted": time.strftime("%Y-%m-%d %H:%M:%S")}
        _save_record(folder, record)
        report(f"{unit.label}: {'resubmitted' if previous else 'submitted'} as job {job_id}"
               + (f" (was {was})" if previous else "") + f": {path}")
    report(f"slurm: {len(submitted)} job(s) submitted, {len(active) - len(submitted)} kept; job ids in "
           f"{os.path.join(folder, RECORD)}; run the same command again to see their state and resubmit what "
           "failed or timed out")
    return record
