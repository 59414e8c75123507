"""What is trained in ``nnUNet_results``: per trainer folder and fold, finished or interrupted (at which
epoch) and the schedule it was trained under (``nnunet_dsmm status``)."""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

from nnunet_dsmm.experiments.experiment import checkpoint_epoch, recorded_schedule, resumable_checkpoint

#: an epoch line of nnU-Net's training log (``2024-01-01 10:00:00.000000: Epoch 12``)
EPOCH_LINE = re.compile(r": Epoch (\d+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class FoldStatus:
    """One fold folder: ``finished``, ``interrupted`` (continues at ``epoch``) or ``started`` (no checkpoint)."""

    trainer_folder: str
    fold: str
    state: str
    epoch: int | None
    checkpoint: str | None
    log_epoch: int | None
    schedule: dict | None


def last_logged_epoch(fold_folder: str) -> int | None:
    """The last epoch nnU-Net's newest training log of ``fold_folder`` started, or None."""
    logs = sorted(glob.glob(os.path.join(fold_folder, "training_log_*.txt")))
    for log in reversed(logs):
        with open(log, errors="replace") as f:
            epochs = EPOCH_LINE.findall(f.read())
        if epochs:
            return int(epochs[-1])
    return None


def fold_status(trainer_folder: str, fold_folder: str) -> FoldStatus:
    """The state of one fold folder, read from its checkpoints, training log and schedule."""
    final = os.path.join(fold_folder, "checkpoint_final.pth")
    checkpoint = final if os.path.isfile(final) else resumable_checkpoint(fold_folder)
    state = "started" if checkpoint is None else "finished" if checkpoint == final else "interrupted"
    return FoldStatus(os.path.basename(trainer_folder), os.path.basename(fold_folder)[len("fold_"):], state,
                      None if checkpoint is None else checkpoint_epoch(checkpoint),
                      None if checkpoint is None else os.path.basename(checkpoint),
                      last_logged_epoch(fold_folder), recorded_schedule(fold_folder))


def _fold_order(folder: str) -> tuple[int, int, str]:
    """fold_0, fold_1, ..., fold_10, then fold_all."""
    suffix = folder.rsplit("fold_", 1)[1]
    return (0, int(suffix), "") if suffix.isdigit() else (1, 0, suffix)


def dataset_status(results: str, dataset_name: str, configuration: str | None = None,
                   plans: str | None = None) -> list[FoldStatus]:
    """Every fold of every ``TRAINER__PLANS__CONFIGURATION`` folder of ``dataset_name`` under ``results``."""
    found = []
    for trainer_folder in sorted(glob.glob(os.path.join(results, dataset_name, "*__*__*"))):
        _, plans_here, configuration_here = os.path.basename(trainer_folder).split("__", 2)
        if (plans and plans_here != plans) or (configuration and configuration_here != configuration):
            continue
        folds = sorted(glob.glob(os.path.join(trainer_folder, "fold_*")), key=_fold_order)
        found += [fold_status(trainer_folder, fold) for fold in folds if os.path.isdir(fold)]
    return found


def describe_schedule(schedule: dict | None) -> str:
    if schedule is None:
        return "schedule not recorded (not a DSMM trainer)"
    return (f"schedule {schedule.get('num_epochs')} epochs x {schedule.get('num_iterations_per_epoch')} iterations "
            f"({schedule.get('num_val_iterations_per_epoch')} validation)")


def describe_fold(status: FoldStatus) -> str:
    """One line on a fold for the user."""
    total = (status.schedule or {}).get("num_epochs")
    of = f" of {total}" if total else ""
    logged = "" if status.log_epoch is None else f"; log reached epoch {status.log_epoch}"
    if status.state == "finished":
        text = f"finished, {status.epoch} epochs"
    elif status.state == "interrupted":
        text = f"interrupted, continues at epoch {status.epoch}{of} from {status.checkpoint}{logged}"
    else:
        text = f"started, no checkpoint yet{logged}"
    return f"fold {status.fold}: {text}; {describe_schedule(status.schedule)}"


def format_status(statuses: list[FoldStatus], where: str) -> str:
    """The status report, one block per trainer folder."""
    if not statuses:
        return f"No trained model in {where}."
    lines, current = [f"Trainings in {where}:"], None
    for status in statuses:
        if status.trainer_folder != current:
            current = status.trainer_folder
            lines.append(current)
        lines.append("  " + describe_fold(status))
    return "\n".join(lines)
