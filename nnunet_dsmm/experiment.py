"""Independent trainings of several models with the stock ``nnUNetv2_train``, one ``nnUNet_results``
folder per seed, for comparisons over seeds (``demo --seeds``, ``ablate``).

Every training of a seed runs as a subprocess with ``DSMM_SEED`` and ``DSMM_NUM_EPOCHS`` set and its
full log kept; a training whose ``checkpoint_final.pth`` exists under the same schedule is skipped,
so an interrupted experiment resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nnunet_dsmm.errors import DSMMError

#: progress lines of nnU-Net's training log that are shown while a training runs
PROGRESS_MARKERS = ("Epoch ", "Pseudo dice", "Mean Validation")


class ExperimentError(DSMMError, RuntimeError):
    """A command of an experiment failed; the message names its log."""


@dataclass(frozen=True)
class Training:
    """One model of an experiment: a registered trainer and its number of epochs."""

    trainer: str
    epochs: int


@dataclass(frozen=True)
class Schedule:
    """Epochs of each stage and the iterations of every epoch (``DSMM_NUM_*``)."""

    stage1_epochs: int
    pretrain_epochs: int
    finetune_epochs: int
    iterations: int
    val_iterations: int

    def environment(self) -> dict[str, str]:
        return {"DSMM_NUM_ITERATIONS_PER_EPOCH": str(self.iterations),
                "DSMM_NUM_VAL_ITERATIONS_PER_EPOCH": str(self.val_iterations)}


#: named schedules: the paper's, and shorter ones for a GPU demo, a 2-core CPU and tests (smoke learns nothing)
SCHEDULES = {
    "paper": Schedule(1000, 600, 1000, 250, 50),
    "gpu": Schedule(100, 50, 100, 100, 10),
    "cpu": Schedule(16, 6, 16, 12, 2),
    "smoke": Schedule(2, 1, 2, 3, 1),
}


def stage_epochs(trainer: type, schedule: Schedule) -> int:
    """Epochs of a DSMM trainer under ``schedule``: stage 2 trainers get the pre-training epochs, trainers
    that start from stage 2 the fine-tuning epochs, the compute-matched baseline both, the rest stage 1's."""
    from nnunet_dsmm.trainers.pretrain import DSMMPretrainTrainer
    from nnunet_dsmm.trainers.stages import PRETRAINED
    from nnunet_dsmm.trainers.teacher import DSMMBaselineComputeMatchedTrainer

    if issubclass(trainer, DSMMBaselineComputeMatchedTrainer):
        return schedule.pretrain_epochs + schedule.finetune_epochs
    if issubclass(trainer, DSMMPretrainTrainer):
        return schedule.pretrain_epochs
    if PRETRAINED in trainer.earlier_stages():
        return schedule.finetune_epochs
    return schedule.stage1_epochs


def trainings_for(trainers: Sequence[str], schedule: Schedule) -> list[Training]:
    """``trainers`` and every earlier stage they build on, each once, earlier stages first, with their
    epochs under ``schedule``."""
    from nnunet_dsmm.discovery import find_registered_class

    ordered: dict[str, Training] = {}

    def add(trainer: type) -> None:
        for stage in trainer.earlier_stages().values():
            add(stage)
        ordered.setdefault(trainer.__name__, Training(trainer.__name__, stage_epochs(trainer, schedule)))

    for name in trainers:
        trainer = find_registered_class(name)
        if trainer is None:
            raise ExperimentError(f"nnunet-dsmm: {name} is not a registered DSMM trainer")
        add(trainer)
    return list(ordered.values())


def results_root(out_dir: str, seed: int) -> str:
    """The ``nnUNet_results`` folder of the ``seed``-th independent training: ``OUT/nnUNet_results`` for
    seed 0 (the stock layout), ``OUT/nnUNet_results_seed<k>`` for the others."""
    return os.path.join(out_dir, "nnUNet_results" if seed == 0 else f"nnUNet_results_seed{seed}")


def say(message: str, prefix: str = "nnunet_dsmm") -> None:
    print(f"[{prefix} {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_logged(args: list[str], env: dict, log_path: str, show: Sequence[str] = PROGRESS_MARKERS) -> None:
    """Run a console script of this environment; stream the lines that contain one of ``show``, keep the
    full output in ``log_path``; a failure raises ``ExperimentError`` naming the log."""
    executable = os.path.join(os.path.dirname(sys.executable), args[0])
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "w") as log:
        process = subprocess.Popen([executable, *args[1:]], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            log.write(line)
            if any(s in line for s in show):
                print("    " + line.rstrip()[-110:], flush=True)
        if process.wait() != 0:
            raise ExperimentError(f"nnunet-dsmm: '{' '.join(args)}' failed (exit {process.returncode}); "
                                  f"see its log {log_path}")


def finished(fold_folder: str, epochs: int) -> bool:
    """Whether ``fold_folder`` holds a finished training of ``epochs`` epochs."""
    from nnunet_dsmm.trainers.base import SCHEDULE_FILE

    schedule = os.path.join(fold_folder, SCHEDULE_FILE)
    if not (os.path.isfile(os.path.join(fold_folder, "checkpoint_final.pth")) and os.path.isfile(schedule)):
        return False
    with open(schedule) as f:
        return json.load(f).get("num_epochs") == epochs


def training_folder(training: Training, dataset_name: str, configuration: str, fold: int | str, plans: str,
                    root: str) -> str:
    """The fold folder of ``training`` under the ``nnUNet_results`` folder ``root``."""
    from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier

    identifier = convert_trainer_plans_config_to_identifier(training.trainer, plans, configuration)
    return os.path.join(root, dataset_name, identifier, f"fold_{fold}")


def unfinished(trainings: Sequence[Training], dataset_name: str, configuration: str, fold: int | str, plans: str,
               out_dir: str, seed: int, report: Callable[[str], None] = say) -> list[Training]:
    """The trainings of ``seed`` that still have to run, in order; each finished one is reported as kept."""
    root = results_root(out_dir, seed)
    pending = []
    for training in trainings:
        if finished(training_folder(training, dataset_name, configuration, fold, plans, root), training.epochs):
            report(f"seed {seed}: {training.trainer} ({training.epochs} epochs) already trained, kept")
        else:
            pending.append(training)
    return pending


def train_seed(trainings: Sequence[Training], dataset_name: str, configuration: str, fold: int | str, plans: str,
               device: str, env: dict, out_dir: str, seed: int, log_dir: str,
               report: Callable[[str], None] = say) -> dict[str, float]:
    """Train ``trainings`` in order for one seed of dataset ``dataset_name`` (``DatasetXXX_Name``) under
    ``results_root(out_dir, seed)``; returns the wall time in seconds of each training that ran
    (finished ones are skipped)."""
    root = results_root(out_dir, seed)
    timings = {}
    for training in unfinished(trainings, dataset_name, configuration, fold, plans, out_dir, seed, report):
        report(f"seed {seed}: training {training.trainer} for {training.epochs} epochs ...")
        start = time.time()
        run_logged(["nnUNetv2_train", dataset_name, configuration, str(fold), "-p", plans, "-tr", training.trainer,
                    "-device", device],
                   {**env, "nnUNet_results": root, "DSMM_NUM_EPOCHS": str(training.epochs), "DSMM_SEED": str(seed)},
                   os.path.join(log_dir, f"seed{seed}_{training.trainer}.log"))
        timings[training.trainer] = round(time.time() - start, 1)
        report(f"seed {seed}: {training.trainer} done in {timings[training.trainer]:.0f} s")
    return timings
