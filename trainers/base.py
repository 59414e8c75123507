"""Shared base of the DSMM trainers: the paper's optimiser and schedule, schedules settable by
environment variables (recorded, and checked when a run is continued), each training case's
channel availability, and the one training and validation step of every stage.

A stage says what it optimises through one hook, ``compute_loss(step) -> StepResult``: the named
loss terms of a batch (and the segmentation whose pseudo Dice validation reports); ``total_loss``
weights the terms (a plain sum unless a stage's equation weights them). The terms are logged per
epoch in nnU-Net's logger (``train_loss_<term>``) and in the training log.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from glob import glob
from typing import NamedTuple

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, load_pickle, save_json
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from torch import distributed as dist

from nnunet_dsmm.data.raw_data import available_channels, num_channels
from nnunet_dsmm.model.masking import apply_channel_mask, modality_dropout
from nnunet_dsmm.model.modalities import channel_names, prompts_in_index_order
from nnunet_dsmm.model.text_encoder import DEFAULT_TEXT_ENCODER, embed_prompts
from nnunet_dsmm.nnunet.nnunet_internals import logged_values
from nnunet_dsmm.trainers.cosine_lr import CosineLRScheduler
from nnunet_dsmm.trainers.schedules import (
    CPU_THREADS_VARIABLE,
    FINAL_VALIDATION_VARIABLE,
    SCHEDULE_FILE,
    SCHEDULE_VARIABLES,
    SCHEDULES,
    SEED_VARIABLE,
    ScheduleMismatchError,
    Stage,
    final_validation_from_environment,
    positive_int_from_env,
    schedule_from_environment,
    seed_from_environment,
)
from nnunet_dsmm.trainers.stages import load_earlier_stages
from nnunet_dsmm.trainers.validation import pseudo_dice_counts

#: prefix of the per-term loss entries in nnU-Net's logger
TERM_LOG_PREFIX = "train_loss_"


@dataclass(frozen=True)
class StepBatch:
    """One batch on the trainer's device: ``data`` with each sample's missing channels zeroed (the
    augmentation adds noise to them), ``target`` (a list, highest resolution first, with deep
    supervision), ``available`` (B, M) bool, and whether the step trains."""

    data: torch.Tensor
    target: torch.Tensor | list[torch.Tensor]
    available: torch.Tensor
    training: bool

    @property
    def full_resolution_target(self) -> torch.Tensor:
        return self.target[0] if isinstance(self.target, list) else self.target


class StepResult(NamedTuple):
    """The named loss terms of one batch, and the segmentation output (list with deep supervision)
    whose pseudo Dice validation reports; None when the stage segments nothing."""

    terms: dict[str, torch.Tensor]
    segmentation: torch.Tensor | list[torch.Tensor] | None


class DSMMTrainerBase(nnUNetTrainer):
    """Adam (lr 3e-4, weight decay 5e-4) with cosine decay, as in the paper; schedule lengths
    from ``DSMM_NUM_EPOCHS``, ``DSMM_NUM_ITERATIONS_PER_EPOCH``, ``DSMM_NUM_VAL_ITERATIONS_PER_EPOCH``."""

    paper_initial_lr: float = 3e-4
    paper_weight_decay: float = 5e-4
    #: the stage this trainer trains: its epochs under each schedule (``schedules.Schedule.epochs``)
    stage: Stage = Stage.SEGMENTATION
    #: batch size of the paper's schedule; None keeps the plan's
    paper_batch_size: int | None = None
    #: validation batches are modality-dropped too, so that the EMA pseudo Dice that picks nnU-Net's
    #: checkpoint_best.pth measures missing-modality performance (the paper's early stopping)
    validate_under_modality_dropout: bool = True
    #: the loss terms ``compute_loss`` returns, as the training log explains them
    loss_terms: dict[str, str] = {"seg": "nnU-Net's loss of the network's segmentation"}
    #: prompt-guided modality adaptation (Eq. 6) of the segmentation network this stage trains, fed by "text"
    #: (CLIP prompt embeddings), "binary" (a 2-layer MLP of the binary code, Fig. 5) or "unconditioned" (a zero
    #: indicator, control; see network.PROMPT_SOURCES); None: a plain U-Net
    prompt_source: str | None = None
    #: registered text encoder of the prompts (nnunet_dsmm.model.text_encoder.TEXT_ENCODERS)
    text_encoder: str = DEFAULT_TEXT_ENCODER

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        #: the seed of this run (``DSMM_SEED``), None when unseeded
        self.dsmm_seed = seed_from_environment()
        if self.dsmm_seed is not None:
            random.seed(self.dsmm_seed)
            np.random.seed(self.dsmm_seed)
            torch.manual_seed(self.dsmm_seed)
        if os.environ.get(CPU_THREADS_VARIABLE) and self.device.type == "cpu":  # --jobs N shares the cores
            torch.set_num_threads(positive_int_from_env(CPU_THREADS_VARIABLE, 1))
            self.print_to_log_file(f"nnunet-dsmm: torch threads: {torch.get_num_threads()} ({CPU_THREADS_VARIABLE})")
        self.initial_lr = self.paper_initial_lr
        self.weight_decay = self.paper_weight_decay
        self.num_epochs = SCHEDULES["paper"].epochs(self.stage)
        #: the schedule of this run (also in debug.json and in SCHEDULE_FILE)
        self.dsmm_schedule = schedule_from_environment({a: getattr(self, a) for a in SCHEDULE_VARIABLES})
        for attribute, value in self.dsmm_schedule.items():
            setattr(self, attribute, value)
        #: whether nnU-Net's final validation runs after training (``DSMM_FINAL_VALIDATION``)
        self.final_validation = final_validation_from_environment()
        self.num_modalities = num_channels(dataset_json)
        #: preprocessed case identifier -> (M,) bool channel availability; read from the .pkl files on first use
        self.availability: dict[str, torch.Tensor] = {}
        #: the frozen networks of the earlier stages this trainer builds on, by role (see ``earlier_stages``)
        self.stage_networks: dict = {}

    @classmethod
    def earlier_stages(cls) -> dict:
        """The stages this trainer builds on: ``trainers.stages`` role -> trainer class of that stage."""
        return {}

    @property
    def network_module(self) -> torch.nn.Module:
        """The trained network without nnU-Net's DDP and torch.compile wrappers."""
        module = self.network.module if self.is_ddp else self.network
        return getattr(module, "_orig_mod", module)

    def prompt_adaptive_network(self) -> torch.nn.Module:
        """The network whose prediction layers the prompts drive (``prompt_source`` is not None)."""
        return self.network_module

    def initialize(self):
        super().initialize()
        self.stage_networks = load_earlier_stages(self)
        if self.prompt_source == "text":
            prompts = prompts_in_index_order(channel_names(self.dataset_json))
            self.print_to_log_file(f"nnunet-dsmm: embedding {len(prompts)} prompts, e.g. {prompts[-1]!r}")
            self.prompt_adaptive_network().prompt_embeddings.copy_(
                embed_prompts(prompts, self.text_encoder, self.print_to_log_file))

    def _set_batch_size_and_oversample(self):
        """The paper's batch size on one GPU. nnU-Net forces the last round(B * 0.33) samples of a batch
        to contain foreground, which is none at B = 1; a batch of one is then forced with probability
        0.33 instead (nnU-Net's probabilistic mode), the share nnU-Net aims for at its own batch sizes."""
        super()._set_batch_size_and_oversample()
        if self.paper_batch_size is not None and not self.is_ddp:
            self.batch_size = self.paper_batch_size
        if self.batch_size == 1 and self.oversample_foreground_percent > 0:
            self.probabilistic_oversampling = True

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, CosineLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    # ------------------------------------------------------------------ schedule
    def on_train_start(self):
        """Refuse to continue a run under another schedule, then record this run's schedule."""
        path = join(self.output_folder, SCHEDULE_FILE)
        recorded = load_json(path) if isfile(path) else None
        if recorded is not None and recorded != self.dsmm_schedule:
            if self.current_epoch > 0:
                raise ScheduleMismatchError(
                    f"nnunet-dsmm: {self.output_folder} holds a run of {type(self).__name__} started with the "
                    f"schedule {recorded}; continuing it (--c) with {self.dsmm_schedule} would mix two schedules. "
                    f"Set {', '.join(SCHEDULE_VARIABLES.values())} as for that run, or start anew without --c "
                    f"(which replaces that run).")
            self.print_to_log_file(f"nnunet-dsmm WARNING: this new run replaces an earlier run in this folder "
                                   f"that had the schedule {recorded}")
        super().on_train_start()
        if self.local_rank == 0:
            save_json(self.dsmm_schedule, path)
        self.print_to_log_file(f"nnunet-dsmm: schedule {self.dsmm_schedule} (set by "
                               f"{', '.join(SCHEDULE_VARIABLES.values())}; default: the paper's), "
                               f"{SEED_VARIABLE}={self.dsmm_seed}")
        self.print_to_log_file("nnunet-dsmm: loss terms logged per epoch: " +
                               "; ".join(f"{name} = {text}" for name, text in self.loss_terms.items()))

    def perform_actual_validation(self, save_probabilities: bool = False):
        """nnU-Net's final validation, unless ``DSMM_FINAL_VALIDATION=0``."""
        if self.final_validation:
            return super().perform_actual_validation(save_probabilities)
        self.print_to_log_file(f"nnunet-dsmm: nnU-Net's final validation skipped ({FINAL_VALIDATION_VARIABLE}=0); "
                               f"to run it later, unset it and add --val to the same nnUNetv2_train command")

    # ------------------------------------------------------------------ one step
    def available_channels_of(self, keys) -> torch.Tensor:
        """(B, M) bool availability of the batch's cases, from their preprocessed properties."""
        if not self.availability:
            for pkl in glob(os.path.join(self.preprocessed_dataset_folder, "*.pkl")):
                identifier = os.path.basename(pkl)[: -len(".pkl")]
                available = available_channels(load_pickle(pkl), self.num_modalities)
                self.availability[identifier] = torch.from_numpy(available)
        return torch.stack([self.availability[k] for k in keys]).to(self.device)

    def step_batch(self, batch: dict, training: bool) -> StepBatch:
        """The loader's batch on the device, with missing channels re-zeroed."""
        available = self.available_channels_of(batch["keys"])
        data = apply_channel_mask(batch["data"].to(self.device, non_blocking=True), available)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        return StepBatch(data, target, available, training)

    def segmentation_input(self, step: StepBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """What a segmentation network sees, and its (B, M) channel code: a modality-dropped subset of
        the available channels (MDrop) in training, and in validation too while
        ``validate_under_modality_dropout`` (else all available channels)."""
        dropout = step.training or self.validate_under_modality_dropout
        code = modality_dropout(step.available) if dropout else step.available
        return apply_channel_mask(step.data, code), code

    def compute_loss(self, step: StepBatch) -> StepResult:
        """The hook of each stage. Here: nnU-Net's loss of the network's segmentation of its input (a
        prompt-adaptive network also gets the input's code, after modality dropout)."""
        data, code = self.segmentation_input(step)
        output = self.network(data) if self.prompt_source is None else self.network(data, code)
        return StepResult({"seg": self.loss(output, step.target)}, output)

    def total_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss that is optimised, from the named terms (their sum unless a stage weights them)."""
        return sum(terms.values())

    def autocast(self):
        """Mixed precision on CUDA, as nnU-Net trains."""
        return torch.autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context()

    def train_step(self, batch: dict) -> dict:
        step = self.step_batch(batch, training=True)
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            terms = self.compute_loss(step).terms
            loss = self.total_loss(terms)
        # nnU-Net's update: through the GradScaler when there is one, gradient norm clipped at 12
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
        values = torch.stack([t.detach().float() for t in terms.values()]).cpu().tolist()
        return {"loss": loss.detach().cpu().numpy(), "terms": [dict(zip(terms, values))]}

    def validation_step(self, batch: dict) -> dict:
        step = self.step_batch(batch, training=False)
        with torch.no_grad(), self.autocast():
            terms, segmentation = self.compute_loss(step)
            loss = self.total_loss(terms)
        counts = pseudo_dice_counts(self.label_manager, segmentation, step.full_resolution_target)
        return {"loss": loss.detach().cpu().numpy(), **counts}

    # ------------------------------------------------------------------ logging of the terms
    def on_train_epoch_end(self, train_outputs: list[dict]):
        super().on_train_epoch_end(train_outputs)
        steps = [terms for output in train_outputs for terms in output["terms"]]
        if self.is_ddp:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, steps)
            steps = [terms for rank in gathered for terms in rank]
        names = list(dict.fromkeys(name for terms in steps for name in terms))
        means = {name: float(np.mean([terms[name] for terms in steps if name in terms])) for name in names}
        logged = logged_values(self)
        for name in means:  # a term first seen now (or after resuming an older run) starts with NaN epochs
            logged.setdefault(TERM_LOG_PREFIX + name, [float("nan")] * self.current_epoch)
        for key in [k for k in logged if k.startswith(TERM_LOG_PREFIX)]:
            self.logger.log(key, means.get(key.removeprefix(TERM_LOG_PREFIX), float("nan")), self.current_epoch)
        self.print_to_log_file("loss terms: " + ", ".join(f"{name} {value:.4f}" for name, value in means.items()))
