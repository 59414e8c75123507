"""Stage 2: mask-reconstruction pre-training with distribution approximation (Eq. 1-3).

φθ is a U-Net of the same plan whose M outputs reconstruct all M channels from MASK(x). The
loss is Eq. 1 on the real channels plus λ times the segmentation loss of the frozen stage-1
model f on the reconstruction (Eq. 2-3).
"""

from __future__ import annotations

import torch

from nnunet_dsmm.model.losses import reconstruction_loss_eq1
from nnunet_dsmm.model.masking import mask_input
from nnunet_dsmm.model.network import FullModalPrediction, freeze_unused_heads
from nnunet_dsmm.nnunet.nnunet_internals import compiles
from nnunet_dsmm.trainers.base import DSMMTrainerBase, StepBatch, StepResult
from nnunet_dsmm.trainers.schedules import Stage
from nnunet_dsmm.trainers.stages import TEACHER
from nnunet_dsmm.trainers.teacher import DSMMTeacherTrainer


class DSMMPretrainTrainer(DSMMTrainerBase):
    """Mask-Rec pre-training with distribution approximation (the paper's default, λ = 0.1)."""

    stage = Stage.PRETRAINING
    paper_batch_size = 2
    #: λ of Eq. 3; 0 disables distribution approximation (and the need for a stage-1 model)
    lambda_da: float = 0.1
    #: M3AE's spatial masking: cubic patches of this edge length, this share of them masked
    mask_patch_size: int = 16
    mask_ratio: float = 0.875
    #: the stage-1 trainer whose f approximates the distribution
    teacher_trainer: type = DSMMTeacherTrainer
    loss_terms = {"eq1": "Eq. 1, reconstruction error on the real channels",
                  "da": "distribution approximation, L_seg of frozen f on the reconstruction (Eq. 3, times λ)"}

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False
        #: the frozen stage-1 model f of Eq. 3, predicting with the all-modalities code; None without DA
        self.frozen_f: torch.nn.Module | None = None

    @classmethod
    def earlier_stages(cls) -> dict:
        return {TEACHER: cls.teacher_trainer} if cls.lambda_da > 0 else {}

    def initialize(self):
        super().initialize()
        f = self.stage_networks.get(TEACHER)
        # f sees φθ's reconstruction, which is full-modal: a prompt-adaptive f gets the all-modalities code
        self.frozen_f = FullModalPrediction(f) if f is not None else None
        if self.frozen_f is not None and compiles(self):  # as nnU-Net compiles φθ
            self.frozen_f = torch.compile(self.frozen_f)

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels, num_output_channels,
                                   enable_deep_supervision: bool = True) -> torch.nn.Module:
        """φθ: the plan's U-Net with one output per input channel (reconstruction), no deep supervision."""
        return freeze_unused_heads(DSMMTrainerBase.build_network_architecture(
            plans_manager, configuration_manager, num_input_channels, num_input_channels,
            enable_deep_supervision=False))

    def compute_loss(self, step: StepBatch) -> StepResult:
        """The terms of Eq. 3 (training and validation alike); the pseudo Dice is f's on the reconstruction."""
        reconstruction = self.network(mask_input(step.data, step.available, self.mask_patch_size, self.mask_ratio))
        terms = {"eq1": reconstruction_loss_eq1(reconstruction, step.data, step.available)}
        if self.frozen_f is None:
            return StepResult(terms, None)
        segmentation = self.frozen_f(reconstruction)
        terms["da"] = self.loss(segmentation, step.target)
        return StepResult(terms, segmentation)

    def total_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Eq. 3."""
        return terms["eq1"] + self.lambda_da * terms["da"] if "da" in terms else terms["eq1"]

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("nnunet-dsmm: stage 2 reconstructs modalities; there is no segmentation to "
                               "validate. Its checkpoint initialises DSMMTrainer.")


class DSMMPretrainNoDATrainer(DSMMPretrainTrainer):
    """Ablation (Table 2, "Mask-Rec"): reconstruction loss only, no distribution approximation."""

    lambda_da = 0.0
