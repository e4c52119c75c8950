"""MVAE (Wu & Goodman 2018, "Multimodal Generative Models for Scalable Weakly-Supervised Learning").

    q(z|S) = p(z) prod_{m in S} q(z|m)                       (product of experts, the prior one of them)
    L = ELBO(all) + sum_m ELBO({m}) + sum_{k random S} ELBO(S),
    ELBO(S) = -E_q(z|S)[sum_{m in S} lambda_m log p(m|z)] + KL(q(z|S) || p(z)),

lambda = 1 for the image and `attribute_weight` for each attribute; the k random subsets (`random_subsets`)
are drawn each step from those of 2 .. M-1 modalities. A modality an example does not observe leaves its
expert out of the product and its term out of the reconstruction, so a subset it observes none of costs
nothing (q = p(z), KL 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..modalities import Modality
from ..posteriors import Posterior, kl, product_of_experts, standard_normal, subset_products
from ..subsets import OBSERVED, filled, membership, random_subsets
from .base import Batch, MultimodalVAE, terms


class MVAE(MultimodalVAE):
    HELP = {
        "attribute_weight": ("LAMBDA", "weight of every log p(y_i|z)"),
        "random_subsets": ("K", "ELBOs of K random subsets of 2..M-1 modalities per step"),
    }
    PAPER = {"attribute_weight": 50.0}  # the MNIST experiment of Wu & Goodman 2018 weighs the label 50

    def __init__(
        self,
        modalities: Sequence[Modality],
        z_dim: int = 2,
        hidden: int = 512,
        attribute_weight: float = 50.0,
        random_subsets: int = 1,
        **networks,
    ):
        super().__init__(modalities, z_dim, hidden, **networks)
        self.attribute_weight, self.random_subsets = attribute_weight, random_subsets
        self.weights = {n: 1.0 if n in self.image_names else attribute_weight for n in self.names}
        self.fixed = [tuple(self.names)] + [(n,) for n in self.names]  # the joint, then each modality

    def posterior(self, given: Batch) -> Posterior:
        return product_of_experts(self.experts(given), prior=True)

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        present = batch.get(OBSERVED)
        batch = filled(batch)
        subsets = self.fixed + random_subsets(self.names, self.random_subsets)
        experts = [self.encoders[n](batch[n]) for n in self.names]
        q = subset_products(
            experts, membership(subsets, self.names).to(batch[self.names[0]].device), True, present
        )
        z = q.rsample()  # (S, B, z_dim)
        kl_prior = kl(q, standard_normal(z))  # (S, B)
        recon = torch.zeros_like(kl_prior)
        for m in self.names:  # each decoder once, on the subsets holding m
            rows = [i for i, s in enumerate(subsets) if m in s]
            lp = self.log_likelihood(z[rows], batch, [m])[m]
            if present is not None:
                lp = lp * present[:, self.names.index(m)]
            recon = recon.index_add(0, torch.tensor(rows, device=z.device), self.weights[m] * lp)
        elbo = -recon + kl_prior  # (S, B): minus each ELBO
        named = {f"elbo_{self._label(s)}": e for s, e in zip(self.fixed, elbo)}
        if len(subsets) > len(self.fixed):
            named["elbo_random"] = elbo[len(self.fixed) :].sum(0)
        return elbo.sum(0).mean(), terms(**named)

    def _label(self, s: tuple[str, ...]) -> str:
        return "joint" if len(s) == len(self.names) else ",".join(s)

    def describe(self) -> str:
        lam = "" if self.attribute_weight == 1 else f", each log p(y_i|z) weighted {self.attribute_weight:g}"
        singles = " + ".join(f"ELBO({n})" for n in self.names)
        k = (
            f" + sum of {self.random_subsets} random ELBO(S), |S| = 2..{len(self.names) - 1}"
            if self.random_subsets and len(self.names) > 2
            else ""
        )
        return (
            f"MVAE:  L = ELBO({','.join(self.names)}) + {singles}{k},  ELBO(S) = -E_q(z|S)[sum_(m in S) log "
            f"p(m|z)] + KL(q(z|S) || p(z)),  q(z|S) = p(z) prod_(m in S) q(z|m){lam}"
        )
