"""Stage 2 on real tensors and small real U-Nets: Eq. 1, MASK, and where the gradients go."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss

from nnunet_dsmm.losses import reconstruction_loss_eq1
from nnunet_dsmm.masking import mask_input, spatial_patch_mask
from nnunet_dsmm.trainers.base import StepBatch
from nnunet_dsmm.trainers.pretrain import DSMMPretrainTrainer
from tests.conftest import small_unet


def test_eq1_ignores_missing_channels():
    torch.manual_seed(0)
    target, reconstruction = torch.randn(2, 4, 8, 8, 8), torch.randn(2, 4, 8, 8, 8)
    available = torch.tensor([[True, False, True, True], [False, False, True, False]])
    base = reconstruction_loss_eq1(reconstruction, target, available)
    changed = reconstruction.clone()
    changed[0, 1] += 5
    changed[1, 0] -= 3
    assert torch.allclose(reconstruction_loss_eq1(changed, target, available), base)
    changed[1, 2] += 1
    assert not torch.allclose(reconstruction_loss_eq1(changed, target, available), base)
    # averaged over the number of real channels: one perfect and one bad channel give half the error
    perfect = target.clone()
    perfect[0, 0] += 2
    one = reconstruction_loss_eq1(perfect[:1], target[:1], torch.tensor([[True, False, False, False]]))
    two = reconstruction_loss_eq1(perfect[:1], target[:1], torch.tensor([[True, False, True, False]]))
    assert torch.isclose(one, torch.tensor(4.0)) and torch.isclose(two, torch.tensor(2.0))


def test_spatial_patch_mask_masks_the_requested_share_of_patches():
    mask = spatial_patch_mask((3, 4, 32, 32, 32), 16, 0.875, torch.Generator().manual_seed(1))
    assert mask.shape == (3, 1, 32, 32, 32)
    assert torch.allclose(mask.mean(dim=(1, 2, 3, 4)), torch.full((3,), 1 / 8))
    odd = spatial_patch_mask((1, 1, 20, 17, 9), 8, 0.5)
    assert odd.shape == (1, 1, 20, 17, 9)


def test_mask_input_never_restores_a_missing_channel():
    data = torch.rand(4, 4, 16, 16, 16) + 1
    available = torch.tensor([[True, True, False, True], [False, True, False, False]] * 2)
    for _ in range(50):
        masked = mask_input(data * available[:, :, None, None, None], available, 8, 0.5)
        assert masked[~available].abs().sum() == 0
        assert (masked.flatten(2).abs().sum(2) > 0).any(dim=1).all()


@pytest.fixture
def stage2():
    torch.manual_seed(0)
    teacher = small_unet(4, 3).requires_grad_(False).eval()
    return SimpleNamespace(network=small_unet(4, 4), teacher=teacher, lambda_da=0.1, mask_patch_size=8,
                           mask_ratio=0.5, loss=DC_and_BCE_loss({}, {"batch_dice": False, "smooth": 1e-5,
                                                                      "do_bg": True, "ddp": False},
                                                                use_ignore_label=False))


def batch():
    data = torch.randn(2, 4, 16, 16, 16)
    available = torch.tensor([[True, True, False, True], [True, False, True, False]])
    target = (torch.rand(2, 3, 16, 16, 16) > 0.7).float()
    return data * available[:, :, None, None, None], target, available


def test_distribution_approximation_reaches_phi_and_not_f(stage2):
    data, target, available = batch()
    terms, _ = DSMMPretrainTrainer.compute_loss(stage2, StepBatch(data, target, available, training=True))
    terms["da"].backward()
    assert all(p.grad is None for p in stage2.teacher.parameters())
    encoder_grads = [p.grad for p in stage2.network.encoder.parameters()]
    assert all(g is not None for g in encoder_grads)
    assert sum(g.abs().sum() for g in encoder_grads) > 0


def test_teacher_unchanged_after_training_steps(stage2):
    before = {k: v.clone() for k, v in stage2.teacher.state_dict().items()}
    optimizer = torch.optim.Adam(stage2.network.parameters(), 1e-2)
    for _ in range(3):
        data, target, available = batch()
        optimizer.zero_grad()
        terms, _ = DSMMPretrainTrainer.compute_loss(stage2, StepBatch(data, target, available, training=True))
        DSMMPretrainTrainer.total_loss(stage2, terms).backward()
        optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in stage2.teacher.state_dict().items())


def test_without_da_only_eq1_is_optimised(stage2):
    stage2.teacher = None
    data, target, available = batch()
    terms, segmentation = DSMMPretrainTrainer.compute_loss(stage2, StepBatch(data, target, available, training=True))
    assert set(terms) == {"eq1"} and segmentation is None
    assert torch.equal(DSMMPretrainTrainer.total_loss(stage2, terms), terms["eq1"])
