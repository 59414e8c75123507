"""Stage 2 pieces on real tensors: Eq. 1 and MASK (the stage's own step is tested in test_trainer_steps.py)."""

from __future__ import annotations

import torch

from nnunet_dsmm.model.losses import reconstruction_loss_eq1
from nnunet_dsmm.model.masking import mask_input, spatial_patch_mask


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
