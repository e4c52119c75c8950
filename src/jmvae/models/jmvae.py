"""JMVAE-kl (Suzuki, Nakayama & Matsuo 2016, "Joint Multimodal Learning with Deep Generative Models").

    L = -E_q(z|x,y)[log p(x,y|z)] + KL(q(z|x,y) || p(z))
        + alpha * [ KL(q(z|x,y) || q(z|x)) + KL(q(z|x,y) || q(z|y)) ]

with q(z|y) = p(z) prod_i q(z|y_i). alpha = 0 is JMVAE-zero (the unimodal encoders are then untrained).
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..gaussian import kl, stack, standard_normal
from ..modalities import Modality
from .base import Batch, MultimodalVAE, terms


class JMVAE(MultimodalVAE):
    def __init__(self, modalities: Sequence[Modality], z_dim: int = 2, hidden: int = 512, alpha: float = 1.0):
        super().__init__(modalities, z_dim, hidden)
        self.alpha = alpha

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        q = self.posterior(batch)                       # q(z|x,y)
        z = q.rsample()
        log_p = self.log_likelihood(z, batch)           # log p(m|z) for every modality
        x_view, y_view = self.views
        q_x = self.posterior({n: batch[n] for n in x_view})
        q_y = self.posterior({n: batch[n] for n in y_view})
        # KL(q(z|x,y) || p(z)), KL(q(z|x,y) || q(z|x)), KL(q(z|x,y) || q(z|y)), evaluated together
        kl_prior, kl_x, kl_y = kl(q, stack([standard_normal(q.loc), q_x, q_y]))
        recon = torch.stack(list(log_p.values())).sum(0)
        per_example = -recon + kl_prior + self.alpha * (kl_x + kl_y)
        named = {f"nll_{n}": -v for n, v in log_p.items()}
        return per_example.mean(), terms(**named, kl_prior=kl_prior, kl_x=kl_x, kl_y=kl_y)

    def describe(self) -> str:
        x, y = self.image.name, self._y()
        return (f"JMVAE (alpha={self.alpha:g}):  L = -E_q(z|{x},{y})[log p({x},{y}|z)] + KL(q(z|{x},{y}) || p(z))"
                f" + {self.alpha:g} * [KL(q(z|{x},{y}) || q(z|{x})) + KL(q(z|{x},{y}) || q(z|{y}))],"
                f"  q(z|{y}) = p(z) " + " ".join(f"q(z|{a.name})" for a in self.attributes))
