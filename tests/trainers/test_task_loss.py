"""L_task: a class that softmax Dice alone has driven to zero stays there, so DSMMTrainer trains with
nnU-Net's Dice + CE (Dice + BCE for regions) instead of the paper's Dice alone.

The regression test trains a real DSMMTrainer (tiny plan, nnU-Net's own initialisation) at smoke
size on synthetic plain-label cases, puts one class into the collapsed state seen in the demo
(its probability ~0 everywhere), trains on through the trainer's own ``train_step`` and checks that
the class comes back; the paper's Dice alone (``DSMMTrainerDiceOnly``) keeps it collapsed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnunet_dsmm.benchmark.batches import batch_for
from nnunet_dsmm.data.synth import synth_case
from nnunet_dsmm.nnunet.nnunet_internals import deep_supervision_scales
from tests.conftest import build_trainer

PATCH = 16
ENHANCING = 3  # the smaller foreground class that collapsed in the reported runs


def tumour_patches(rng: np.random.Generator, count: int, shape: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` synthetic plain-label cases, cropped to the tiny plan's patch around the tumour (as
    foreground oversampling picks them) and z-scored per channel inside the brain."""
    images, labels = [], []
    for _ in range(count):
        subject = synth_case(rng, (shape,) * 3)
        image, label = subject.images, subject.labels
        centre = np.argwhere(label > 0).mean(0).round().astype(int) + rng.integers(-3, 4, 3)
        low = np.clip(centre - PATCH // 2, 0, shape - PATCH)
        window = tuple(slice(lo, lo + PATCH) for lo in low)
        image, label = image[(slice(None), *window)], label[window]
        brain = image[0] > 0
        images.append(np.stack([(c - c[brain].mean()) / (c[brain].std() + 1e-8) * brain for c in image]))
        labels.append(label)
    return torch.from_numpy(np.stack(images)).float(), torch.from_numpy(np.stack(labels))[:, None].float()


def loader_batch(trainer, images: torch.Tensor, labels: torch.Tensor, step: int) -> dict:
    """The batch as nnU-Net's loader gives it: every deep-supervision scale of the target."""
    scales = deep_supervision_scales(trainer)
    targets = [labels] + [F.interpolate(labels, size=[round(PATCH * s) for s in scale], mode="nearest")
                          for scale in scales[1:]]
    available = torch.ones(len(images), images.shape[1], dtype=torch.bool)
    return batch_for(trainer, {"data": images, "target": targets, "available": available,
                               "keys": [f"case{step}_{i}" for i in range(len(images))]})


def probability_where_present(trainer, images: torch.Tensor, labels: torch.Tensor, label: int) -> float:
    """Mean softmax probability of ``label`` on its reference voxels (full-resolution output)."""
    trainer.network.eval()
    with torch.no_grad():
        output = trainer.network(images)
    trainer.network.train()
    output = output[0] if isinstance(output, list) else output
    return float(output.float().softmax(1)[:, label][labels[:, 0] == label].mean())


def collapse(trainer, label: int, shift: float = 10.0) -> None:
    """Lower ``label``'s bias in every generated prediction layer by ``shift`` (its probability ~0)."""
    heads = trainer.network.student.heads
    start = 0
    with torch.no_grad():
        for channels, size in zip(heads.head_channels, heads.sizes):
            heads.mlp[-1].bias[start + heads.out_channels * channels + label] -= shift
            start += size


@pytest.mark.parametrize(("name", "recovers"), [("DSMMTrainer", True), ("DSMMTrainerDiceOnly", False)])
@pytest.mark.slow  # many real training steps (a minute each on 2 cores); quick: the loss-choice test below
def test_a_collapsed_class_comes_back_under_dsmmtrainers_task_loss_on_plain_labels(name, recovers, tmp_path):
    torch.manual_seed(0)
    trainer = build_trainer(name, tmp_path, labels="plain")
    rng = np.random.default_rng(0)
    images, labels = tumour_patches(rng, 24)
    held_out = tumour_patches(np.random.default_rng(1), 6)

    def train(steps: int) -> None:
        for step in range(steps):
            chosen = rng.choice(len(images), trainer.batch_size, replace=False)
            trainer.train_step(loader_batch(trainer, images[chosen], labels[chosen], step))

    train(30)  # Adam's moments now hold the gradients of a running training
    collapse(trainer, ENHANCING)
    collapsed = probability_where_present(trainer, *held_out, ENHANCING)
    assert collapsed < 1e-4
    train(120)
    ratio = probability_where_present(trainer, *held_out, ENHANCING) / collapsed
    # Dice + CE brings the class back by 4-5 orders of magnitude; Dice alone drifts within a few fold
    assert (ratio > 100) == recovers, f"{name}: probability of the collapsed class changed {ratio:.3g}-fold"


@pytest.mark.parametrize("labels", ["regions", "plain"])
def test_dsmmtrainer_uses_nnunets_dice_and_ce_and_dice_only_the_papers_dice(labels, tmp_path):
    from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss, DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    trainer = build_trainer("DSMMTrainer", tmp_path, labels=labels)
    assert type(trainer.loss.loss) is (DC_and_BCE_loss if labels == "regions" else DC_and_CE_loss)
    paper = build_trainer("DSMMTrainerDiceOnly", tmp_path / "variant", labels=labels)
    assert type(paper.loss.loss) is MemoryEfficientSoftDiceLoss
