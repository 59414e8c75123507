"""Stage 1: ``DSMMTeacherTrainer``, the segmentation model f of Eq. 2 (also the
"nnU-Net + modality dropout" baseline): nnU-Net training on zero-filled incomplete data with
per-sample modality dropout over the available channels."""

from __future__ import annotations

from nnunet_dsmm.masking import apply_channel_mask, modality_dropout
from nnunet_dsmm.trainers.base import DSMMTrainerBase


class DSMMTeacherTrainer(DSMMTrainerBase):
    def train_step(self, batch: dict) -> dict:
        available = self.available_channels_of(batch["keys"])
        data = apply_channel_mask(batch["data"].to(self.device, non_blocking=True), modality_dropout(available))
        return super().train_step({**batch, "data": data})
