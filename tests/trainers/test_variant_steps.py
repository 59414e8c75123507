"""The study's variants of stage 3 (``trainers/dsmm_variants.py``) through real trainers built and
initialised as nnUNetv2_train does it (tiny plan, random earlier stages): every ablation row's network
and earlier stages, the batch-size rows, the Fig. 5 control and the complete-then-distill readings."""

from __future__ import annotations

import pytest
import torch

from nnunet_dsmm.trainers.stages import TEACHER
from tests.conftest import MISSING, build_trainer, missing_batch

#: the paper's ablation rows: (PGMA prompt source or None, complete-then-distill, stage-2 trainer)
ABLATION_ROWS = {
    "DSMMFinetuneMaskRecTrainer": (None, False, "DSMMPretrainNoDATrainer"),  # Table 2 Mask-Rec
    "DSMMFinetuneDATrainer": (None, False, "DSMMPretrainTrainer"),  # Table 2 + DA, Table 3 (a)
    "DSMMTrainerNoCTD": ("text", False, "DSMMPretrainTrainer"),  # Table 2 + PGMA, Fig. 5 text
    "DSMMTrainer": ("text", True, "DSMMPretrainTrainer"),  # Table 2 + CTD
    "DSMMTrainerAvailableKD": (None, True, "DSMMPretrainTrainer"),  # Table 3 (b)
    "DSMMTrainerFrozenRecovery": (None, True, "DSMMPretrainTrainer"),  # Table 3 (c)
    "DSMMTrainerNoPGMA": (None, True, "DSMMPretrainTrainer"),  # Table 3 (d)
    "DSMMTrainerBinaryCode": ("binary", False, "DSMMPretrainTrainer"),  # Fig. 5 binary code
    "DSMMTrainerUnconditionedHeads": ("unconditioned", False, "DSMMPretrainTrainer"),  # control of Fig. 5
    "DSMMTrainerPGMATeacher": ("text", True, "DSMMPretrainTrainer"),  # complete-then-distill study
    "DSMMTrainerStandardizedKD": ("text", True, "DSMMPretrainTrainer"),
    "DSMMTrainerDeepKD": ("text", True, "DSMMPretrainTrainer"),
    "DSMMTrainerDetachedKD": ("text", True, "DSMMPretrainTrainer"),
    "DSMMTrainerBeta001": ("text", True, "DSMMPretrainTrainer"),
    "DSMMTrainerBeta003": ("text", True, "DSMMPretrainTrainer"),
    "DSMMTrainerAdaptedKD": ("text", True, "DSMMPretrainTrainer"),
    "DSMMTrainerSelfKD": ("text", True, "DSMMPretrainTrainer"),
    "DSMMTrainerBeta03": ("text", True, "DSMMPretrainTrainer"),
    "DSMMTrainerNoCTDPlanBatch": ("text", False, "DSMMPretrainTrainer"),
    "DSMMTrainerPlanBatch": ("text", True, "DSMMPretrainTrainer"),
}
#: rows that train stage 1 (no stage-3 network): checked by their batch size below
STAGE1_ROWS = {"DSMMTeacherTrainerBatch1"}
#: rows that need a real dataset: checked in tests/trainers/test_oracle_teacher.py
DATASET_ROWS = {"DSMMTrainerOracleTeacher"}


def test_every_row_of_every_ablation_table_is_checked_here():
    from nnunet_dsmm.experiments.ablation import BASELINES, TABLES

    rows = {row.trainer for table in TABLES.values() for row in table.rows}
    assert rows - {row.trainer for row in BASELINES} <= set(ABLATION_ROWS) | STAGE1_ROWS | DATASET_ROWS


@pytest.mark.parametrize("name, batch_size", [("DSMMTeacherTrainerBatch1", 1), ("DSMMTeacherTrainer", "plan"),
                                              ("DSMMTrainerNoCTD", 1), ("DSMMTrainerNoCTDPlanBatch", "plan"),
                                              ("DSMMTrainer", 1), ("DSMMTrainerPlanBatch", "plan")])
def test_the_batch_size_rows_swap_stage_1_and_stage_3_batch_sizes(name, batch_size, tmp_path):
    trainer = build_trainer(name, tmp_path)
    planned = trainer.configuration_manager.batch_size
    assert planned > 1, "the test needs a plan whose batch size is not 1"
    assert trainer.batch_size == (planned if batch_size == "plan" else batch_size)


@pytest.mark.parametrize("name", list(ABLATION_ROWS))
def test_each_ablation_row_builds_its_network_and_chains_to_its_earlier_stages(name, tmp_path):
    from nnunet_dsmm.model.network import PromptAdaptiveUNet
    from nnunet_dsmm.trainers.stages import PRETRAINED

    prompts, ctd, pretrain = ABLATION_ROWS[name]
    trainer = build_trainer(name, tmp_path)
    student = trainer.network.student
    assert isinstance(student, PromptAdaptiveUNet) == (prompts is not None)
    if prompts is None:
        assert not hasattr(student, "heads") and len(student.decoder.seg_layers) == 2
    else:
        assert student.prompt_source == prompts
    stages = type(trainer).earlier_stages()
    assert stages[PRETRAINED].__name__ == pretrain and (TEACHER in stages) == ctd
    output = trainer.train_step(missing_batch(trainer))
    refines = name not in ("DSMMTrainerAvailableKD", "DSMMTrainerFrozenRecovery")
    logged = {term for term in output["terms"][0] if not term.startswith("kd_")}
    assert logged == ({"task", "kd"} | ({"mrec"} if refines else set()) if ctd else {"task"})


@pytest.mark.parametrize(("name", "conditioned"), [("DSMMTrainerNoCTD", True),
                                                    ("DSMMTrainerUnconditionedHeads", False)])
def test_the_fig5_control_generates_its_prediction_layers_from_nothing_of_the_input(name, conditioned, tmp_path):
    trainer = build_trainer(name, tmp_path)
    indicators = []
    trainer.network.student.heads.mlp.register_forward_pre_hook(lambda m, i: indicators.append(i[0].detach()))
    for _ in range(2):
        trainer.train_step(missing_batch(trainer))
    assert indicators and all(i.shape == indicators[0].shape for i in indicators)
    assert any(i.abs().sum() > 0 for i in indicators) == conditioned


def record_codes(network) -> list:
    """The codes a prompt-adaptive network's hypernetwork is given, call by call."""
    codes, original = [], network.prompt_embedding
    network.prompt_embedding = lambda code: codes.append(code.clone()) or original(code)
    return codes


def test_the_stage_1_teacher_adapts_to_the_prompt_of_the_code_after_modality_dropout(tmp_path):
    from nnunet_dsmm.model.network import PromptAdaptiveUNet

    trainer = build_trainer("DSMMTeacherTrainer", tmp_path)
    assert isinstance(trainer.network, PromptAdaptiveUNet) and trainer.network.prompt_source == "text"
    assert trainer.network.prompt_embeddings.abs().sum() > 0  # the prompts were embedded in initialize
    codes = record_codes(trainer.network)
    torch.manual_seed(0)
    inputs = []
    trainer.network.encoder.stages[0].register_forward_pre_hook(lambda m, i: inputs.append(i[0]))
    for _ in range(6):
        trainer.train_step(missing_batch(trainer))
    available = torch.tensor([MISSING[i % 2] for i in range(trainer.batch_size)])
    for code, x in zip(codes, inputs):
        present = x.flatten(2).abs().sum(2) > 0
        assert torch.equal(code, present) and not (code & ~available).any()  # dropped channels are off
    assert any(not torch.equal(code, available) for code in codes)  # MDrop changed some codes


@pytest.mark.parametrize("name", ["DSMMPretrainTrainer", "DSMMTrainer"])
def test_f_and_t_get_the_all_modalities_code_for_full_modal_input(name, tmp_path):
    trainer = build_trainer(name, tmp_path)
    teacher = trainer.stage_networks[TEACHER]
    codes = record_codes(teacher)
    trainer.train_step(missing_batch(trainer))
    assert codes and all(bool(code.all()) for code in codes)


@pytest.mark.parametrize("name, levels", [
    ("DSMMTrainer", ["enc0", "enc1", "bottleneck", "dec0", "dec1"]),
    ("DSMMTrainerDeepKD", ["bottleneck", "dec0", "dec1"])])
def test_every_kd_level_is_its_own_logged_term_and_eq4_is_their_sum(name, levels, tmp_path):
    trainer = build_trainer(name, tmp_path)
    terms = trainer.compute_loss(trainer.step_batch(missing_batch(trainer), training=True)).terms
    per_level = {term.removeprefix("kd_"): value for term, value in terms.items() if term.startswith("kd_")}
    assert list(per_level) == levels
    assert torch.allclose(sum(per_level.values()), terms["kd"].detach())
    assert torch.allclose(trainer.total_loss(terms), terms["task"] + trainer.alpha * terms["mrec"]
                          + trainer.beta * terms["kd"])


def test_the_pgma_teacher_variant_distils_from_the_student_of_a_plus_pgma_model(tmp_path):
    from nnunet_dsmm.model.network import PromptAdaptiveUNet
    from nnunet_dsmm.trainers.dsmm_variants import DSMMTrainerNoCTD

    trainer = build_trainer("DSMMTrainerPGMATeacher", tmp_path)
    assert type(trainer).earlier_stages()[TEACHER] is DSMMTrainerNoCTD
    assert isinstance(trainer.frozen_t, PromptAdaptiveUNet) and not hasattr(trainer.frozen_t, "recovery")
    checkpoint = torch.load(tmp_path / "DSMMTrainerNoCTD.pth", weights_only=False)["network_weights"]
    for key, value in trainer.frozen_t.state_dict().items():
        if key != "prompt_embeddings":
            assert torch.equal(value, checkpoint["student." + key]), key
    trainer.train_step(missing_batch(trainer))


@pytest.mark.parametrize("name", ["DSMMTrainer", "DSMMTrainerNoCTD", "DSMMFinetuneDATrainer"])
def test_the_student_starts_from_phi_and_m_rec_is_phi(name, tmp_path):
    """S's encoder and decoder and the whole M_rec are φθ's weights after ``initialize`` (loaded with
    strict=False for S, so a renamed key would otherwise leave S at its random initialisation)."""
    from nnunet_dsmm.trainers.stages import BACKBONE_PREFIXES

    trainer = build_trainer(name, tmp_path)
    phi = torch.load(tmp_path / "DSMMPretrainTrainer.pth", weights_only=False)["network_weights"]
    student = trainer.network.student.state_dict()
    backbone = [k for k in phi if k.startswith(BACKBONE_PREFIXES)]
    assert len(backbone) > 10 and set(backbone) <= set(student)
    for key in backbone:
        assert torch.equal(student[key], phi[key]), key
    for key, value in trainer.network.recovery.state_dict().items():
        assert torch.equal(value, phi[key]), key


def test_the_adapted_kd_variant_starts_at_eq4_trains_its_adaptors_and_predicts_without_them(tmp_path):
    from nnunet_dsmm.model.losses import feature_distances

    trainer = build_trainer("DSMMTrainerAdaptedKD", tmp_path)
    net = trainer.network_module
    step = trainer.step_batch(missing_batch(trainer), training=True)
    data, code = trainer.segmentation_input(step)
    _, adapted, x_full = net(data, code, real=step.data, available=step.available)
    _, own = net.student.forward_with_features(data, code)
    teacher_features, _ = trainer.teacher_outputs(x_full)
    assert len(adapted) == len(own) == len(net.adaptors.convs)
    for a, o in zip(adapted, own):  # identity at the start: Eq. 4 as the paper writes it
        assert torch.allclose(a, o, atol=1e-5)
    kd = torch.stack(feature_distances(teacher_features, adapted)).sum()
    assert kd > 0
    before = {k: v.clone() for k, v in net.adaptors.state_dict().items()}
    for _ in range(2):
        trainer.train_step(missing_batch(trainer))
    assert any(not torch.equal(v, net.adaptors.state_dict()[k]) for k, v in before.items()), "adaptors did not train"
    probe = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        predicted = net(probe)
        net.adaptors.requires_grad_(False).apply(lambda m: m.weight.zero_() if hasattr(m, "weight") else None)
        assert all(torch.equal(a, b) for a, b in zip(net(probe), predicted))


def test_self_distillation_distils_from_the_students_own_features_of_the_completed_input(tmp_path):
    """DSMMTrainerSelfKD: Eq. 4's targets are the student's features of x̂_full under the all-modalities
    prompt, taken without gradient, so L_KD moves the student and never M_rec."""
    from nnunet_dsmm.model.losses import feature_distances

    trainer = build_trainer("DSMMTrainerSelfKD", tmp_path)
    student = trainer.network_module.student
    calls = []
    forward_with_features = student.forward_with_features

    def recorded(x, code=None):
        out = forward_with_features(x, code)
        calls.append((x, code, out[1], torch.is_grad_enabled()))
        return out

    student.forward_with_features = recorded
    terms = trainer.compute_loss(trainer.step_batch(missing_batch(trainer), training=True)).terms
    assert len(calls) == 2
    (_, dropped_code, own, own_grad), (x_full, target_code, targets, target_grad) = calls
    assert own_grad and not target_grad
    assert bool(target_code.all()) and not bool(dropped_code.all())
    assert x_full.shape[1] == 4 and x_full.abs().sum(dim=(2, 3, 4)).gt(0).all()  # completed: no empty channel
    assert torch.allclose(terms["kd"], torch.stack(feature_distances(targets, own)).sum())
    terms["kd"].backward()
    assert all(p.grad is None or not p.grad.any() for p in trainer.network_module.recovery.parameters())
    assert any(p.grad is not None and p.grad.any() for p in student.parameters())
