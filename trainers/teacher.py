"""Stage 1: ``DSMMTeacherTrainer``, the segmentation model f of Eq. 2 and teacher T of Eq. 4-5
(also the "nnU-Net + modality dropout" baseline): nnU-Net's loss on zero-filled incomplete data
with per-sample modality dropout over the available channels (``DSMMTrainerBase.compute_loss``)."""

from __future__ import annotations

from nnunet_dsmm.trainers.base import DSMMTrainerBase


class DSMMTeacherTrainer(DSMMTrainerBase):
    loss_terms = {"seg": "nnU-Net's Dice + CE/BCE of f on the modality-dropped data"}


class DSMMBaselineComputeMatchedTrainer(DSMMTeacherTrainer):
    """The baseline trained as long as stages 2 and 3 together (600 + 1000 epochs by default; with
    ``DSMM_NUM_EPOCHS``, give it the sum of the two stages' epochs): DSMMTrainer starts from stage 2's
    weights and trains on, so a fair baseline gets the same number of epochs."""

    default_num_epochs = 600 + 1000
