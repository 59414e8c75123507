"""Stage 3: ``DSMMTrainer``, complete-then-distill with prompt-guided modality adaptation (Eq. 4-7),
and the paper's ablations as one-attribute subclasses."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.helpers import dummy_context, softmax_helper_dim1
from torch import autocast

from nnunet_dsmm.losses import distillation_loss_eq4
from nnunet_dsmm.masking import apply_channel_mask, modality_dropout
from nnunet_dsmm.modalities import channel_names, prompt
from nnunet_dsmm.network import TeacherOutputs, build_dsmm_network, code_from_index, freeze_unused_heads
from nnunet_dsmm.text_encoder import embed_prompts, embedding_dim
from nnunet_dsmm.trainers.base import DSMMTrainerBase, MissingStageError, load_frozen_stage
from nnunet_dsmm.trainers.pretrain import TEACHER_CHECKPOINT_ENV, DSMMPretrainTrainer
from nnunet_dsmm.trainers.teacher import DSMMTeacherTrainer

PRETRAIN_CHECKPOINT_ENV = "DSMM_PRETRAIN_CHECKPOINT"
BACKBONE_PREFIXES = ("encoder.", "decoder.stages.", "decoder.transpconvs.")


def backbone_state(state: dict) -> dict:
    """Encoder and decoder weights of a U-Net state dict, without its prediction layers."""
    return {k: v for k, v in state.items() if k.startswith(BACKBONE_PREFIXES)}


class DSMMTrainer(DSMMTrainerBase):
    """Eq. 7: L_task + α·L_Mrec + β·L_KD, student with hypernetwork heads (Eq. 6)."""

    paper_batch_size = 1
    alpha: float = 1.0
    beta: float = 0.1
    #: registered text encoder (nnunet_dsmm.text_encoder.TEXT_ENCODERS)
    text_encoder: str = "clip-vit-b-32"
    #: "text": CLIP prompt embeddings; "binary": 2-layer MLP of the binary code (Fig. 5)
    prompt_source: str = "text"
    #: complete-then-distill: a frozen stage-1 teacher distils into the student
    use_teacher: bool = True
    #: the teacher sees x̂_full completed by M_rec (False: only the available real channels, Table 3 b)
    complete_with_recovery: bool = True
    #: M_rec is refined by L_Mrec (False: frozen M_rec, Table 3 c)
    train_recovery: bool = True
    #: recompute T's and M_rec's inner activations stage by stage in the backward pass instead of keeping them
    checkpoint_activations: bool = False

    @classmethod
    def refines_recovery(cls) -> bool:
        """Whether L_Mrec trains M_rec in this variant."""
        return cls.use_teacher and cls.complete_with_recovery and cls.train_recovery and cls.alpha > 0

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision: bool = True) -> torch.nn.Module:
        """Student + M_rec; M_rec is frozen here (before any DDP wrapping) when the variant does not refine it."""
        network = build_dsmm_network(plans_manager, configuration_manager, num_input_channels, num_output_channels,
                                     enable_deep_supervision, cls.prompt_source, embedding_dim(cls.text_encoder))
        freeze_unused_heads(network.recovery.requires_grad_(cls.refines_recovery()))
        return network

    @property
    def network_module(self):
        module = self.network.module if self.is_ddp else self.network
        return getattr(module, "_orig_mod", module)

    def initialize(self):
        super().initialize()
        net = self.network_module
        phi = DSMMPretrainTrainer.build_network_architecture(self.plans_manager, self.configuration_manager,
                                                             self.num_input_channels, self.num_input_channels)
        phi_state = load_frozen_stage(self, "DSMMPretrainTrainer", PRETRAIN_CHECKPOINT_ENV, phi).state_dict()
        net.recovery.load_state_dict(phi_state)
        net.student.load_state_dict(backbone_state(phi_state), strict=False)
        net.recover_every_step = self.is_ddp and self.refines_recovery()
        net.checkpoint_recovery = self.checkpoint_activations
        self.teacher = None
        if self.use_teacher:
            teacher = DSMMTeacherTrainer.build_network_architecture(
                self.plans_manager, self.configuration_manager, self.num_input_channels,
                self.label_manager.num_segmentation_heads, enable_deep_supervision=False)
            self.teacher = load_frozen_stage(self, "DSMMTeacherTrainer", TEACHER_CHECKPOINT_ENV, teacher)
            self.check_same_backbone(self.teacher, net.student)
            self.teacher_outputs = TeacherOutputs(self.teacher, self.refines_recovery(), self.checkpoint_activations)
            if self._do_i_compile():  # as nnU-Net compiles the trained network
                self.teacher_outputs = torch.compile(self.teacher_outputs)
        self.teacher_loss = self.segmentation_loss()
        if self.prompt_source == "text":
            names = channel_names(self.dataset_json)
            prompts = [prompt(code_from_index(i, len(names)), names) for i in range(2 ** len(names) - 1)]
            self.print_to_log_file(f"nnunet-dsmm: embedding {len(prompts)} prompts, e.g. {prompts[-1]!r}")
            net.student.prompt_embeddings.copy_(embed_prompts(prompts, self.text_encoder, self.print_to_log_file))

    @staticmethod
    def check_same_backbone(teacher: torch.nn.Module, student: torch.nn.Module) -> None:
        """KD compares features scale by scale, so T and S need the same encoder and decoder."""
        t, s = backbone_state(teacher.state_dict()), backbone_state(student.state_dict())
        differ = sorted(set(t) ^ set(s)) + sorted(k for k in set(t) & set(s) if t[k].shape != s[k].shape)
        if differ:
            raise MissingStageError(f"nnunet-dsmm: teacher and student architectures differ (KD needs the same "
                                    f"encoder/decoder); first differences: {differ[:5]}")

    def segmentation_loss(self) -> torch.nn.Module:
        """nnU-Net's Dice + CE (Dice + BCE for regions) at full resolution: L_seg of Eq. 5."""
        loss = super()._build_loss()
        return loss.loss if isinstance(loss, DeepSupervisionWrapper) else loss

    def _build_loss(self):
        """L_task: Dice loss of the student with nnU-Net's deep-supervision weighting."""
        regions = self.label_manager.has_regions
        loss = MemoryEfficientSoftDiceLoss(apply_nonlin=torch.sigmoid if regions else softmax_helper_dim1,
                                           batch_dice=self.configuration_manager.batch_dice, do_bg=regions,
                                           smooth=1e-5, ddp=self.is_ddp)
        if not self.enable_deep_supervision:
            return loss
        weights = np.array([1 / (2**i) for i in range(len(self._get_deep_supervision_scales()))])
        weights[-1] = 1e-6 if self.is_ddp and not self._do_i_compile() else 0
        return DeepSupervisionWrapper(loss, weights / weights.sum())

    def ctd_losses(self, real: torch.Tensor, available: torch.Tensor, keep: torch.Tensor, target) -> dict:
        """The terms of Eq. 7 for one batch: ``task``, ``mrec`` (Eq. 5) and ``kd`` (Eq. 4)."""
        student_input = apply_channel_mask(real, keep)
        if self.teacher is None:
            return {"task": self.loss(self.network(student_input, keep), target)}
        completion_mask = available if self.complete_with_recovery else torch.ones_like(available)
        segmentation, student_features, x_full = self.network(student_input, keep, real=real,
                                                              available=completion_mask)
        # T is frozen: it needs a graph only to pass L_Mrec's gradient back to M_rec's completions
        with nullcontext() if x_full.requires_grad else torch.no_grad():
            teacher_features, teacher_logits = self.teacher_outputs(x_full)
        terms = {"task": self.loss(segmentation, target),
                 "kd": distillation_loss_eq4(teacher_features, student_features)}
        if teacher_logits is not None:  # a constant when no sample misses a channel, still reported
            terms["mrec"] = self.teacher_loss(teacher_logits, target[0] if isinstance(target, list) else target)
        return terms

    def total_loss(self, terms: dict) -> torch.Tensor:
        """Eq. 7."""
        total = terms["task"]
        if "mrec" in terms:
            total = total + self.alpha * terms["mrec"]
        if "kd" in terms:
            total = total + self.beta * terms["kd"]
        return total

    def train_step(self, batch: dict) -> dict:
        available = self.available_channels_of(batch["keys"])
        real = self.zero_missing(batch)
        keep = modality_dropout(available)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            loss = self.total_loss(self.ctd_losses(real, available, keep, target))
        self.backward_and_step(loss)
        return {"loss": loss.detach().cpu().numpy()}


class DSMMTrainerNoCTD(DSMMTrainer):
    """Ablation (Table 2, "+ PGMA"): prompt-guided adaptation without complete-then-distill."""

    use_teacher = False


class DSMMTrainerFrozenRecovery(DSMMTrainer):
    """Ablation (Table 3 c): complete-then-distill with a frozen M_rec (no L_Mrec)."""

    train_recovery = False


class DSMMTrainerAvailableKD(DSMMTrainer):
    """Ablation (Table 3 b): KD from a teacher that sees only the available real modalities."""

    complete_with_recovery = False


class DSMMTrainerLowMemory(DSMMTrainer):
    """Same training as DSMMTrainer with less memory: T's and M_rec's inner activations are recomputed
    stage by stage in the backward pass (one more forward pass of each per step)."""

    checkpoint_activations = True


class DSMMTrainerBinaryCode(DSMMTrainer):
    """Ablation (Fig. 5): the hypernetwork is fed by the binary code through a 2-layer MLP, no text."""

    prompt_source = "binary"
