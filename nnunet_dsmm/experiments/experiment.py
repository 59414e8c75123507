"""Independent trainings of several models with the stock ``nnUNetv2_train``, one ``nnUNet_results``
folder per seed, for comparisons over seeds (``demo --seeds``, ``ablate``).

Every training runs as a subprocess with its full log kept; a training whose ``checkpoint_final.pth``
exists under the same schedule is skipped, and an interrupted one (a ``checkpoint_latest.pth`` or
``checkpoint_best.pth`` but no final checkpoint, same schedule) is continued with nnU-Net's ``--c``, so
an interrupted experiment resumes where it stopped (``nnunet_dsmm train``, ``demo``, ``ablate``). The
trainings of an experiment form a plan (``nnunet_dsmm.experiments.plan``) that an executor runs
(``nnunet_dsmm.experiments.executors``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nnunet_dsmm.errors import DSMMError
from nnunet_dsmm.trainers.schedules import (
    FINAL_VALIDATION_VARIABLE,
    SCHEDULE_FILE,
    SCHEDULE_VARIABLES,
    SCHEDULES,
    Schedule,
)

#: progress lines of nnU-Net's training log that are shown while a training runs
PROGRESS_MARKERS = ("Epoch ", "Pseudo dice", "Mean Validation")
#: the defaults of a study's trainings (``ablate``, ``demo``), below the user's environment: no nnU-Net final
#: validation, as a study evaluates every model on its test cases under each channel combination instead
STUDY_ENVIRONMENT = {FINAL_VALIDATION_VARIABLE: "0"}


class ExperimentError(DSMMError, RuntimeError):
    """A command of an experiment failed; the message names its log."""


@dataclass(frozen=True)
class Training:
    """One model of an experiment: a registered trainer and its number of epochs (None: the trainer's
    own, or the user's ``DSMM_NUM_EPOCHS``)."""

    trainer: str
    epochs: int | None


def trainings_for(trainers: Sequence[str], schedule: Schedule | None) -> list[Training]:
    """``trainers`` and every earlier stage they build on, each once, earlier stages first, with their
    epochs under ``schedule`` (None: each trainer's own schedule)."""
    from nnunet_dsmm.nnunet.discovery import find_registered_class, suggestion

    ordered: dict[str, Training] = {}

    def add(trainer: type) -> None:
        for stage in trainer.earlier_stages().values():
            add(stage)
        epochs = None if schedule is None else schedule.epochs(trainer.stage)
        ordered.setdefault(trainer.__name__, Training(trainer.__name__, epochs))

    for name in trainers:
        trainer = find_registered_class(name)
        if trainer is None:
            raise ExperimentError(f"nnunet-dsmm: {name} is not a registered DSMM trainer{suggestion(name)}")
        add(trainer)
    return list(ordered.values())


def results_root(out_dir: str, seed: int) -> str:
    """The ``nnUNet_results`` folder of the ``seed``-th independent training: ``OUT/nnUNet_results`` for
    seed 0 (the stock layout), ``OUT/nnUNet_results_seed<k>`` for the others."""
    return os.path.join(out_dir, "nnUNet_results" if seed == 0 else f"nnUNet_results_seed{seed}")


def say(message: str, prefix: str = "nnunet_dsmm") -> None:
    print(f"[{prefix} {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_logged(args: list[str], env: Mapping[str, str], log_path: str, show: Sequence[str] = PROGRESS_MARKERS,
               prefix: str = "    ") -> None:
    """Run a console script of this environment; stream the lines that contain one of ``show`` (after
    ``prefix``), keep the full output in ``log_path`` (appended to: a continued run keeps the log of the
    interrupted one); a failure raises ``ExperimentError`` naming the log."""
    executable = os.path.join(os.path.dirname(sys.executable), args[0])
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(args)}\n")
        log.flush()
        process = subprocess.Popen([executable, *args[1:]], env={**env, "PYTHONUNBUFFERED": "1"},
                                   stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            log.write(line)
            if any(s in line for s in show):
                print(prefix + line.rstrip()[-110:], flush=True)
        if process.wait() != 0:
            raise ExperimentError(f"nnunet-dsmm: '{' '.join(args)}' failed (exit {process.returncode}); "
                                  f"see its log {log_path}")


#: what ``train`` does with a training, from what its fold folder holds
DONE, CONTINUE, START = "done", "continue", "start"
#: the checkpoints ``nnUNetv2_train --c`` continues from when there is no final one, in its order
RESUMABLE_CHECKPOINTS = ("checkpoint_latest.pth", "checkpoint_best.pth")


@dataclass(frozen=True)
class Step:
    """A training and what to do with it: ``done`` (kept), ``continue`` (with ``--c`` from ``epoch``) or
    ``start``; ``replaces`` names a run under another schedule that starting anew overwrites."""

    training: Training
    folder: str
    action: str
    epochs: int
    epoch: int | None = None
    replaces: str = ""


def recorded_schedule(fold_folder: str) -> dict | None:
    """The schedule a DSMM trainer recorded next to its checkpoints (``dsmm_schedule.json``), or None."""
    path = os.path.join(fold_folder, SCHEDULE_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def expected_schedule(training: Training, env: Mapping[str, str]) -> dict[str, int]:
    """The entries of ``dsmm_schedule.json`` that a run of ``training`` under ``env`` records and that are
    known without building the trainer: its epochs and every ``DSMM_NUM_*`` variable that is set."""
    from nnunet_dsmm.nnunet.discovery import find_registered_class

    expected = {name: int(env[variable]) for name, variable in SCHEDULE_VARIABLES.items()
                if env.get(variable, "").isdigit()}
    if training.epochs is not None:
        expected["num_epochs"] = training.epochs
    elif "num_epochs" not in expected:
        expected["num_epochs"] = SCHEDULES["paper"].epochs(find_registered_class(training.trainer).stage)
    return expected


def resumable_checkpoint(fold_folder: str) -> str | None:
    """The checkpoint ``--c`` would continue an unfinished run from, or None."""
    for name in RESUMABLE_CHECKPOINTS:
        if os.path.isfile(os.path.join(fold_folder, name)):
            return os.path.join(fold_folder, name)
    return None


def checkpoint_epoch(path: str) -> int:
    """The epoch a training continues at from the nnU-Net checkpoint ``path`` (its ``current_epoch``)."""
    import pickle
    import zipfile

    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["current_epoch"])
    except (RuntimeError, EOFError, KeyError, TypeError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise ExperimentError(f"nnunet-dsmm: {path} is not a readable nnU-Net checkpoint ({type(e).__name__}: {e}); "
                              "it was probably cut short when its training was killed. Delete it and run the "
                              "command again: the training then continues from its other checkpoint or starts "
                              "anew") from e


def plan_step(training: Training, fold_folder: str, env: Mapping[str, str]) -> Step:
    """What to do with ``training`` given its fold folder: keep it, continue it, or start it."""
    expected = expected_schedule(training, env)
    recorded = recorded_schedule(fold_folder)
    same = recorded is not None and all(recorded.get(key) == value for key, value in expected.items())
    final = os.path.isfile(os.path.join(fold_folder, "checkpoint_final.pth"))
    resumable = resumable_checkpoint(fold_folder)
    if same and final:
        return Step(training, fold_folder, DONE, expected["num_epochs"])
    if same and resumable:
        return Step(training, fold_folder, CONTINUE, expected["num_epochs"], checkpoint_epoch(resumable))
    replaces = f"a run under the schedule {recorded or 'unknown'}" if final or resumable else ""
    return Step(training, fold_folder, START, expected["num_epochs"], replaces=replaces)


def training_folder(training: Training, dataset_name: str, configuration: str, fold: int | str, plans: str,
                    root: str) -> str:
    """The fold folder of ``training`` under the ``nnUNet_results`` folder ``root``."""
    from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier

    identifier = convert_trainer_plans_config_to_identifier(training.trainer, plans, configuration)
    return os.path.join(root, dataset_name, identifier, f"fold_{fold}")


def train_command(step: Step, dataset_name: str, configuration: str, fold: int | str, plans: str,
                  device: str) -> list[str]:
    """The stock ``nnUNetv2_train`` command line of ``step`` (with ``--c`` to continue)."""
    return ["nnUNetv2_train", dataset_name, configuration, str(fold), "-p", plans, "-tr", step.training.trainer,
            "-device", device, *(["--c"] if step.action == CONTINUE else [])]


def describe(step: Step, command: Sequence[str], dry_run: bool = False) -> str:
    """One line on ``step`` for the user: kept, or what runs (``dry_run``: would run) and why."""
    name = step.training.trainer
    if step.action == DONE:
        return f"{name} ({step.epochs} epochs): already trained, kept ({step.folder})"
    if step.action == CONTINUE:
        return (f"{name}: interrupted at epoch {step.epoch} of {step.epochs}; "
                f"{'would continue' if dry_run else 'continuing'} it: {' '.join(command)}")
    replacing = f", replacing {step.replaces}" if step.replaces else ""
    return f"{name}: {'would train' if dry_run else 'training'} {step.epochs} epochs{replacing}: {' '.join(command)}"
