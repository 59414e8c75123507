"""Stage 2: mask-reconstruction pre-training with distribution approximation (Eq. 1-3).

φθ is a U-Net of the same plan whose M outputs reconstruct all M channels from MASK(x). The
loss is Eq. 1 on the real channels plus λ times the segmentation loss of the frozen stage-1
model f on the reconstruction (Eq. 2-3).
"""

from __future__ import annotations

import torch
from nnunetv2.training.loss.dice import get_tp_fp_fn_tn
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast

from nnunet_dsmm.losses import reconstruction_loss_eq1
from nnunet_dsmm.masking import mask_input
from nnunet_dsmm.network import freeze_unused_heads
from nnunet_dsmm.trainers.base import DSMMTrainerBase, load_frozen_stage
from nnunet_dsmm.trainers.teacher import DSMMTeacherTrainer

TEACHER_CHECKPOINT_ENV = "DSMM_TEACHER_CHECKPOINT"


class DSMMPretrainTrainer(DSMMTrainerBase):
    """Mask-Rec pre-training with distribution approximation (the paper's default, λ = 0.1)."""

    default_num_epochs = 600
    paper_batch_size = 2
    #: λ of Eq. 3; 0 disables distribution approximation (and the need for a stage-1 model)
    lambda_da: float = 0.1
    #: M3AE's spatial masking: cubic patches of this edge length, this share of them masked
    mask_patch_size: int = 16
    mask_ratio: float = 0.875

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False
        self.teacher: torch.nn.Module | None = None

    def initialize(self):
        super().initialize()
        if self.lambda_da > 0:
            teacher = DSMMTeacherTrainer.build_network_architecture(
                self.plans_manager, self.configuration_manager, self.num_input_channels,
                self.label_manager.num_segmentation_heads, enable_deep_supervision=False)
            self.teacher = load_frozen_stage(self, "DSMMTeacherTrainer", TEACHER_CHECKPOINT_ENV, teacher)
            if self._do_i_compile():  # as nnU-Net compiles φθ
                self.teacher = torch.compile(self.teacher)

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels, num_output_channels,
                                   enable_deep_supervision: bool = True) -> torch.nn.Module:
        """φθ: the plan's U-Net with one output per input channel (reconstruction), no deep supervision."""
        return freeze_unused_heads(DSMMTrainerBase.build_network_architecture(
            plans_manager, configuration_manager, num_input_channels, num_input_channels,
            enable_deep_supervision=False))

    def pretraining_loss(self, data: torch.Tensor, target: torch.Tensor, available: torch.Tensor):
        """Eq. 3 on one batch: returns (total, Eq. 1 term, DA term or None, f's output or None)."""
        masked = mask_input(data, available, self.mask_patch_size, self.mask_ratio)
        reconstruction = self.network(masked)
        rec = reconstruction_loss_eq1(reconstruction, data, available)
        if self.teacher is None:
            return rec, rec, None, None
        segmentation = self.teacher(reconstruction)
        da = self.loss(segmentation, target)
        return rec + self.lambda_da * da, rec, da, segmentation

    def train_step(self, batch: dict) -> dict:
        available = self.available_channels_of(batch["keys"])
        data = self.zero_missing(batch)
        target = batch["target"].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            loss = self.pretraining_loss(data, target, available)[0]
        self.backward_and_step(loss)
        return {"loss": loss.detach().cpu().numpy()}

    def validation_step(self, batch: dict) -> dict:
        """Eq. 3 on a validation batch; the pseudo Dice is f's Dice on the reconstruction."""
        available = self.available_channels_of(batch["keys"])
        data = self.zero_missing(batch)
        target = batch["target"].to(self.device, non_blocking=True)
        with torch.no_grad(), (autocast(self.device.type, enabled=True) if self.device.type == "cuda"
                               else dummy_context()):
            loss, _, _, segmentation = self.pretraining_loss(data, target, available)
        heads = self.label_manager.num_segmentation_heads - (0 if self.label_manager.has_regions else 1)
        if segmentation is None:
            zeros = torch.zeros(heads).numpy()
            return {"loss": loss.cpu().numpy(), "tp_hard": zeros, "fp_hard": zeros, "fn_hard": zeros}
        axes = [0] + list(range(2, segmentation.ndim))
        if self.label_manager.has_regions:
            onehot = (torch.sigmoid(segmentation) > 0.5).long()
        else:
            onehot = torch.zeros_like(segmentation).scatter_(1, segmentation.argmax(1, keepdim=True), 1)
            target_onehot = torch.zeros_like(segmentation).scatter_(1, target.long(), 1)
            onehot, target = onehot[:, 1:], target_onehot[:, 1:]
        tp, fp, fn, _ = get_tp_fp_fn_tn(onehot, target, axes=axes)
        return {"loss": loss.cpu().numpy(), "tp_hard": tp.cpu().numpy(), "fp_hard": fp.cpu().numpy(),
                "fn_hard": fn.cpu().numpy()}

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("nnunet-dsmm: stage 2 reconstructs modalities; there is no segmentation to "
                               "validate. Its checkpoint initialises DSMMTrainer.")


class DSMMPretrainNoDATrainer(DSMMPretrainTrainer):
    """Ablation (Table 2, "Mask-Rec"): reconstruction loss only, no distribution approximation."""

    lambda_da = 0.0
