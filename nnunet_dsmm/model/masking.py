"""Masking of input modalities: modality dropout (MDrop) and the masked input of Eq. 3 (MASK)."""

from __future__ import annotations

import torch


def modality_dropout(available: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """MDrop, per sample: a uniformly random non-empty subset of each row's available channels.

    ``available`` is (B, M) bool. Each non-empty subset of a row's k available channels has
    probability 1 / (2^k - 1); a missing channel is never restored and no row ends up empty.
    Rows without any available channel are rejected.
    """
    if not bool(available.any(dim=1).all()):
        raise ValueError("modality_dropout: a sample has no available channel at all")
    kept = torch.zeros_like(available)
    todo = torch.ones(available.shape[0], dtype=torch.bool, device=available.device)
    while bool(todo.any()):
        draw = torch.rand(available.shape, generator=generator, device=available.device) < 0.5
        draw &= available
        accept = todo & draw.any(dim=1)
        kept[accept] = draw[accept]
        todo &= ~accept
    return kept


def apply_channel_mask(data: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """Zero the channels of ``data`` (B, M, ...) where ``available`` (B, M) is False."""
    shape = available.shape + (1,) * (data.ndim - 2)
    return data * available.reshape(shape).to(data.dtype)


def spatial_patch_mask(shape: tuple[int, ...], patch_size: int, mask_ratio: float,
                       generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """(B, 1, *spatial) float mask: 0 on a random ``mask_ratio`` share of cubic patches, 1 elsewhere."""
    batch, spatial = shape[0], shape[2:]
    grid = [-(-s // patch_size) for s in spatial]
    num_patches = int(torch.tensor(grid).prod())
    num_masked = int(round(mask_ratio * num_patches))
    scores = torch.rand(batch, num_patches, generator=generator, device=device)
    masked = torch.zeros(batch, num_patches, dtype=torch.bool, device=device)
    masked.scatter_(1, scores.argsort(dim=1)[:, :num_masked], True)
    keep = (~masked).float().reshape(batch, 1, *grid)
    for axis in range(len(spatial)):
        keep = keep.repeat_interleave(patch_size, dim=axis + 2)
    return keep[(slice(None), slice(None), *[slice(0, s) for s in spatial])]


def mask_input(data: torch.Tensor, available: torch.Tensor, patch_size: int, mask_ratio: float,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """MASK(x) of Eq. 3: modality dropout over the available channels, then spatial patch masking."""
    dropped = apply_channel_mask(data, modality_dropout(available, generator))
    if mask_ratio <= 0:
        return dropped
    return dropped * spatial_patch_mask(data.shape, patch_size, mask_ratio, generator, data.device).to(data.dtype)
