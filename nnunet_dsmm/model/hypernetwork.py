"""The hypernetwork of Eq. 6: an MLP maps Z_v ⊕ Z_t to the weights and biases of the decoder's
prediction layers (one 1×1×1 convolution per deep-supervision head), per sample."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class HyperPredictionHeads(nn.Module):
    """Generates and applies per-sample prediction layers.

    ``head_channels[i]`` is the number of input channels of head i, ``out_channels`` the number
    of segmentation outputs. The last MLP layer starts with tiny weights and a bias equal to a
    freshly initialised set of convolution parameters, so training starts from ordinary heads.
    """

    def __init__(self, head_channels: Sequence[int], out_channels: int, indicator_dim: int, hidden_dim: int = 256):
        super().__init__()
        self.head_channels = list(head_channels)
        self.out_channels = out_channels
        self.sizes = [out_channels * c + out_channels for c in self.head_channels]
        self.mlp = nn.Sequential(nn.Linear(indicator_dim, hidden_dim), nn.LeakyReLU(inplace=True),
                                 nn.Linear(hidden_dim, sum(self.sizes)))
        with torch.no_grad():
            self.mlp[-1].weight.mul_(1e-2)
            initial = []
            for c in self.head_channels:
                conv = nn.Conv3d(c, out_channels, 1)
                initial += [conv.weight.flatten(), conv.bias.flatten()]
            self.mlp[-1].bias.copy_(torch.cat(initial))

    def generate(self, indicator: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per head: weights (B, out, C_i) and biases (B, out) from the indicator (B, indicator_dim)."""
        params = self.mlp(indicator)
        heads = []
        for c, chunk in zip(self.head_channels, params.split(self.sizes, dim=1)):
            weight, bias = chunk.split([self.out_channels * c, self.out_channels], dim=1)
            heads.append((weight.reshape(-1, self.out_channels, c), bias))
        return heads

    def forward(self, indicator: torch.Tensor, features: Sequence[torch.Tensor],
                head_indices: Sequence[int]) -> list[torch.Tensor]:
        """Apply heads ``head_indices`` to the matching decoder features (B, C_i, *spatial)."""
        heads = self.generate(indicator)
        outputs = []
        for index, feature in zip(head_indices, features):
            weight, bias = heads[index]
            # one batched contraction per head: bias + W_b @ F_b for every sample b, F_b as (C_i, voxels)
            out = torch.baddbmm(bias.unsqueeze(2).to(feature.dtype), weight.to(feature.dtype), feature.flatten(2))
            outputs.append(out.reshape(*out.shape[:2], *feature.shape[2:]))
        return outputs
