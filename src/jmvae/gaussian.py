"""Diagonal Gaussians over the latent z: the prior, the analytic KL and the product of experts.

Every posterior in jmvae is a `torch.distributions.Normal` with batch shape (..., z_dim); the helpers here
sum over the last (latent) dimension so that a KL or a log-density is one number per example.
"""
from __future__ import annotations

import torch
from torch.distributions import Normal, kl_divergence


def standard_normal(like: torch.Tensor) -> Normal:
    """p(z) = N(0, I), shaped and placed like `like`.

    Distributions here skip argument validation: it costs several ops per call in the training loop,
    and every scale we build is positive by construction (softplus, or a sum of precisions).
    """
    zeros = torch.zeros_like(like)
    return Normal(zeros, torch.ones_like(like), validate_args=False)


def kl(q: Normal, p: Normal) -> torch.Tensor:
    """KL(q || p) in closed form, summed over the latent dimensions: shape (...,)."""
    return kl_divergence(q, p).sum(-1)


def stack(dists: list[Normal]) -> Normal:
    """Gaussians of one shape stacked along a new leading dimension.

    kl(q, stack([p1, p2, ...])) evaluates KL(q || p_i) for every i in one pass of a dozen ops instead of a
    dozen per KL, which counts in a training step made of many small ops.
    """
    return Normal(torch.stack([d.loc for d in dists]), torch.stack([d.scale for d in dists]), validate_args=False)


def log_density(dist: Normal, z: torch.Tensor) -> torch.Tensor:
    """log N(z; loc, scale) summed over the latent dimensions."""
    return dist.log_prob(z).sum(-1)


def product_of_experts(experts: list[Normal], prior: bool = True) -> Normal:
    """The normalised product of Gaussian experts, in closed form.

    Precisions add and the mean is the precision-weighted mean. With `prior=True` the standard normal
    p(z) is one more expert (precision 1, mean 0), as in q(z|y) = p(z) prod_i q(z|y_i).
    """
    if not experts:
        raise ValueError("product_of_experts needs at least one expert")
    precisions = [e.scale.pow(-2) for e in experts]
    precision = torch.stack(precisions).sum(0)
    weighted = torch.stack([e.loc * p for e, p in zip(experts, precisions)]).sum(0)
    if prior:
        precision = precision + 1.0
    var = precision.reciprocal()
    return Normal(weighted * var, var.sqrt(), validate_args=False)
