"""The batches a benchmark feeds every trainer: random ones in the form of nnU-Net's data loader,
or the loader's own."""

from __future__ import annotations

import contextlib
import io

import torch

from nnunet_dsmm.benchmark.runtime import temporary_environment
from nnunet_dsmm.nnunet.nnunet_internals import deep_supervision_scales


def synthetic_batches(reference, count: int, batch_size: int, complete_share: float,
                       generator: torch.Generator) -> list[dict]:
    """``count`` random batches in the form of ``reference``'s data loader: data with each sample's
    missing channels zeroed, random targets at every deep-supervision scale."""
    import torch.nn.functional as F

    patch = tuple(reference.configuration_manager.patch_size)
    channels, labels = reference.num_input_channels, reference.label_manager
    scales = deep_supervision_scales(reference) or [[1.0] * len(patch)]  # None without deep supervision
    batches = []
    for b in range(count):
        available = torch.ones(batch_size, channels, dtype=torch.bool)
        for row in available:
            if torch.rand((), generator=generator) >= complete_share:
                missing = torch.randperm(channels, generator=generator)[: int(torch.randint(
                    1, channels, (), generator=generator))]
                row[missing] = False
        data = torch.randn(batch_size, channels, *patch, generator=generator) * available[..., None, None, None]
        if labels.has_regions:
            full = (torch.rand(batch_size, len(labels.foreground_regions), *patch, generator=generator) > 0.8).float()
        else:
            full = torch.randint(0, len(labels.all_labels), (batch_size, 1, *patch), generator=generator).float()
        targets = [full] + [F.interpolate(full, size=[round(p * s) for p, s in zip(patch, scale)], mode="nearest")
                            for scale in scales[1:]]
        keys = [f"benchmark_{b}_{i}" for i in range(batch_size)]
        batches.append({"data": data, "target": targets, "keys": keys, "available": available})
    return batches


def loader_batches(trainer, count: int) -> list[dict]:
    """``count`` batches from nnU-Net's own training data loader (augmentation included, in-process)."""
    with temporary_environment(nnUNet_n_proc_DA="0"), contextlib.redirect_stdout(io.StringIO()):
        loader, _ = trainer.get_dataloaders()
        return [next(loader) for _ in range(count)]


def batch_for(trainer, batch: dict) -> dict:
    """The batch in the form the trainer's data loader would give it (deep-supervision targets or one)."""
    out = {k: v for k, v in batch.items() if k != "available"}
    if not trainer.enable_deep_supervision:
        out["target"] = batch["target"][0]
    if "available" in batch and hasattr(trainer, "availability"):
        trainer.availability.update(zip(batch["keys"], batch["available"]))
    return out
