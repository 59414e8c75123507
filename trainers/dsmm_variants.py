"""The study's variants of stage 3: the paper's ablations (Table 2, Table 3, Fig. 5), our readings of
Eq. 4 and Eq. 7 (the complete-then-distill study) and the memory and loss options, each a subclass of
``DSMMTrainer`` that changes one or two class attributes. A variant is registered by one line in
pyproject.toml's ``nnunet_dsmm.nnunetv2_classes`` entry points."""

from __future__ import annotations

from nnunet_dsmm.trainers.dsmm import DSMMTrainer
from nnunet_dsmm.trainers.pretrain import DSMMPretrainNoDATrainer
from nnunet_dsmm.trainers.teacher import DSMMBaselineTrainer


class DSMMTrainerNoCTD(DSMMTrainer):
    """Ablation, Table 2 "+ PGMA" (and Fig. 5, text prompt): prompt-guided adaptation, no complete-then-distill."""

    use_teacher = False


class DSMMFinetuneDATrainer(DSMMTrainerNoCTD):
    """Ablation, Table 2 "+ DA" = Table 3 (a) = Fig. 5 baseline: fine-tuning after DA pre-training with
    modality dropout, the U-Net's own prediction layers, no complete-then-distill."""

    prompt_source = None


class DSMMFinetuneMaskRecTrainer(DSMMFinetuneDATrainer):
    """Ablation, Table 2 "Mask-Rec": as "+ DA", after pre-training without distribution approximation."""

    pretrain_trainer = DSMMPretrainNoDATrainer


class DSMMTrainerNoPGMA(DSMMTrainer):
    """Ablation, Table 3 (d): complete-then-distill with a learnable M_rec, no PGMA in student or teacher
    (T is the plain baseline, ``DSMMBaselineTrainer``)."""

    prompt_source = None
    teacher_trainer = DSMMBaselineTrainer


class DSMMTrainerAvailableKD(DSMMTrainerNoPGMA):
    """Ablation, Table 3 (b): KD from a teacher that sees only the available real modalities, no PGMA."""

    complete_with_recovery = False


class DSMMTrainerFrozenRecovery(DSMMTrainerNoPGMA):
    """Ablation, Table 3 (c): complete-then-distill with a frozen M_rec (no L_Mrec), no PGMA."""

    train_recovery = False


class DSMMTrainerBinaryCode(DSMMTrainerNoCTD):
    """Ablation, Fig. 5 (binary code): the hypernetwork is fed by the binary code through a 2-layer MLP
    instead of the text prompt, no complete-then-distill."""

    prompt_source = "binary"


class DSMMTrainerUnconditionedHeads(DSMMTrainerNoCTD):
    """Control for Fig. 5 and Table 2 "+ PGMA" (not a row of the paper): the hypernetwork's prediction
    layers with a zero indicator (no prompt, no pooled visual features), no complete-then-distill. Tells
    adaptation to the input apart from generating the prediction layers by an MLP at all."""

    prompt_source = "unconditioned"


class DSMMTrainerDetachedKD(DSMMTrainer):
    """Reading of Eq. 7 (not the paper's row); complete-then-distill study, hypothesis "KD reaching M_rec":
    L_KD moves the student only, M_rec is refined by L_Mrec alone (α then acts only through weight decay
    and gradient clipping under Adam), so M_rec cannot learn to make T's features look like the student's."""

    kd_reaches_recovery = False


class DSMMTrainerPGMATeacher(DSMMTrainer):
    """Complete-then-distill study, hypothesis "unrelated feature bases": the teacher is the "+ PGMA" model
    (``DSMMTrainerNoCTD``, fine-tuned from φθ like the student) instead of stage 1 trained from scratch, so
    that Eq. 4 compares features of two networks that share their initialisation. The paper does not say
    which segmentation model T is (footnote 1 of its method section)."""

    teacher_trainer = DSMMTrainerNoCTD


class DSMMTrainerStandardizedKD(DSMMTrainer):
    """Complete-then-distill study, hypothesis "unrelated feature bases" (scale): Eq. 4 on features standardised
    per channel and sample over their voxels, so that no level's scale dominates L_KD and β means the same
    at every level. The paper names no normalisation for Eq. 4."""

    kd_distance = "standardized"


class DSMMTrainerAdaptedKD(DSMMTrainer):
    """Complete-then-distill study, hypothesis "unrelated feature bases" (basis): Eq. 4 between T's features and
    the student's mapped by a learnable 1×1 convolution per level (identity at the start, trained with the
    student), so that the student need not take T's channel basis. The paper names no adaptor for Eq. 4."""

    kd_adaptors = True


class DSMMTrainerSelfKD(DSMMTrainer):
    """Complete-then-distill study, hypothesis "unrelated feature bases" (beyond the paper, as M3AE and PASSION
    distil within one network): the student is its own teacher, its features of x̂_full with the all-modalities
    prompt under stop-gradient are Eq. 4's targets. Stage 1 (T) still refines M_rec through L_Mrec (Eq. 5);
    L_KD does not reach M_rec."""

    self_distillation = True


class DSMMTrainerDeepKD(DSMMTrainer):
    """Complete-then-distill study, hypothesis "levels the student cannot match": Eq. 4 on the bottleneck and
    the decoder stages only, not on the encoder stages above the bottleneck, which are near-local functions of
    the channels the student does not see. The paper names no levels ("multi-scale features")."""

    kd_levels = "deep"


class DSMMTrainerBeta001(DSMMTrainer):
    """Complete-then-distill study, hypothesis "β does not transfer": β = 0.01 instead of the paper's 0.1
    (our Eq. 4 averages each level over its elements, the paper's scale is not stated)."""

    beta = 0.01


class DSMMTrainerBeta003(DSMMTrainer):
    """Complete-then-distill study, hypothesis "β does not transfer": β = 0.03 (between 0.01 and the paper's 0.1)."""

    beta = 0.03


class DSMMTrainerBeta03(DSMMTrainer):
    """Complete-then-distill study, hypothesis "β does not transfer": β = 0.3, three times the paper's 0.1."""

    beta = 0.3


class DSMMTrainerNoCTDPlanBatch(DSMMTrainerNoCTD):
    """Complete-then-distill study, hypothesis "batch size": + PGMA at the plan's batch size (stage 1's)
    instead of the paper's 1, so that it sees as many samples per iteration as stage 1 alone."""

    paper_batch_size = None


class DSMMTrainerPlanBatch(DSMMTrainer):
    """Complete-then-distill study, hypothesis "batch size": the full method (+ CTD) at the plan's batch size
    (stage 1's) instead of the paper's 1; compared with ``DSMMTrainerNoCTDPlanBatch``."""

    paper_batch_size = None


class DSMMTrainerDiceOnly(DSMMTrainer):
    """The paper's L_task, Dice alone (Eq. 7), where DSMMTrainer uses nnU-Net's Dice + CE/BCE because Dice
    alone can collapse a class or saturate a small region (README, "L_task")."""

    task_loss = "dice"


class DSMMTrainerLowMemory(DSMMTrainer):
    """Same training as DSMMTrainer with less memory: T's and M_rec's inner activations are recomputed
    stage by stage in the backward pass (one more forward pass of each per step)."""

    checkpoint_activations = True
