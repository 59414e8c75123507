"""Schedules: the epochs of each stage of the method and the iterations of every epoch, the paper's and
shorter ones, and the environment variables that set a run's schedule (recorded next to its checkpoints)
and its CPU threads.

A trainer declares the ``Stage`` it trains (class attribute ``stage``); ``Schedule.epochs`` gives its
epochs under a schedule, ``SCHEDULES["paper"]`` its default. Imports nothing of the trainers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum

from nnunet_dsmm.errors import DSMMError

#: a trainer's schedule attribute -> the environment variable that sets it
SCHEDULE_VARIABLES = {
    "num_epochs": "DSMM_NUM_EPOCHS",
    "num_iterations_per_epoch": "DSMM_NUM_ITERATIONS_PER_EPOCH",
    "num_val_iterations_per_epoch": "DSMM_NUM_VAL_ITERATIONS_PER_EPOCH",
}
#: the schedule a run was started with, next to its checkpoints
SCHEDULE_FILE = "dsmm_schedule.json"
#: torch threads of a CPU training, set when several train at once (nnU-Net's ``-device cpu`` gives each
#: training every core)
CPU_THREADS_VARIABLE = "DSMM_CPU_THREADS"
#: an integer that seeds Python's, NumPy's and torch's generators before the networks are built
#: (independent trainings per seed; nnU-Net's augmentation workers stay unseeded)
SEED_VARIABLE = "DSMM_SEED"
#: 0 skips nnU-Net's final validation after training (1, the default, runs it): ``ablate`` and ``demo``
#: set 0 unless it is set, as they evaluate on their test cases and never read nnU-Net's validation
FINAL_VALIDATION_VARIABLE = "DSMM_FINAL_VALIDATION"


class ScheduleError(DSMMError, ValueError):
    """A schedule variable is not a positive integer."""


class ScheduleMismatchError(ScheduleError):
    """``--c`` would continue a run under another schedule than the one it was started with."""


class Stage(Enum):
    """What a trainer trains, which decides its epochs."""

    #: stage 1: a segmentation model trained from scratch (f / T of Eq. 2-5, the baselines)
    SEGMENTATION = "segmentation"
    #: stage 2: φθ, mask-reconstruction pre-training (Eq. 1-3)
    PRETRAINING = "pretraining"
    #: stage 3: a model fine-tuned from stage 2's φθ (Eq. 7 and its ablations)
    FINETUNING = "finetuning"
    #: the epoch-matched baseline: as many epochs as stages 2 and 3 together
    EPOCH_MATCHED = "epoch-matched"


@dataclass(frozen=True)
class Schedule:
    """Epochs of each stage and the iterations of every epoch (``DSMM_NUM_*``)."""

    stage1_epochs: int
    pretrain_epochs: int
    finetune_epochs: int
    iterations: int
    val_iterations: int

    def epochs(self, stage: Stage) -> int:
        """The epochs of a trainer of ``stage``."""
        return {Stage.SEGMENTATION: self.stage1_epochs, Stage.PRETRAINING: self.pretrain_epochs,
                Stage.FINETUNING: self.finetune_epochs,
                Stage.EPOCH_MATCHED: self.pretrain_epochs + self.finetune_epochs}[stage]

    def environment(self) -> dict[str, str]:
        """The iteration variables of this schedule (the epochs are each training's own)."""
        return {SCHEDULE_VARIABLES["num_iterations_per_epoch"]: str(self.iterations),
                SCHEDULE_VARIABLES["num_val_iterations_per_epoch"]: str(self.val_iterations)}


#: named schedules: the paper's, and shorter ones for a GPU demo, a 2-core CPU (cpu-long: stages 1 and 3
#: three times, stage 2 ten times as long as cpu) and tests (smoke learns nothing)
SCHEDULES = {
    "paper": Schedule(1000, 600, 1000, 250, 50),
    "gpu": Schedule(100, 50, 100, 100, 10),
    "cpu": Schedule(16, 6, 16, 12, 2),
    "cpu-long": Schedule(48, 60, 48, 12, 2),
    "smoke": Schedule(2, 1, 2, 3, 1),
}


def positive_int_from_env(name: str, default: int) -> int:
    """The environment variable ``name`` as a positive integer, ``default`` when unset; else a ``ScheduleError``."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if not value.isdigit() or int(value) < 1:
        raise ScheduleError(f"nnunet-dsmm: environment variable {name}={value!r} must be a positive integer")
    return int(value)


def schedule_from_environment(defaults: dict[str, int]) -> dict[str, int]:
    """A run's schedule: for each attribute of ``SCHEDULE_VARIABLES``, its variable where set, else its
    value in ``defaults``; a ``ScheduleError`` when a variable is not a positive integer."""
    return {attribute: positive_int_from_env(variable, defaults[attribute])
            for attribute, variable in SCHEDULE_VARIABLES.items()}


def seed_from_environment() -> int | None:
    """``DSMM_SEED`` as an integer, None when unset; else a ``ScheduleError``."""
    seed = os.environ.get(SEED_VARIABLE, "")
    if seed and not seed.isdigit():
        raise ScheduleError(f"nnunet-dsmm: environment variable {SEED_VARIABLE}={seed!r} must be an integer")
    return int(seed) if seed else None


def final_validation_from_environment() -> bool:
    """Whether nnU-Net's final validation runs (``DSMM_FINAL_VALIDATION``: 1, the default, or 0)."""
    value = os.environ.get(FINAL_VALIDATION_VARIABLE, "1")
    if value not in ("0", "1"):
        raise ScheduleError(f"nnunet-dsmm: environment variable {FINAL_VALIDATION_VARIABLE}={value!r} must be 0 or 1")
    return value == "1"
