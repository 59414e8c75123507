"""Stage 3: ``DSMMTrainer``, complete-then-distill with prompt-guided modality adaptation (Eq. 4-7).
The study's variants (the paper's ablations and our readings) subclass it in ``dsmm_variants``."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.helpers import softmax_helper_dim1

from nnunet_dsmm.model.losses import feature_distances
from nnunet_dsmm.model.network import TeacherOutputs, build_dsmm_network, complete_code, freeze_unused_heads
from nnunet_dsmm.model.text_encoder import embedding_dim
from nnunet_dsmm.nnunet.nnunet_internals import compiles, deep_supervision_scales, nnunet_loss
from nnunet_dsmm.trainers.base import DSMMTrainerBase, StepBatch, StepResult
from nnunet_dsmm.trainers.pretrain import DSMMPretrainTrainer
from nnunet_dsmm.trainers.schedules import Stage
from nnunet_dsmm.trainers.stages import PRETRAINED, TEACHER, backbone_state, check_same_backbone
from nnunet_dsmm.trainers.teacher import DSMMTeacherTrainer

#: which levels ``kd_levels`` may name
KD_LEVELS = ("all", "deep")


def kd_level_names(num_levels: int) -> list[str]:
    """Names of the 2n - 1 feature levels of an n-stage U-Net, in ``unet_features`` order: the encoder stages
    above the bottleneck enc0 (full resolution) ... enc<n-2>, the bottleneck, then the decoder stages dec0
    (lowest resolution) ... dec<n-2> (full resolution)."""
    decoder = num_levels // 2
    return [f"enc{i}" for i in range(decoder)] + ["bottleneck"] + [f"dec{i}" for i in range(decoder)]


class DSMMTrainer(DSMMTrainerBase):
    """Eq. 7: L_task + α·L_Mrec + β·L_KD, student with hypernetwork heads (Eq. 6)."""

    stage = Stage.FINETUNING
    paper_batch_size = 1
    alpha: float = 1.0
    beta: float = 0.1
    #: the student's PGMA (see DSMMTrainerBase); None: the U-Net's own prediction layers (rows without PGMA)
    prompt_source: str | None = "text"
    #: complete-then-distill: a frozen stage-1 teacher distils into the student
    use_teacher: bool = True
    #: the teacher sees x̂_full completed by M_rec (False: only the available real channels, Table 3 b)
    complete_with_recovery: bool = True
    #: M_rec is refined by L_Mrec (False: frozen M_rec, Table 3 c)
    train_recovery: bool = True
    #: Eq. 7 minimises β·L_KD over θ_M too: L_KD's gradient reaches M_rec through T's features of x̂_full
    #: (the paper's reading; it is what makes α matter under Adam). False: T's features are constants
    kd_reaches_recovery: bool = True
    #: the levels of Eq. 4: "all" (every encoder and decoder stage) or "deep" (bottleneck and decoder stages)
    kd_levels: str = "all"
    #: how Eq. 4 compares a level's features (losses.FEATURE_DISTANCES): "mse" (the paper's) or "standardized"
    kd_distance: str = "mse"
    #: Eq. 4 compares T's features with the student's mapped by a learnable 1×1 convolution per level
    #: (network.FeatureAdaptors), not with the student's own; needs kd_levels "all"
    kd_adaptors: bool = False
    #: Eq. 4's targets are the student's own features of x̂_full with the all-modalities prompt, under stop-gradient,
    #: instead of T's; T still gives L_Mrec (Eq. 5)
    self_distillation: bool = False
    #: recompute T's and M_rec's inner activations stage by stage in the backward pass instead of keeping them
    checkpoint_activations: bool = False
    #: L_task: "dice_ce" (nnU-Net's Dice + CE, Dice + BCE for regions) or "dice" (the paper's Dice alone,
    #: which can drive a class to zero or a region to everywhere for good: README, "L_task")
    task_loss: str = "dice_ce"
    #: the earlier stages: f/T (stage 1) and φθ (stage 2), which initialises the student and M_rec
    teacher_trainer: type = DSMMTeacherTrainer
    pretrain_trainer: type = DSMMPretrainTrainer
    loss_terms = {"task": "L_task, segmentation loss of the student on modality-dropped real data (Eq. 7)",
                  "mrec": "L_Mrec, L_seg of frozen T on the completed x̂_full (Eq. 5, times α)",
                  "kd": "L_KD, multi-scale feature distillation between T and S (Eq. 4, times β; moves S, and "
                        "M_rec through T unless kd_reaches_recovery is off)",
                  "kd_<level>": "one level's term of L_KD (enc0 = full resolution ... bottleneck, dec0 = lowest "
                                "resolution ...), not weighted by β, logged only"}

    @classmethod
    def earlier_stages(cls) -> dict:
        return {PRETRAINED: cls.pretrain_trainer, **({TEACHER: cls.teacher_trainer} if cls.use_teacher else {})}

    @classmethod
    def refines_recovery(cls) -> bool:
        """Whether L_Mrec trains M_rec in this variant."""
        return cls.use_teacher and cls.complete_with_recovery and cls.train_recovery and cls.alpha > 0

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision: bool = True) -> torch.nn.Module:
        """Student + M_rec; M_rec is frozen here (before any DDP wrapping) when the variant does not refine it."""
        network = build_dsmm_network(configuration_manager, num_input_channels, num_output_channels,
                                     enable_deep_supervision, cls.prompt_source, embedding_dim(cls.text_encoder),
                                     cls.use_teacher and cls.kd_adaptors)
        freeze_unused_heads(network.recovery.requires_grad_(cls.refines_recovery()))
        return network

    def prompt_adaptive_network(self) -> torch.nn.Module:
        return self.network_module.student

    def initialize(self):
        if self.kd_levels not in KD_LEVELS:
            raise ValueError(f"nnunet-dsmm: kd_levels must be one of {KD_LEVELS}, got {self.kd_levels!r}")
        if self.kd_adaptors and self.kd_levels != "all":  # an adaptor without a term would get no gradient (DDP)
            raise ValueError("nnunet-dsmm: kd_adaptors needs kd_levels 'all'")
        super().initialize()
        net = self.network_module
        phi_state = self.stage_networks.pop(PRETRAINED).state_dict()  # only its weights are kept
        net.recovery.load_state_dict(phi_state)
        net.student.load_state_dict(backbone_state(phi_state), strict=False)
        net.recover_every_step = self.is_ddp and self.refines_recovery()
        net.checkpoint_recovery = self.checkpoint_activations
        #: the frozen stage-1 teacher T (a segmentation U-Net), None without complete-then-distill
        self.frozen_t = self.stage_networks.get(TEACHER)
        if self.frozen_t is not None:
            check_same_backbone(self.frozen_t, net.student)
            self.teacher_outputs = TeacherOutputs(self.frozen_t, self.refines_recovery(), self.checkpoint_activations)
            if compiles(self):  # as nnU-Net compiles the trained network
                self.teacher_outputs = torch.compile(self.teacher_outputs)
        self.teacher_loss = self.segmentation_loss()

    def segmentation_loss(self) -> torch.nn.Module:
        """nnU-Net's Dice + CE (Dice + BCE for regions) at full resolution: L_seg of Eq. 5."""
        loss = nnunet_loss(self)
        return loss.loss if isinstance(loss, DeepSupervisionWrapper) else loss

    def _build_loss(self):
        """L_task with nnU-Net's deep-supervision weighting: the Dice loss of the student, or nnU-Net's own
        Dice + CE/BCE (see ``task_loss``)."""
        if self.task_loss not in ("dice", "dice_ce"):
            raise ValueError(f"nnunet-dsmm: task_loss must be 'dice' or 'dice_ce', got {self.task_loss!r}")
        regions = self.label_manager.has_regions
        self.print_to_log_file(f"nnunet-dsmm: L_task = {'Dice' if self.task_loss == 'dice' else 'Dice + CE/BCE'} "
                               f"(task_loss={self.task_loss!r}, {'region' if regions else 'plain'} labels)")
        if self.task_loss == "dice_ce":
            return super()._build_loss()
        loss = MemoryEfficientSoftDiceLoss(apply_nonlin=torch.sigmoid if regions else softmax_helper_dim1,
                                           batch_dice=self.configuration_manager.batch_dice, do_bg=regions,
                                           smooth=1e-5, ddp=self.is_ddp)
        if not self.enable_deep_supervision:
            return loss
        weights = np.array([1 / (2**i) for i in range(len(deep_supervision_scales(self)))])
        weights[-1] = 1e-6 if self.is_ddp and not compiles(self) else 0
        return DeepSupervisionWrapper(loss, weights / weights.sum())

    def ctd_losses(self, step: StepBatch, student_input: torch.Tensor, code: torch.Tensor) -> dict:
        """The terms of Eq. 7 for one batch whose student sees ``student_input``, the channels ``code``
        (B, M) of the real data: ``task``, ``mrec`` (Eq. 5) and ``kd`` (Eq. 4)."""
        real, target = step.data, step.target
        if self.frozen_t is None:
            return {"task": self.loss(self.network(student_input, code), target)}
        # the channels x̂_full keeps from the real data; Table 3 b: all, T sees the real data as it is
        available = step.available if self.complete_with_recovery else torch.ones_like(step.available)
        segmentation, student_features, x_full = self.network(student_input, code, real=real, available=available)
        # T is frozen: it needs a graph only to pass L_Mrec's gradient back to M_rec's completions
        with nullcontext() if x_full.requires_grad else torch.no_grad():
            teacher_features, teacher_logits = self.teacher_outputs(x_full)
        if self.self_distillation:
            with torch.no_grad():
                teacher_features = self.network_module.student.forward_with_features(x_full, complete_code(x_full))[1]
        levels = kd_level_names(len(student_features))
        chosen = [i for i, name in enumerate(levels) if self.kd_levels == "all" or not name.startswith("enc")]
        distances = feature_distances([teacher_features[i] for i in chosen], [student_features[i] for i in chosen],
                                      self.kd_reaches_recovery, self.kd_distance)
        terms = {"task": self.loss(segmentation, target), "kd": torch.stack(distances).sum(),
                 **{f"kd_{levels[i]}": d.detach() for i, d in zip(chosen, distances)}}
        if teacher_logits is not None:  # a constant when no sample misses a channel, still reported
            terms["mrec"] = self.teacher_loss(teacher_logits, step.full_resolution_target)
        return terms

    def total_loss(self, terms: dict) -> torch.Tensor:
        """Eq. 7."""
        total = terms["task"]
        if "mrec" in terms:
            total = total + self.alpha * terms["mrec"]
        if "kd" in terms:
            total = total + self.beta * terms["kd"]
        return total

    def compute_loss(self, step: StepBatch) -> StepResult:
        """Training: the terms of Eq. 7 under MDrop. Validation: L_task of the student on its input."""
        data, code = self.segmentation_input(step)
        if not step.training:
            segmentation = self.network(data, code)
            return StepResult({"task": self.loss(segmentation, step.target)}, segmentation)
        return StepResult(self.ctd_losses(step, data, code), None)
