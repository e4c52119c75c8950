"""Encoder and decoder networks, as in the pixyz JMVAE example: MLPs 512-512 with ReLU.

Encoders end in a Gaussian head (mean, softplus scale); decoders end in the logits of their modality.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


class GaussianEncoder(nn.Module):
    """input -> hidden -> hidden -> N(loc, softplus(s))."""

    def __init__(self, in_dim: int, z_dim: int, hidden: int = 512):
        super().__init__()
        self.body = mlp([in_dim, hidden, hidden])
        self.head = nn.Linear(hidden, 2 * z_dim)

    def forward(self, h: torch.Tensor) -> Normal:
        loc, s = self.head(F.relu(self.body(h))).chunk(2, dim=-1)
        return Normal(loc, F.softplus(s), validate_args=False)


def decoder(z_dim: int, out_dim: int, hidden: int = 512) -> nn.Sequential:
    """z -> hidden -> hidden -> logits."""
    return mlp([z_dim, hidden, hidden, out_dim])
