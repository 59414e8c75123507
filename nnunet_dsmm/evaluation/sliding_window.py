"""nnU-Net's sliding-window inference for several volumes at once.

The same tiles, Gaussian importance weighting, padding and accumulation order as
``nnUNetPredictor.predict_sliding_window_return_logits``, but every tile position is predicted for
a whole batch of volumes (e.g. the 2^M - 1 channel combinations of one case) in one network call.
Memory is bounded by the tile size, not the volume size. Used by ``evaluate`` (all combinations
of a case per tile) and ``recover`` (M_rec on BraTS-size volumes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


@torch.inference_mode()
def sliding_window(volumes: torch.Tensor, patch_size: Sequence[int], predict: Callable[[torch.Tensor], torch.Tensor],
                   num_outputs: int, tile_step_size: float = 0.5, device: torch.device = torch.device("cpu"),
                   results_device: torch.device | None = None, dtype: torch.dtype = torch.half) -> torch.Tensor:
    """Blend ``predict``'s outputs over overlapping tiles of ``volumes`` (K, C, *spatial).

    ``predict`` maps a batch of tiles (K, C, *patch_size) on ``device`` to (K, num_outputs,
    *patch_size). Returns (K, num_outputs, *spatial) on ``results_device`` in ``dtype`` (nnU-Net
    accumulates logits in float16; pass float32 for intensities). Volumes smaller than a tile are
    zero-padded, as nnU-Net does.
    """
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window

    patch_size = tuple(int(p) for p in patch_size)
    if volumes.ndim != len(patch_size) + 2:
        raise ValueError(f"volumes of shape {tuple(volumes.shape)} do not fit tiles of size {patch_size}")
    results_device = results_device or device
    padded, revert = pad_nd_image(volumes, patch_size, "constant", {"value": 0}, True, None)
    padded = padded.to(results_device)
    steps = compute_steps_for_sliding_window(padded.shape[2:], patch_size, tile_step_size)
    gaussian = compute_gaussian(patch_size, sigma_scale=1.0 / 8, value_scaling_factor=10, dtype=dtype,
                                device=results_device)
    blended = torch.zeros((padded.shape[0], num_outputs, *padded.shape[2:]), dtype=dtype, device=results_device)
    weights = torch.zeros(padded.shape[2:], dtype=dtype, device=results_device)
    for start in _tile_starts(steps):
        window = tuple(slice(s, s + p) for s, p in zip(start, patch_size))
        tiles = padded[(slice(None), slice(None), *window)].contiguous().to(device)
        prediction = predict(tiles).to(results_device)
        prediction *= gaussian
        blended[(slice(None), slice(None), *window)] += prediction
        weights[window] += gaussian
    torch.div(blended, weights, out=blended)
    return blended[(slice(None), slice(None), *revert[2:])]


def _tile_starts(steps: list[list[int]]) -> list[tuple[int, ...]]:
    """Tile corners in nnU-Net's order (last axis fastest)."""
    starts: list[tuple[int, ...]] = [()]
    for axis_steps in steps:
        starts = [s + (step,) for s in starts for step in axis_steps]
    return starts
