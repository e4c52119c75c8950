"""MVTCAE (Hwang, Kim, Hong & Kim 2021, "Multi-View Representation Learning via Total Correlation Objective").

    q(z|S) = prod_{m in S} q(z|m)                               (product of the experts, no prior expert)
    L = (M - a)/M * -E_q(z|X)[sum_m lambda_m log p(m|z)]
        + b [ (1 - a) KL(q(z|X) || p(z)) + a/M sum_m KL(q(z|X) || q(z|m)) ],

X every modality and M their number; a (`tc_alpha`) shares the KL between the joint posterior's distance to
the prior (the VIB term) and to each unimodal expert (the conditional VIB terms that bound the total
correlation), b (`beta`) weighs them all. An example multiplies the experts of the modalities it observes,
and reconstructs and compares against only those.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch

from ..modalities import Modality
from ..posteriors import Gaussian, Posterior, kl, product_of_experts, stack, standard_normal
from ..subsets import OBSERVED, filled
from .base import Batch, MultimodalVAE, terms


class MVTCAE(MultimodalVAE):
    HELP = {
        "attribute_weight": ("LAMBDA", "weight of every log p(y_i|z)"),
        "tc_alpha": (
            "A",
            "alpha, the KL's share on the KL(q(z|X) || q(z|m)), the rest on KL(q(z|X) || p(z))",
        ),
        "beta": ("B", "beta, the weight of all the KL terms"),
    }
    # Hwang et al. 2021 weigh the modalities alike; alpha and beta as their code's defaults (which MultiVae's
    # MVTCAEConfig keeps)
    PAPER = {"attribute_weight": 1.0, "tc_alpha": 0.1, "beta": 2.5}

    def __init__(
        self,
        modalities: Sequence[Modality],
        z_dim: int = 2,
        hidden: int = 512,
        attribute_weight: float = 50.0,
        tc_alpha: float = 0.1,
        beta: float = 1.0,
        **networks,
    ):
        super().__init__(modalities, z_dim, hidden, **networks)
        if not 0 <= tc_alpha <= 1:
            raise ValueError(f"tc_alpha {tc_alpha} (allowed: a number from 0 to 1)")
        self.attribute_weight, self.tc_alpha, self.beta = attribute_weight, tc_alpha, beta
        self.weights = {n: 1.0 if n in self.image_names else attribute_weight for n in self.names}

    def posterior(self, given: Batch) -> Posterior:
        return product_of_experts(self.experts(given), prior=False)

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        present = batch.get(OBSERVED)
        batch = filled(batch)
        experts = cast(list[Gaussian], [self.encoders[n](batch[n]) for n in self.names])  # no `components`
        q = cast(
            Gaussian,
            product_of_experts(
                list[Posterior](experts), prior=False, present=None if present is None else list(present.T)
            ),
        )
        z = q.rsample()  # (B, z_dim)
        log_p = self.log_likelihood(z, batch)
        seen = [1.0 if present is None else present[:, i] for i in range(len(self.names))]
        recon = sum(self.weights[m] * lp * s for (m, lp), s in zip(log_p.items(), seen))
        kl_prior = kl(q, standard_normal(z))  # (B,)
        kl_experts = kl(q, stack(experts))  # (M, B): KL(q(z|X) || q(z|m))
        if present is not None:
            kl_experts = kl_experts * present.T
        m, a = len(self.names), self.tc_alpha
        per_example = (m - a) / m * -recon + self.kl_weight * self.beta * (
            (1 - a) * kl_prior + a / m * kl_experts.sum(0)
        )
        named = {f"nll_{n}": -lp for n, lp in log_p.items()} | {"kl_prior": kl_prior}
        named |= {f"kl_{n}": k for n, k in zip(self.names, kl_experts)}
        return per_example.mean(), terms(**named)

    def describe(self) -> str:
        lam = "" if self.attribute_weight == 1 else f", each log p(y_i|z) weighted {self.attribute_weight:g}"
        all_, m, a = ",".join(self.names), len(self.names), self.tc_alpha
        return (
            f"MVTCAE (alpha={a:g}, beta={self.beta:g}):  L = {(m - a) / m:.3g} * -E_q(z|{all_})[log "
            f"p({all_}|z)] + {self.beta:g} * [{1 - a:.3g} KL(q(z|{all_}) || p(z)) + {a / m:.3g} sum_m "
            f"KL(q(z|{all_}) || q(z|m))],  q(z|S) = prod_(m in S) q(z|m){lam}"
        )
