"""Shared base of the DSMM trainers: the paper's optimiser and schedule, schedules settable by
environment variables, and each training case's channel availability."""

from __future__ import annotations

import math
import os
from glob import glob

import torch
from batchgenerators.utilities.file_and_folder_operations import load_pickle
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_dsmm.masking import apply_channel_mask
from nnunet_dsmm.planners.preprocessor import available_channels
from nnunet_dsmm.raw_data import num_channels

SCHEDULE_VARIABLES = {
    "num_epochs": "DSMM_NUM_EPOCHS",
    "num_iterations_per_epoch": "DSMM_NUM_ITERATIONS_PER_EPOCH",
    "num_val_iterations_per_epoch": "DSMM_NUM_VAL_ITERATIONS_PER_EPOCH",
}


def _positive_int_from_env(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"nnunet-dsmm: environment variable {name}={value!r} must be a positive integer")
    return int(value)


class CosineLRScheduler(torch.optim.lr_scheduler.LRScheduler):
    """Cosine decay from ``initial_lr`` to 0 over ``max_steps`` epochs; ``step(epoch)`` like nnU-Net's."""

    def __init__(self, optimizer: torch.optim.Optimizer, initial_lr: float, max_steps: int):
        self.initial_lr = initial_lr
        self.max_steps = max_steps
        self.ctr = 0
        super().__init__(optimizer, -1)

    def step(self, current_step: int | None = None) -> None:
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = 0.5 * self.initial_lr * (1 + math.cos(math.pi * min(current_step, self.max_steps) / self.max_steps))
        for group in self.optimizer.param_groups:
            group["lr"] = lr


class DSMMTrainerBase(nnUNetTrainer):
    """Adam (lr 3e-4, weight decay 5e-4) with cosine decay, as in the paper; schedule lengths
    from ``DSMM_NUM_EPOCHS``, ``DSMM_NUM_ITERATIONS_PER_EPOCH``, ``DSMM_NUM_VAL_ITERATIONS_PER_EPOCH``."""

    paper_initial_lr: float = 3e-4
    paper_weight_decay: float = 5e-4
    default_num_epochs: int = 1000
    #: batch size of the paper's schedule; None keeps the plan's
    paper_batch_size: int | None = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = self.paper_initial_lr
        self.weight_decay = self.paper_weight_decay
        self.num_epochs = self.default_num_epochs
        for attribute, variable in SCHEDULE_VARIABLES.items():
            setattr(self, attribute, _positive_int_from_env(variable, getattr(self, attribute)))
        self.num_modalities = num_channels(dataset_json)
        #: preprocessed case identifier -> (M,) bool channel availability; read from the .pkl files on first use
        self.availability: dict[str, torch.Tensor] = {}

    def _set_batch_size_and_oversample(self):
        super()._set_batch_size_and_oversample()
        if self.paper_batch_size is not None and not self.is_ddp:
            self.batch_size = self.paper_batch_size

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, CosineLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def available_channels_of(self, keys) -> torch.Tensor:
        """(B, M) bool availability of the batch's cases, from their preprocessed properties."""
        if not self.availability:
            for pkl in glob(os.path.join(self.preprocessed_dataset_folder, "*.pkl")):
                identifier = os.path.basename(pkl)[: -len(".pkl")]
                mask = available_channels(load_pickle(pkl), self.num_modalities)
                self.availability[identifier] = torch.from_numpy(mask)
        return torch.stack([self.availability[k] for k in keys]).to(self.device)

    def zero_missing(self, batch: dict) -> torch.Tensor:
        """The batch's data on the device with missing channels re-zeroed (augmentation adds noise)."""
        available = self.available_channels_of(batch["keys"])
        return apply_channel_mask(batch["data"].to(self.device, non_blocking=True), available)

    def validation_step(self, batch: dict) -> dict:
        return super().validation_step({**batch, "data": self.zero_missing(batch)})

    def backward_and_step(self, loss: torch.Tensor) -> None:
        """nnU-Net's update: through the GradScaler when there is one, gradient clipping at 12."""
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 12)
            self.optimizer.step()


class MissingStageError(RuntimeError):
    """An earlier stage's checkpoint is missing or does not fit; the message says what to run."""


def load_frozen_stage(trainer: nnUNetTrainer, stage_trainer: str, env_var: str, network: torch.nn.Module
                      ) -> torch.nn.Module:
    """Load ``stage_trainer``'s ``checkpoint_final.pth`` for the same dataset, plans, configuration
    and fold (or the path in ``env_var``) into ``network``, freeze it and put it in eval mode."""
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    path = os.environ.get(env_var) or os.path.join(
        get_output_folder(trainer.plans_manager.dataset_name, stage_trainer, trainer.plans_manager.plans_name,
                          trainer.configuration_name, trainer.fold), "checkpoint_final.pth")
    if not os.path.isfile(path):
        dataset_id = trainer.plans_manager.dataset_name.split("_")[0].removeprefix("Dataset")
        raise MissingStageError(
            f"nnunet-dsmm: {type(trainer).__name__} needs the finished earlier stage {stage_trainer}, but {path} "
            f"does not exist. Run it first:\n  nnUNetv2_train {dataset_id} {trainer.configuration_name} "
            f"{trainer.fold} -p {trainer.plans_manager.plans_name} -tr {stage_trainer}\n"
            f"or point {env_var} at a checkpoint_final.pth of a model with the same plans.")
    weights = torch.load(path, map_location="cpu", weights_only=False)["network_weights"]
    weights = {k.removeprefix("_orig_mod."): v for k, v in weights.items()}
    expected = network.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(weights) if expected[k].shape != weights[k].shape)
    if missing or unexpected or reshaped:
        details = "; ".join(f"{label}: {keys[:4]}{' ...' if len(keys) > 4 else ''}"
                            for label, keys in (("missing", missing), ("unexpected", unexpected),
                                                ("different shape", [f"{k} {tuple(weights[k].shape)} vs "
                                                                     f"{tuple(expected[k].shape)}" for k in reshaped]))
                            if keys)
        raise MissingStageError(f"nnunet-dsmm: {path} does not fit the architecture {type(trainer).__name__} "
                                f"builds from plans {trainer.plans_manager.plans_name} ({details})")
    network.load_state_dict(weights)
    network.requires_grad_(False)
    return network.eval().to(trainer.device)
