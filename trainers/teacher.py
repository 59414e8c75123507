"""Stage 1: ``DSMMTeacherTrainer``, the segmentation model f of Eq. 2 and teacher T of Eq. 4-5
(also the "nnU-Net + modality dropout" baseline): nnU-Net's loss on zero-filled incomplete data
with per-sample modality dropout over the available channels."""

from __future__ import annotations

from dataclasses import replace

from nnunet_dsmm.masking import apply_channel_mask, modality_dropout
from nnunet_dsmm.trainers.base import DSMMTrainerBase, StepBatch, StepResult


class DSMMTeacherTrainer(DSMMTrainerBase):
    loss_terms = {"seg": "nnU-Net's Dice + CE/BCE of f on the modality-dropped data"}

    def compute_loss(self, step: StepBatch) -> StepResult:
        """MDrop on training batches; validation sees each case's available channels."""
        if step.training:
            step = replace(step, data=apply_channel_mask(step.data, modality_dropout(step.available)))
        return super().compute_loss(step)
