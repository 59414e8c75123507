"""What each stage's own step moves and what it leaves alone, through real trainers built and
initialised as nnUNetv2_train does it (tiny plan, random earlier stages): the frozen f/T, where the
DA term goes, stage 2 without DA, the Table 3 b teacher input, and which variants train M_rec."""

from __future__ import annotations

import pytest
import torch

from nnunet_dsmm.trainers.stages import TEACHER
from tests.conftest import build_trainer, missing_batch


@pytest.mark.parametrize("name", ["DSMMPretrainTrainer", "DSMMTrainer", "DSMMTrainerAvailableKD",
                                  "DSMMTrainerFrozenRecovery", "DSMMTrainerLowMemory"])
def test_the_frozen_teacher_gets_no_gradient_and_predicts_the_same_after_training_steps(name, tmp_path):
    trainer = build_trainer(name, tmp_path)
    teacher = trainer.stage_networks[TEACHER]
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    trained = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    probe = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        before = teacher(probe)
    for _ in range(2):
        trainer.train_step(missing_batch(trainer))
    changed = [k for k, v in teacher.state_dict().items() if not torch.equal(v, frozen[k])]
    assert not changed, f"the frozen teacher's weights moved: {changed[:3]}"
    with torch.no_grad():
        assert torch.equal(teacher(probe), before)
    assert any(not torch.equal(v, trainer.network.state_dict()[k]) for k, v in trained.items()), "nothing trained"


def test_distribution_approximation_reaches_phi_through_the_reconstruction_and_never_f(tmp_path):
    trainer = build_trainer("DSMMPretrainTrainer", tmp_path)
    step = trainer.step_batch(missing_batch(trainer), training=True)
    terms, segmentation = trainer.compute_loss(step)
    assert set(terms) == {"eq1", "da"} and segmentation is not None
    terms["da"].backward()
    encoder = [p.grad for p in trainer.network.encoder.parameters()]
    assert all(g is not None for g in encoder) and sum(g.abs().sum() for g in encoder) > 0
    assert all(p.grad is None and not p.requires_grad for p in trainer.frozen_f.parameters())


def test_pretraining_without_da_needs_no_stage_1_and_optimises_eq1_alone(tmp_path):
    trainer = build_trainer("DSMMPretrainNoDATrainer", tmp_path)
    assert trainer.frozen_f is None and trainer.stage_networks == {}
    step = trainer.step_batch(missing_batch(trainer), training=True)
    terms, segmentation = trainer.compute_loss(step)
    assert set(terms) == {"eq1"} and segmentation is None
    assert torch.equal(trainer.total_loss(terms), terms["eq1"])


def test_table_3b_teacher_sees_the_available_real_modalities_and_m_rec_never_runs(tmp_path):
    trainer = build_trainer("DSMMTrainerAvailableKD", tmp_path)
    seen, recovered = [], []
    # the networks run stage by stage (multi-scale features), so the hooks sit on their first stages
    trainer.frozen_t.encoder.stages[0].register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
    trainer.network.recovery.encoder.stages[0].register_forward_hook(lambda *args: recovered.append(1))
    step = trainer.step_batch(missing_batch(trainer), training=True)
    terms = trainer.compute_loss(step).terms
    assert {name for name in terms if not name.startswith("kd_")} == {"task", "kd"}
    assert len(seen) == 1 and torch.equal(seen[0], step.data) and not recovered


@pytest.mark.parametrize("name, trains_recovery", [
    ("DSMMTrainer", True), ("DSMMTrainerNoPGMA", True), ("DSMMTrainerLowMemory", True),
    ("DSMMTrainerNoCTD", False), ("DSMMTrainerBinaryCode", False), ("DSMMFinetuneDATrainer", False),
    ("DSMMTrainerFrozenRecovery", False), ("DSMMTrainerAvailableKD", False)])
def test_only_variants_that_refine_m_rec_train_it(name, trains_recovery, tmp_path):
    trainer = build_trainer(name, tmp_path)
    recovery = list(trainer.network.recovery.parameters())
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"] if p.requires_grad}
    assert any(p.requires_grad for p in recovery) == trains_recovery
    assert any(id(p) in optimised for p in recovery) == trains_recovery
    before = [p.clone() for p in recovery]
    trainer.train_step(missing_batch(trainer))
    assert any(not torch.equal(b, p) for b, p in zip(before, recovery)) == trains_recovery


@pytest.mark.parametrize("name, alpha_matters", [("DSMMTrainer", True), ("DSMMTrainerDetachedKD", False)])
def test_alpha_steers_m_rec_when_kd_reaches_it_through_the_teacher(name, alpha_matters, tmp_path):
    """Adam's update is invariant to the scale of a parameter's gradient, so α can only steer M_rec if
    another term (β·L_KD through T, the paper's Eq. 7) moves it too: then α turns its gradient."""
    trainer = build_trainer(name, tmp_path)
    step = trainer.step_batch(missing_batch(trainer), training=True)
    directions = []
    for alpha in (1.0, 10.0):
        trainer.alpha = alpha
        trainer.network.zero_grad(set_to_none=True)
        torch.manual_seed(3)  # the same modality dropout for both
        trainer.total_loss(trainer.compute_loss(step).terms).backward()
        grad = torch.cat([p.grad.flatten() for p in trainer.network.recovery.parameters() if p.grad is not None])
        directions.append(grad / grad.norm())
    cosine = float(directions[0] @ directions[1])
    assert (cosine < 0.999) == alpha_matters, cosine


@pytest.mark.parametrize("name", ["DSMMBaselineTrainer", "DSMMTeacherTrainer", "DSMMTrainer"])
@pytest.mark.parametrize("under_dropout", [True, False])
def test_validation_sees_modality_dropped_inputs_so_that_checkpoint_best_reflects_missing_modalities(
        name, under_dropout, tmp_path):
    trainer = build_trainer(name, tmp_path)
    trainer.validate_under_modality_dropout = under_dropout
    trainer.network.eval()
    module = trainer.network.student if name == "DSMMTrainer" else trainer.network
    seen = set()
    module.encoder.stages[0].register_forward_pre_hook(
        lambda m, inputs: seen.add(tuple(inputs[0].flatten(2).abs().sum(2).gt(0)[0].tolist())))
    complete = missing_batch(trainer, [[True] * 4])
    torch.manual_seed(0)
    for _ in range(12):
        counts = trainer.validation_step(complete)
        assert {"loss", "tp_hard", "fp_hard", "fn_hard"} <= set(counts)
    assert (seen != {(True,) * 4}) == under_dropout and len(seen) > (1 if under_dropout else 0)


def test_dsmm_seed_makes_the_initial_weights_of_a_training_reproducible(tmp_path, monkeypatch):
    weights = {}
    for run, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        monkeypatch.setenv("DSMM_SEED", seed)
        weights[run] = build_trainer("DSMMTeacherTrainer", tmp_path / run).network.state_dict()
    assert all(torch.equal(v, weights["b"][k]) for k, v in weights["a"].items())
    assert not all(torch.equal(v, weights["c"][k]) for k, v in weights["a"].items())


@pytest.mark.parametrize("variable, value, rule", [("DSMM_FINAL_VALIDATION", "yes", "must be 0 or 1"),
                                                   ("DSMM_SEED", "-3", "must be an integer")])
def test_a_bad_run_variable_is_refused_before_anything_trains(variable, value, rule, tmp_path, monkeypatch):
    from nnunet_dsmm.trainers.schedules import ScheduleError

    monkeypatch.setenv(variable, value)
    with pytest.raises(ScheduleError, match=f"{variable}={value!r} {rule}"):
        build_trainer("DSMMTeacherTrainer", tmp_path)
