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
    keep = torch.zeros_like(available)
    todo = torch.ones(available.shape[0], dtype=torch.bool, device=available.device)
    while bool(todo.any()):
        draw = torch.rand(available.shape, generator=generator, device=available.device) < 0.5
        draw &= available
        accept = todo & draw.any(dim=1)
        keep[accept] = draw[accept]
        todo &= ~accept
    return keep


def apply_channel_mask(data: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Zero the channels of ``data`` (B, M, ...) where ``keep`` (B, M) is False."""
    shape = keep.shape + (1,) * (data.ndim - 2)
    return data * keep.reshape(shape).to(data.dtype)
