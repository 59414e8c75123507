"""Stage 1. ``DSMMBaselineTrainer``: the "nnU-Net + modality dropout" baseline, nnU-Net's U-Net and
loss on zero-filled incomplete data with per-sample modality dropout over the available channels
(``DSMMTrainerBase.compute_loss``). ``DSMMTeacherTrainer``: the segmentation model f of Eq. 2-3 and
teacher T of Eq. 4-5, the same training with prompt-guided modality adaptation (Eq. 6), as the
paper integrates it into teacher and student; ``DSMMSingleStageTrainer`` is that training under the
name a user picks when it is the model they want."""

from __future__ import annotations

import torch

from nnunet_dsmm.model.network import build_segmentation_network
from nnunet_dsmm.model.text_encoder import embedding_dim
from nnunet_dsmm.trainers.base import DSMMTrainerBase
from nnunet_dsmm.trainers.schedules import Stage


class DSMMBaselineTrainer(DSMMTrainerBase):
    """nnU-Net + modality dropout: the baseline that ``evaluate``, the demo and Table 1 compare with."""

    loss_terms = {"seg": "nnU-Net's Dice + CE/BCE of the network on the modality-dropped data"}


class DSMMBaselineEpochMatchedTrainer(DSMMBaselineTrainer):
    """The baseline trained as long as stages 2 and 3 together (``Stage.EPOCH_MATCHED``; with
    ``DSMM_NUM_EPOCHS``, give it the sum of the two stages' epochs): DSMMTrainer starts from stage 2's
    weights and trains on, so a fair baseline gets the same number of epochs."""

    stage = Stage.EPOCH_MATCHED


class DSMMTeacherTrainer(DSMMBaselineTrainer):
    """f / T: the baseline's training with hypernetwork prediction layers driven by the prompt of the
    sample's code after modality dropout ⊕ pooled visual features (Eq. 6). Stages 2 and 3 give it the
    all-modalities code wherever it sees full-modal input (φθ's reconstruction, x̂_full)."""

    prompt_source = "text"

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision: bool = True) -> torch.nn.Module:
        return build_segmentation_network(configuration_manager, num_input_channels, num_output_channels,
                                          enable_deep_supervision, cls.prompt_source, embedding_dim(cls.text_encoder))


class DSMMSingleStageTrainer(DSMMTeacherTrainer):
    """The stage-1 training as a model of its own: nnU-Net + modality dropout with prompt-guided prediction
    layers (Eq. 6), one training, no pre-training and no distillation. On our synthetic data it is the most
    accurate trainer (docs/results/ablations.md, complete-then-distill study). ``DSMMTeacherTrainer`` is
    the same training under the name the later stages look for."""


class DSMMTeacherTrainerBatch1(DSMMTeacherTrainer):
    """Complete-then-distill study, hypothesis "batch size": stage 1 at the batch size of 1 the paper gives
    every segmentation training ("batch size 1") and that stage 3 uses, instead of the plan's, so that
    stage 1 alone and the stage-3 models see as many samples per iteration."""

    paper_batch_size = 1
