"""Stage 3 on real tensors and small real U-Nets: prompts, hypernetwork heads, code detection,
and where each loss term of Eq. 7 sends its gradient."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

from nnunet_dsmm.model.hypernetwork import HyperPredictionHeads
from nnunet_dsmm.model.losses import distillation_loss_eq4, feature_distances
from nnunet_dsmm.model.masking import apply_channel_mask
from nnunet_dsmm.model.modalities import all_combinations, prompt
from nnunet_dsmm.model.network import (
    DSMMNetwork,
    PromptAdaptiveUNet,
    TeacherOutputs,
    detect_modality_code,
    freeze_unused_heads,
    unet_features,
)
from nnunet_dsmm.model.text_encoder import TEXT_ENCODERS, TextEncoderError, embed_prompts, embedding_dim
from nnunet_dsmm.trainers.base import StepBatch
from nnunet_dsmm.trainers.dsmm import DSMMTrainer
from tests.conftest import small_unet


def test_code_detected_from_the_input():
    x = torch.randn(3, 4, 8, 8, 8)
    x[0, 1] = 0
    x[1, [0, 2, 3]] = 0
    x[2] = 0
    assert detect_modality_code(x).tolist() == [[True, False, True, True], [False, True, False, False],
                                                [True, True, True, True]]


def test_untrained_text_tower_gives_distinct_prompt_embeddings_computed_once_then_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("DSMM_TEXT_ENCODER", "untrained")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    names = ["FLAIR", "T1", "T1ce", "T2"]
    prompts = [prompt(c, names) for c in all_combinations(4)]
    computed, cached = [], []
    embeddings = embed_prompts(prompts, "clip-vit-b-32", computed.append)
    assert embeddings.shape == (15, embedding_dim("clip-vit-b-32"))
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(15))
    assert torch.cdist(embeddings, embeddings).add(torch.eye(15)).min() > 1e-3
    # the next training reads the same embeddings from the cache and still says they carry no prior
    assert torch.equal(embeddings, embed_prompts(prompts, "clip-vit-b-32", cached.append))
    for logged in (computed, cached):
        assert any("UNTRAINED" in line and "NO language prior" in line for line in logged)
    assert not any("read from" in line for line in computed)
    assert any(str(tmp_path / "nnunet_dsmm") in line for line in cached)
    # other prompts are another cache entry (computed, not the first entry read back)
    assert torch.allclose(embed_prompts(prompts[:3], "clip-vit-b-32", lambda _: None), embeddings[:3], atol=1e-6)
    assert len(list((tmp_path / "nnunet_dsmm").glob("*.pt"))) == 2


@pytest.mark.parametrize("name", sorted(TEXT_ENCODERS))
def test_the_registered_width_and_weights_of_each_text_encoder_are_open_clips(name):
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    config = TEXT_ENCODERS[name]
    assert embedding_dim(name) == open_clip.get_model_config(config.model_name)["embed_dim"]
    assert config.hf_hub == get_pretrained_cfg(config.model_name, config.pretrained)["hf_hub"]


def test_a_local_checkpoint_path_is_loaded_and_a_missing_one_explains_what_to_do(monkeypatch, tmp_path):
    import open_clip

    torch.manual_seed(5)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    checkpoint = tmp_path / "clip.pt"
    torch.save(model.state_dict(), checkpoint)
    tokens = open_clip.get_tokenizer("ViT-B-32")(["The input MRI modalities are T2."])
    with torch.no_grad():
        expected = model.encode_text(tokens)
    monkeypatch.setenv("DSMM_CLIP_PRETRAINED", str(checkpoint))
    got = embed_prompts(["The input MRI modalities are T2."], "clip-vit-b-32", lambda _: None)
    assert torch.allclose(got, expected / expected.norm(dim=-1, keepdim=True), atol=1e-5)

    monkeypatch.setenv("DSMM_CLIP_PRETRAINED", str(tmp_path / "missing.bin"))
    with pytest.raises(TextEncoderError, match="DSMM_CLIP_PRETRAINED=/path/to") as error:
        embed_prompts(["x"], "clip-vit-b-32", lambda _: None)
    assert "DSMM_TEXT_ENCODER=untrained" in str(error.value)


@pytest.mark.parametrize("source", ["text", "binary"])
def test_hypernetwork_heads_differ_between_codes_and_agree_for_equal_codes(source):
    torch.manual_seed(0)
    student = PromptAdaptiveUNet(small_unet(4, 3, deep_supervision=True), 4, 3, source, prompt_dim=16)
    if source == "text":
        student.prompt_embeddings.normal_()
    x = torch.randn(1, 4, 16, 16, 16).repeat(3, 1, 1, 1, 1)
    codes = torch.tensor([[True, True, False, True], [True, True, False, True], [True, False, False, False]])
    outputs = student(x, codes)
    assert isinstance(outputs, list) and len(outputs) == 2 and outputs[0].shape == (3, 3, 16, 16, 16)
    for out in outputs:
        assert torch.allclose(out[0], out[1])
        assert not torch.allclose(out[0], out[2])
    student.decoder.deep_supervision = False
    assert torch.allclose(student(x, codes), outputs[0])


def ctd_setup(alpha=1.0, beta=0.1, complete_with_recovery=True, checkpoint=False, kd_reaches_recovery=True,
              teacher_kind="plain"):
    """A DSMMTrainer stand-in with small networks; ``teacher_kind`` "plain" (a U-Net, Table 3) or "pgma"
    (a prompt-adaptive U-Net, DSMMTrainer's stage-1 T, which predicts with the all-modalities code)."""
    torch.manual_seed(0)
    teacher = small_unet(4, 3) if teacher_kind == "plain" else \
        PromptAdaptiveUNet(small_unet(4, 3), 4, 3, "binary", prompt_dim=8)
    teacher = teacher.requires_grad_(False).eval()
    student = PromptAdaptiveUNet(small_unet(4, 3, deep_supervision=True), 4, 3, "binary", prompt_dim=8)
    trainer = SimpleNamespace(
        network=DSMMNetwork(student, freeze_unused_heads(small_unet(4, 4))), frozen_t=teacher, alpha=alpha, beta=beta,
        complete_with_recovery=complete_with_recovery, kd_reaches_recovery=kd_reaches_recovery,
        kd_levels=DSMMTrainer.kd_levels, kd_distance=DSMMTrainer.kd_distance,
        self_distillation=DSMMTrainer.self_distillation,
        teacher_outputs=TeacherOutputs(teacher, complete_with_recovery and alpha > 0, checkpoint),
        loss=lambda outputs, target: sum(MemoryEfficientSoftDiceLoss(apply_nonlin=torch.sigmoid, do_bg=True)(o, t)
                                         for o, t in zip(outputs, target)),
        teacher_loss=DC_and_BCE_loss({}, {"batch_dice": False, "smooth": 1e-5, "do_bg": True, "ddp": False},
                                     use_ignore_label=False))
    available = torch.tensor([[True, False, True, True], [False, True, False, False]])
    real = torch.randn(2, 4, 16, 16, 16) * available[:, :, None, None, None]
    code = torch.tensor([[True, False, False, True], [False, True, False, False]])
    full = (torch.rand(2, 3, 16, 16, 16) > 0.7).float()
    target = [full, full[:, :, ::2, ::2, ::2]]
    return trainer, real, available, code, target


def trainer_terms(trainer, real, available, code, target) -> dict:
    """The trainer's own Eq. 7 terms for a batch whose student sees the channels ``code`` (without the
    per-level copies of L_KD, which are logged only)."""
    terms = DSMMTrainer.ctd_losses(trainer, StepBatch(real, target, available, training=True),
                                   apply_channel_mask(real, code), code)
    return {name: value for name, value in terms.items() if not name.startswith("kd_")}


def grads_of(module):
    return [p.grad for p in module.parameters()]


@pytest.mark.parametrize("teacher_kind", ["plain", "pgma"])
@pytest.mark.parametrize("term, kd_reaches_recovery, moves", [
    ("task", True, {"student"}), ("mrec", True, {"recovery"}), ("kd", True, {"student", "recovery"}),
    ("kd", False, {"student"})])
def test_each_term_of_eq7_reaches_only_its_modules(term, kd_reaches_recovery, moves, teacher_kind):
    trainer, real, available, code, target = ctd_setup(kd_reaches_recovery=kd_reaches_recovery,
                                                       teacher_kind=teacher_kind)
    terms = trainer_terms(trainer, real, available, code, target)
    assert set(terms) == {"task", "mrec", "kd"}
    terms[term].backward()
    for name in ("student", "recovery"):
        grads = [g for g in grads_of(getattr(trainer.network, name)) if g is not None]
        moved = bool(grads) and sum(g.abs().sum() for g in grads) > 0
        assert moved == (name in moves), f"L_{term} {'must' if name in moves else 'must not'} move {name}"


def test_completion_keeps_real_channels_and_fills_the_missing_ones():
    trainer, real, available, code, target = ctd_setup()
    x_full = trainer.network.complete(real, available)
    assert torch.equal(x_full[available], real[available])
    assert x_full[~available].abs().sum() > 0


def plain_eq7_terms(trainer, real, available, code, target) -> dict:
    """Eq. 7 written out without any of the trainer's savings: M_rec on every sample, T with a
    graph, KD through autograd in float32."""
    net = trainer.network
    segmentation, student_features = net.student.forward_with_features(real * code[..., None, None, None], code)
    k = available[..., None, None, None].float()
    x_full = real * k + net.recovery(real) * (1 - k)
    skips, features = unet_features(trainer.frozen_t.encoder, trainer.frozen_t.decoder, x_full)
    kd = sum(((t if trainer.kd_reaches_recovery else t.detach()) - s).pow(2).mean()
             for t, s in zip(skips + features, student_features))
    if isinstance(trainer.frozen_t, PromptAdaptiveUNet):  # T of x̂_full is told that every modality is there
        logits = trainer.frozen_t.predict(skips, features, torch.ones(len(real), 4, dtype=torch.bool))[0]
    else:
        logits = trainer.frozen_t.decoder.seg_layers[-1](features[-1])
    mrec = trainer.teacher_loss(logits, target[0])
    return {"task": trainer.loss(segmentation, target), "mrec": mrec, "kd": kd}


def terms_and_grads(trainer, compute, *args) -> tuple[dict, dict]:
    trainer.network.zero_grad(set_to_none=True)
    terms = compute(trainer, *args)
    DSMMTrainer.total_loss(trainer, terms).backward()
    grads = {n: p.grad.clone() for n, p in trainer.network.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in terms.items()}, grads


@pytest.mark.parametrize("teacher_kind", ["plain", "pgma"])
@pytest.mark.parametrize("checkpoint", [False, True])
@pytest.mark.parametrize("complete_rows", [[], [1], [0, 1]])
def test_the_lean_step_computes_the_same_loss_and_gradients_as_plain_eq7(complete_rows, checkpoint, teacher_kind):
    trainer, real, available, code, target = ctd_setup(checkpoint=checkpoint, teacher_kind=teacher_kind)
    trainer.network.checkpoint_recovery = checkpoint
    available[complete_rows] = True
    real = torch.randn_like(real) * available[..., None, None, None]
    calls = []
    trainer.network.recovery.decoder.seg_layers[-1].register_forward_hook(
        lambda module, inputs, output: calls.append(len(inputs[0])))
    lean_terms, lean_grads = terms_and_grads(trainer, trainer_terms, real, available, code, target)
    assert calls == ([2 - len(complete_rows)] if len(complete_rows) < 2 else []), "M_rec ran on complete samples"
    plain_terms, plain_grads = terms_and_grads(trainer, plain_eq7_terms, real, available, code, target)
    assert set(lean_terms) == set(plain_terms) == {"task", "mrec", "kd"}
    for name in plain_terms:
        assert torch.allclose(lean_terms[name], plain_terms[name], rtol=1e-5, atol=1e-7), name
    plain_grads = {n: g for n, g in plain_grads.items() if g.abs().sum() > 0}
    assert set(lean_grads) == set(plain_grads)
    for name, grad in plain_grads.items():
        assert torch.allclose(lean_grads[name], grad, rtol=1e-4, atol=1e-7), name


def test_under_ddp_m_rec_takes_part_even_when_nothing_is_missing():
    trainer, real, available, code, target = ctd_setup()
    available[:] = True
    trainer.network.recover_every_step = True
    _, grads = terms_and_grads(trainer, trainer_terms, real, available, code, target)
    recovery = [n for n, p in trainer.network.named_parameters() if n.startswith("recovery.") and p.requires_grad]
    assert recovery and all(n in grads and not grads[n].any() for n in recovery)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_distillation_loss_matches_autograd_and_moves_only_the_student(dtype):
    torch.manual_seed(0)
    students = [torch.randn(2, 3, 6, 6, 6, dtype=dtype, requires_grad=True) for _ in range(2)]
    teachers = [torch.randn(2, 3, 6, 6, 6, dtype=dtype, requires_grad=True) for _ in range(2)]
    loss = distillation_loss_eq4(teachers, students)
    loss.backward()
    reference = [s.detach().double().requires_grad_() for s in students]
    expected = sum(((t.detach().double() - s) ** 2).mean() for t, s in zip(teachers, reference))
    expected.backward()
    tolerance = 1e-10 if dtype == torch.float64 else 2e-3
    assert loss.dtype == torch.promote_types(dtype, torch.float32)
    assert abs(loss.item() - expected.item()) < tolerance * expected.item()
    for s, r in zip(students, reference):
        assert s.grad.dtype == dtype and torch.allclose(s.grad.double(), r.grad, rtol=tolerance, atol=1e-6)
    assert all(t.grad is None for t in teachers)


def test_standardized_distance_ignores_each_channels_scale_and_offset_but_not_its_pattern():
    torch.manual_seed(0)
    student = torch.randn(2, 3, 6, 6, 6, requires_grad=True)
    pattern = torch.randn(2, 3, 6, 6, 6)
    scale, offset = torch.rand(1, 3, 1, 1, 1) * 50 + 0.5, torch.randn(1, 3, 1, 1, 1) * 10
    rescaled = feature_distances([student.detach() * scale + offset], [student], distance="standardized")[0]
    assert rescaled.item() < 1e-6
    other = feature_distances([pattern * scale + offset], [student], distance="standardized")[0]
    assert other.item() > 0.5
    other.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    louder = feature_distances([10 * (pattern * scale + offset)], [student.detach()], distance="standardized")[0]
    assert louder.item() == pytest.approx(other.item(), rel=1e-4)
    mse = [feature_distances([k * pattern], [student.detach()])[0].item() for k in (1, 30)]
    assert mse[1] > 100 * mse[0]


def test_generated_heads_equal_a_per_sample_1x1x1_convolution():
    torch.manual_seed(0)
    heads = HyperPredictionHeads([8, 4], 3, indicator_dim=5)
    indicator = torch.randn(2, 5)
    features = [torch.randn(2, 8, 5, 6, 7), torch.randn(2, 4, 10, 12, 14)]
    outputs = heads(indicator, features, [0, 1])
    for (weight, bias), feature, out in zip(heads.generate(indicator), features, outputs):
        for b in range(2):
            conv = torch.nn.functional.conv3d(feature[b:b + 1], weight[b][..., None, None, None], bias[b])
            assert torch.allclose(out[b:b + 1], conv, atol=1e-5)
