"""Posteriors over the latent z, and the one protocol every model's posterior follows.

A posterior gives `rsample(shape)` (reparameterised draws), `sample(shape)`, `log_prob(z)` summed over the
latent (one number per example), `mean`, `stddev` (per dimension, for point sizes), `components()`
(weights, locations and scales of its Gaussians, for ellipses) and `tempered(T)`. Two kinds implement it:
`Gaussian`, a diagonal Gaussian (a `torch.distributions.Normal` whose log_prob sums over z, so the hot loop
keeps torch's analytic, stacked KLs), and `Mixture` of them. Metrics and figures use only the protocol.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch.distributions import Normal, kl_divergence

LOG_2PI = math.log(2 * math.pi)


class Gaussian(Normal):
    """A diagonal Gaussian over z: batch shape (..., z_dim), log_prob summed over z.

    Argument validation is off: it costs several ops per call in the training loop, and every scale built
    here is positive by construction (softplus, or a sum of precisions).
    """

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor):
        super().__init__(loc, scale, validate_args=False)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return super().log_prob(z).sum(-1)

    def components(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weights (..., 1), loc (..., 1, z_dim), scale (..., 1, z_dim)): one component."""
        return torch.ones_like(self.loc[..., :1]), self.loc.unsqueeze(-2), self.scale.unsqueeze(-2)

    def tempered(self, temperature: float) -> Gaussian:
        """z = mean + T std eps."""
        return Gaussian(self.loc, self.scale * temperature)


def standard_normal(like: torch.Tensor) -> Gaussian:
    """p(z) = N(0, I), shaped and placed like `like`."""
    return Gaussian(torch.zeros_like(like), torch.ones_like(like))


class Mixture:
    """A mixture of K diagonal Gaussians: weights (..., K) (given as logits), components (..., K, z_dim).

    Where the codes of the images an attribute value should cover are not one Gaussian blob, a few
    components can follow them; a product of mixtures is still a mixture, in closed form. MMVAE's and MoPoE's
    posteriors are mixtures of experts and of products of experts.
    """

    def __init__(self, logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor):
        self.log_weights = logits.log_softmax(-1)
        self.loc, self.scale = loc, scale

    @property
    def gaussians(self) -> Gaussian:
        return Gaussian(self.loc, self.scale)

    @property
    def mean(self) -> torch.Tensor:
        return (self.log_weights.exp().unsqueeze(-1) * self.loc).sum(-2)

    @property
    def stddev(self) -> torch.Tensor:
        """Per dimension, of the whole mixture: within-component variance plus the spread of the means."""
        w = self.log_weights.exp().unsqueeze(-1)
        second = (w * (self.scale.square() + self.loc.square())).sum(-2)
        return (second - self.mean.square()).clamp_min(0).sqrt()

    def components(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.log_weights.exp(), self.loc, self.scale

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z) for z of shape (..., z_dim), summed over the latent dimensions."""
        per_component = self.gaussians.log_prob(z.unsqueeze(-2))
        return torch.logsumexp(per_component + self.log_weights, -1)

    def rsample(self, shape: torch.Size | tuple = ()) -> torch.Tensor:
        """Draws (shape + batch, z_dim): a component by its weight, then a reparameterised point of it.

        The choice of component cannot be reparameterised, so gradients reach the components' locations and
        scales, not the weights; objectives that need the weights' gradient use `stratified_rsample`.
        """
        k = torch.distributions.Categorical(logits=self.log_weights, validate_args=False).sample(shape)
        index = k[..., None, None].expand(*k.shape, 1, self.loc.shape[-1])
        pick = lambda t: t.expand(*shape, *t.shape).gather(-2, index).squeeze(-2)
        loc, scale = pick(self.loc), pick(self.scale)
        return loc + scale * torch.randn_like(loc)

    @torch.no_grad()
    def sample(self, shape: torch.Size | tuple = ()) -> torch.Tensor:
        return self.rsample(shape)

    def tempered(self, temperature: float) -> Mixture:
        return Mixture(self.log_weights, self.loc, self.scale * temperature)


Posterior = Gaussian | Mixture


def first_rows(q: Posterior, n: int | None) -> Posterior:
    """The posteriors of a batch's first n examples (all of them where n is None)."""
    if isinstance(q, Mixture):
        return Mixture(q.log_weights[:n], q.loc[:n], q.scale[:n])
    return Gaussian(q.loc[:n], q.scale[:n])


def as_mixture(q: Posterior) -> Mixture:
    if isinstance(q, Mixture):
        return q
    return Mixture(torch.zeros_like(q.loc[..., :1]), q.loc.unsqueeze(-2), q.scale.unsqueeze(-2))


def mixture_of(experts: list[Posterior]) -> Mixture:
    """The uniform mixture of the given posteriors (each keeps its own components), e.g. MMVAE's
    (1/M) sum_m q(z|x_m)."""
    parts = [as_mixture(e) for e in experts]
    log_w = torch.cat([p.log_weights for p in parts], -1)
    return Mixture(log_w, torch.cat([p.loc for p in parts], -2), torch.cat([p.scale for p in parts], -2))


def kl(q: Normal, p: Normal) -> torch.Tensor:
    """KL(q || p) in closed form, summed over the latent dimensions: shape (...,)."""
    return kl_divergence(q, p).sum(-1)


def stack(dists: Sequence[Normal]) -> Gaussian:
    """Gaussians of one shape stacked along a new leading dimension.

    kl(q, stack([p1, p2, ...])) evaluates KL(q || p_i) for every i in one pass of a dozen ops instead of a
    dozen per KL, which counts in a training step made of many small ops.
    """
    return Gaussian(torch.stack([d.loc for d in dists]), torch.stack([d.scale for d in dists]))


def divergences(q: Gaussian, z: torch.Tensor, targets: list[Posterior]) -> torch.Tensor:
    """KL(q || p) for every target p, stacked: (len(targets), ...).

    Gaussian targets are analytic, all of them in one stacked evaluation; a mixture target has no closed
    form and gets the one-sample estimate log q(z) - log p(z) at the objective's own draw z ~ q (unbiased,
    and differentiable through the reparameterised z).
    """
    normals = [t for t in targets if isinstance(t, Normal)]
    if len(normals) == len(targets):
        return kl(q, stack(normals))
    log_q = q.log_prob(z)
    return torch.stack([kl(q, t) if isinstance(t, Normal) else log_q - t.log_prob(z) for t in targets])


def stratified_rsample(q: Posterior) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Reparameterised draws for E_q[f]: one per component, stacked first (K, ..., z_dim), with the component
    weights (K, ...); E_q[f] ~ sum_k w_k f(z_k), unbiased and differentiable in the weights too (a mixture's
    choice of component cannot be reparameterised). A Gaussian is one component with weights None."""
    if isinstance(q, Mixture):
        z = q.loc + q.scale * torch.randn_like(q.loc)
        return z.movedim(-2, 0), q.log_weights.exp().movedim(-1, 0)
    return q.rsample().unsqueeze(0), None


def product_of_experts(
    experts: list[Posterior], prior: bool = True, present: list[torch.Tensor] | None = None
) -> Posterior:
    """The normalised product of Gaussian experts (or of mixtures of them), in closed form.

    Precisions add and the mean is the precision-weighted mean. With `prior=True` the standard normal
    p(z) is one more expert (precision 1, mean 0), as in q(z|y) = p(z) prod_i q(z|y_i). If any expert is a
    mixture, the product is the mixture over every choice of one component per expert (see
    `_mixture_product`). `present` (one (...,) bool per expert) leaves an expert out of the product where it
    is False, as for an attribute not observed in that example (Gaussian experts only).
    """
    if not experts:
        raise ValueError("product_of_experts needs at least one expert")
    if any(isinstance(e, Mixture) for e in experts):
        if present is not None:
            raise ValueError("product_of_experts: `present` needs Gaussian experts")
        return _mixture_product([as_mixture(e) for e in experts], prior)
    precisions = [e.scale.pow(-2) for e in experts]
    if present is not None:
        precisions = [p * m.unsqueeze(-1) for p, m in zip(precisions, present)]
    precision = torch.stack(precisions).sum(0)
    weighted = torch.stack([e.loc * p for e, p in zip(experts, precisions)]).sum(0)
    if prior:
        precision = precision + 1.0
    var = precision.reciprocal()
    return Gaussian(weighted * var, var.sqrt())


def _mixture_product(experts: list[Mixture], prior: bool) -> Mixture:
    """prod_i sum_k w_ik N(mu_ik, s_ik) = sum over (k_1..k_n) of w_1k1...w_nkn Z(k) N(mu(k), s(k)).

    Each term is a product of Gaussians: its precision-weighted mean and summed precision as above, and
    its mass Z, per dimension -1/2 [(n-1) log 2pi + sum_i log s_i^2 + log P + sum_i p_i mu_i^2 - P m^2]
    (P = sum p_i, m = sum p_i mu_i / P), joins the weight.
    """
    if prior:
        like = experts[0]
        experts = [
            Mixture(
                torch.zeros_like(like.log_weights[..., :1]),
                torch.zeros_like(like.loc[..., :1, :]),
                torch.ones_like(like.scale[..., :1, :]),
            ),
            *experts,
        ]
    n = len(experts)

    def spread(t: torch.Tensor, i: int, event: int) -> torch.Tensor:
        """Move expert i's component axis (just before the `event` trailing dims) to slot i of n axes."""
        lead = t.shape[: t.dim() - 1 - event]
        shape = [*lead, *[1] * n, *t.shape[t.dim() - event :]]
        shape[len(lead) + i] = t.shape[len(lead)]
        return t.reshape(shape)

    locs = [spread(e.loc, i, 1) for i, e in enumerate(experts)]
    precisions = [spread(e.scale, i, 1).pow(-2) for i, e in enumerate(experts)]
    log_w = sum(spread(e.log_weights, i, 0) for i, e in enumerate(experts))
    precision = cast(torch.Tensor, sum(precisions))
    weighted = sum(p * m for p, m in zip(precisions, locs))
    var = precision.reciprocal()
    loc = weighted * var
    log_mass = -0.5 * (
        (n - 1) * LOG_2PI
        - sum(p.log() for p in precisions)
        + precision.log()
        + sum(p * m * m for p, m in zip(precisions, locs))
        - weighted * loc
    ).sum(-1)
    lead = loc.shape[: loc.dim() - 1 - n]
    z_dim = loc.shape[-1]
    return Mixture(
        (log_w + log_mass).reshape(*lead, -1),
        loc.reshape(*lead, -1, z_dim),
        var.sqrt().reshape(*lead, -1, z_dim),
    )


def subset_products(
    experts: list[Gaussian], membership: torch.Tensor, prior: bool = True, present: torch.Tensor | None = None
) -> Gaussian:
    """p(z) prod_{m in S} q(z|m) for every subset S at once: stacked (S, ..., z_dim).

    `membership` (S, M) says which of the M experts each subset multiplies; `present` (..., M) leaves an
    expert out of the examples that do not observe it. One matrix product over the stacked precisions,
    instead of a product of experts per subset.
    """
    precision = torch.stack([e.scale.pow(-2) for e in experts])  # (M, ..., z_dim)
    if present is not None:
        precision = precision * present.movedim(-1, 0).unsqueeze(-1)
    weighted = precision * torch.stack([e.loc for e in experts])
    a = membership.to(precision.dtype)
    total = torch.tensordot(a, precision, 1) + (1.0 if prior else 0.0)
    var = total.reciprocal()
    return Gaussian(torch.tensordot(a, weighted, 1) * var, var.sqrt())
