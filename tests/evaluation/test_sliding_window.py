"""The batched sliding window that evaluate and recover share, against nnU-Net's own."""

from __future__ import annotations

import torch

from nnunet_dsmm.evaluation.sliding_window import sliding_window


def test_blending_a_tile_function_that_returns_its_input_gives_the_volume_back():
    torch.manual_seed(0)
    volumes = torch.randn(3, 2, 23, 30, 17)
    calls = []

    def identity(tiles):
        calls.append(tuple(tiles.shape))
        return tiles.clone()

    out = sliding_window(volumes, (16, 16, 16), identity, 2, dtype=torch.float32)
    assert out.shape == volumes.shape and torch.allclose(out, volumes, atol=1e-5)
    # one call per tile position, every volume of the batch in it: 2 x 3 x 2 positions
    assert calls == [(3, 2, 16, 16, 16)] * 12


def test_a_volume_smaller_than_a_tile_is_padded_and_cropped_back():
    volumes = torch.arange(2 * 5 * 6 * 7, dtype=torch.float32).reshape(1, 2, 5, 6, 7)
    seen = []
    out = sliding_window(volumes, (8, 8, 8), lambda t: seen.append(t.shape) or t.sum(1, keepdim=True), 1,
                         dtype=torch.float32)
    assert seen == [(1, 2, 8, 8, 8)] and out.shape == (1, 1, 5, 6, 7)
    assert torch.allclose(out[0, 0], volumes[0].sum(0))
