"""Stage wiring: what an earlier stage is to the trainers that build on it (its role and override
variable), where its checkpoint lies, how its network is built and loaded frozen, and the errors
when it is missing or does not fit.

A trainer declares the stages it builds on with ``earlier_stages()`` (role -> trainer class, from
class attributes); stage 1 is ``DSMMTeacherTrainer`` (f of Eq. 2, the teacher T of Eq. 4-5) and
stage 2 is ``DSMMPretrainTrainer`` (φθ of Eq. 1-3). By convention the earlier stage is that
trainer's ``checkpoint_final.pth`` for the same dataset, plans, configuration and fold; the role's
environment variable points at another checkpoint instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from nnunet_dsmm.errors import DSMMError
from nnunet_dsmm.model.network import DSMMNetwork

#: encoder and decoder of a U-Net, without its prediction layers
BACKBONE_PREFIXES = ("encoder.", "decoder.stages.", "decoder.transpconvs.")
#: which checkpoint of an earlier stage is used by convention: checkpoint_final.pth (default) or, for the
#: paper's early stopping, checkpoint_best.pth (nnU-Net's best EMA pseudo Dice)
STAGE_CHECKPOINT_VARIABLE = "DSMM_STAGE_CHECKPOINT"
DEFAULT_STAGE_CHECKPOINT = "checkpoint_final.pth"


class StageError(DSMMError, RuntimeError):
    """An earlier stage cannot be used."""


class MissingStageError(StageError):
    """An earlier stage's checkpoint does not exist; the message prints the command that trains it."""


class StageMismatchError(StageError):
    """An earlier stage's network does not fit the network this trainer builds."""


@dataclass(frozen=True)
class StageRole:
    """What an earlier stage is to the trainers that build on it."""

    name: str
    #: environment variable with a checkpoint to use instead of the conventional one
    override_variable: str
    #: the stage's network outputs one channel per input channel (reconstruction), else segmentation
    reconstructs_channels: bool

    def num_outputs(self, num_input_channels: int, label_manager) -> int:
        return num_input_channels if self.reconstructs_channels else label_manager.num_segmentation_heads


TEACHER = StageRole("segmentation model f / teacher T", "DSMM_TEACHER_CHECKPOINT", reconstructs_channels=False)
PRETRAINED = StageRole("mask-reconstruction network φθ", "DSMM_PRETRAIN_CHECKPOINT", reconstructs_channels=True)


def build_stage_network(stage_trainer: type, role: StageRole, plans_manager, configuration_manager,
                        num_input_channels: int, label_manager) -> nn.Module:
    """The network ``stage_trainer`` trains, as the later stage uses it (no deep supervision)."""
    return stage_trainer.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                    role.num_outputs(num_input_channels, label_manager),
                                                    enable_deep_supervision=False)


def stage_checkpoint(trainer, stage_trainer: type, role: StageRole) -> str:
    """The checkpoint of the earlier stage: the role's override variable, else ``stage_trainer``'s
    checkpoint (``DSMM_STAGE_CHECKPOINT``, default checkpoint_final.pth) for the trainer's dataset,
    plans, configuration and fold."""
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    name = os.environ.get(STAGE_CHECKPOINT_VARIABLE) or DEFAULT_STAGE_CHECKPOINT
    path = os.environ.get(role.override_variable) or os.path.join(
        get_output_folder(trainer.plans_manager.dataset_name, stage_trainer.__name__,
                          trainer.plans_manager.plans_name, trainer.configuration_name, trainer.fold), name)
    if not os.path.isfile(path):
        dataset_id = trainer.plans_manager.dataset_name.split("_")[0].removeprefix("Dataset")
        raise MissingStageError(
            f"nnunet-dsmm: {type(trainer).__name__} needs the finished earlier stage {stage_trainer.__name__} "
            f"({role.name}), but {path} does not exist. Run it first:\n  nnUNetv2_train {dataset_id} "
            f"{trainer.configuration_name} {trainer.fold} -p {trainer.plans_manager.plans_name} "
            f"-tr {stage_trainer.__name__}\nor point {role.override_variable} at a checkpoint of a model with "
            f"the same plans.")
    return path


def _differences(expected: dict, found: dict) -> str:
    """Which keys of two state dicts are missing, unexpected or of another shape; '' if none."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    reshaped = [f"{k} {tuple(found[k].shape)} vs {tuple(expected[k].shape)}"
                for k in sorted(set(expected) & set(found)) if expected[k].shape != found[k].shape]
    groups = (("missing", missing), ("unexpected", unexpected), ("different shape", reshaped))
    return "; ".join(f"{label}: {keys[:4]}{' ...' if len(keys) > 4 else ''}" for label, keys in groups if keys)


def load_frozen_stage(trainer, stage_trainer: type, role: StageRole) -> nn.Module:
    """Build the earlier stage's network for ``trainer``'s plans, load its checkpoint, freeze it and
    put it in eval mode on the trainer's device."""
    network = build_stage_network(stage_trainer, role, trainer.plans_manager, trainer.configuration_manager,
                                  trainer.num_input_channels, trainer.label_manager)
    path = stage_checkpoint(trainer, stage_trainer, role)
    weights = torch.load(path, map_location="cpu", weights_only=False)["network_weights"]
    weights = {k.removeprefix("_orig_mod."): v for k, v in weights.items()}
    differences = _differences(network.state_dict(), weights)
    if differences:
        raise StageMismatchError(f"nnunet-dsmm: {path} ({role.name}) does not fit the network that "
                                 f"{stage_trainer.__name__} builds from plans {trainer.plans_manager.plans_name} "
                                 f"({differences})")
    network.load_state_dict(weights)
    network.requires_grad_(False)
    trainer.print_to_log_file(f"nnunet-dsmm: {role.name} ({stage_trainer.__name__}) loaded from {path}")
    return segmentation_model(network).eval().to(trainer.device)


def segmentation_model(network: nn.Module) -> nn.Module:
    """The network a later stage uses: a stage-3 model (student + M_rec) serves through its student."""
    return network.student if isinstance(network, DSMMNetwork) else network


def load_earlier_stages(trainer) -> dict[StageRole, nn.Module]:
    """Every stage ``trainer`` builds on, loaded and frozen."""
    return {role: load_frozen_stage(trainer, stage_trainer, role)
            for role, stage_trainer in type(trainer).earlier_stages().items()}


def backbone_state(state: dict) -> dict:
    """Encoder and decoder weights of a U-Net state dict, without its prediction layers."""
    return {k: v for k, v in state.items() if k.startswith(BACKBONE_PREFIXES)}


def check_same_backbone(teacher: nn.Module, student: nn.Module) -> None:
    """KD compares features scale by scale, so T and S need the same encoder and decoder."""
    differences = _differences(backbone_state(student.state_dict()), backbone_state(teacher.state_dict()))
    if differences:
        raise StageMismatchError(f"nnunet-dsmm: teacher and student architectures differ (KD needs the same "
                                 f"encoder and decoder): {differences}")
