"""MMVAE (Shi, Siddharth, Paige & Torr 2019, "Variational Mixture-of-Experts Autoencoders").

    q(z|X) = 1/M sum_m q(z|m)                                   (mixture of the unimodal experts)
    L = -1/M sum_m E_{z_1..z_K ~ q(z|m)} [ log 1/K sum_k p(z_k) p(X|z_k) / q(z_k|X) ],
    log p(X|z) = sum_m lambda_m log p(m|z),

the stratified importance-weighted bound: K draws from each expert, each weighed against the whole mixture,
so every expert learns to explain (and generate) every modality. K = 1 is the stratified ELBO. With `dreg`
the encoders get doubly reparameterised gradients (Tucker et al. 2019): log q(z|X) with the experts'
parameters held fixed, and the path gradient through z weighted by the squared normalised weights;
the reported loss stays the bound. An example mixes only the experts of the modalities it observes, and
scores only those.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..modalities import Modality
from ..posteriors import Gaussian, Posterior, mixture_of, stack, standard_normal
from ..subsets import OBSERVED, filled
from .base import Batch, MultimodalVAE, terms


class MMVAE(MultimodalVAE):
    HELP = {
        "attribute_weight": ("LAMBDA", "weight of every log p(y_i|z)"),
        "samples": ("K", "importance samples per expert"),
        "dreg": (None, "doubly reparameterised encoder gradients"),
    }
    PAPER = {
        "attribute_weight": 1.0,
        "samples": 30,
        "dreg": True,
    }  # Shi et al. 2019 (K = 1 is 30x cheaper a step)

    def __init__(
        self,
        modalities: Sequence[Modality],
        z_dim: int = 2,
        hidden: int = 512,
        attribute_weight: float = 50.0,
        samples: int = 1,
        dreg: bool = False,
        **networks,
    ):
        super().__init__(modalities, z_dim, hidden, **networks)
        if samples < 1:
            raise ValueError(f"samples {samples} (allowed: an integer >= 1)")
        self.attribute_weight, self.samples, self.dreg = attribute_weight, samples, dreg
        self.weights = {n: 1.0 if n in self.image_names else attribute_weight for n in self.names}

    def posterior(self, given: Batch) -> Posterior:
        experts = self.experts(given)
        return experts[0] if len(experts) == 1 else mixture_of(experts)

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        present = batch.get(OBSERVED)
        batch = filled(batch)
        q = stack([self.encoders[n](batch[n]) for n in self.names])  # (M, B, z_dim)
        z = q.rsample((self.samples,))  # (K, M, B, z_dim): z from q(z|m)
        fixed = Gaussian(q.loc.detach(), q.scale.detach()) if self.dreg and z.requires_grad else q
        # log q(z|X) = logsumexp_m' [log q(z|m') + log w_m'], w uniform over the observed experts
        log_each = fixed.log_prob(z.unsqueeze(-3))  # (K, M, M', B)
        log_q = torch.logsumexp(log_each + self._log_mixture_weights(present, z.device), -2)  # (K, M, B)
        log_p = self.log_likelihood(z, batch)  # each decoder once on K*M*B rows
        log_px = sum(
            self.weights[m] * (lp if present is None else lp * present[:, i])
            for i, (m, lp) in enumerate(log_p.items())
        )
        log_iw = standard_normal(z).log_prob(z) + log_px - log_q  # (K, M, B)
        bound = torch.logsumexp(log_iw, 0) - math.log(self.samples)  # (M, B): one per expert
        per_example = self._mean_over_experts(-bound, present)
        if self.dreg and z.requires_grad:
            surrogate = self._dreg_surrogate(z, log_iw, present)
            per_example = (
                per_example.detach() + surrogate - surrogate.detach()
            )  # the bound's value, DReG's gradient
        named = {f"nll_{m}": -lp.mean((0, 1)) for m, lp in log_p.items()}
        named |= {f"iwae_{m}": -b for m, b in zip(self.names, bound)}
        return per_example.mean(), terms(**named)

    def _log_mixture_weights(self, present: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        """log w_m' of q(z|X) = sum_m' w_m' q(z|m'): uniform over the observed experts, (M', 1) or (M', B)."""
        if present is None:
            return torch.full((len(self.names), 1), -math.log(len(self.names)), device=device)
        return torch.where(present, -present.sum(-1).log().unsqueeze(-1), -math.inf).T

    @staticmethod
    def _mean_over_experts(per_expert: torch.Tensor, present: torch.Tensor | None) -> torch.Tensor:
        """(M, B) -> (B,): the mean over each example's observed experts."""
        if present is None:
            return per_expert.mean(0)
        return (per_expert * present.T).sum(0) / present.sum(-1)

    @staticmethod
    def _dreg_surrogate(z: torch.Tensor, log_iw: torch.Tensor, present: torch.Tensor | None) -> torch.Tensor:
        """A per-example quantity whose gradient is DReG's: sum_k w_k log w_k (w normalised, held fixed), with
        the gradient reaching z multiplied by w_k once more."""
        w = torch.softmax(log_iw, 0).detach()  # (K, M, B)
        z.register_hook(lambda grad: grad * w.unsqueeze(-1))
        return MMVAE._mean_over_experts(-(w * log_iw).sum(0), present)

    def describe(self) -> str:
        lam = "" if self.attribute_weight == 1 else f", each log p(y_i|z) weighted {self.attribute_weight:g}"
        all_ = ",".join(self.names)
        bound = "log 1/K sum_k p(z_k) p(X|z_k) / q(z_k|X)" if self.samples > 1 else "log p(z) p(X|z) / q(z|X)"
        return (
            f"MMVAE (K={self.samples}{', DReG' if self.dreg else ''}):  L = -1/{len(self.names)} sum_(m in "
            f"{all_}) E_(z ~ q(z|m))[{bound}],  X = {all_},  q(z|X) = 1/{len(self.names)} sum_m q(z|m){lam}"
        )
