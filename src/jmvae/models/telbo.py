"""TELBO (Vedantam, Fischer, Huang & Murphy 2018, "Generative Models of Visually Grounded Imagination").

The same networks trained with three ELBOs, one per way of observing the data:

    L = ELBO(x, y | q(z|x,y)) + ELBO(x | q(z|x)) + ELBO(y | q(z|y)),
    ELBO(o | q) = -E_q[log p(o|z)] + KL(q || p(z)),   q(z|y) = p(z) prod_i q(z|y_i).
"""
from __future__ import annotations

import torch

from .base import Batch, MultimodalVAE, terms


class TELBO(MultimodalVAE):
    def _elbo(self, batch: Batch, names: tuple[str, ...]) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Negative ELBO of the named modalities under q(z|those modalities)."""
        q = self.posterior({n: batch[n] for n in names})
        log_p = self.log_likelihood(q.rsample(), batch, names)
        kl_prior = self.kl_prior(q)
        return -torch.stack(list(log_p.values())).sum(0) + kl_prior, log_p, kl_prior

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x_view, y_view = self.views
        joint, log_p, kl_joint = self._elbo(batch, tuple(self.modalities))
        only_x, log_px, kl_x = self._elbo(batch, x_view)
        only_y, log_py, kl_y = self._elbo(batch, y_view)
        named = {f"nll_{n}": -v for n, v in log_p.items()}
        named |= {f"nll_{n}|{n}": -v for n, v in log_px.items()}
        named |= {f"nll_{n}|y": -v for n, v in log_py.items()}
        per_example = joint + only_x + only_y
        return per_example.mean(), terms(**named, kl_prior=kl_joint, kl_x_prior=kl_x, kl_y_prior=kl_y,
                                         elbo_xy=joint, elbo_x=only_x, elbo_y=only_y)

    def describe(self) -> str:
        x, y = self.image.name, self._y()
        return (f"TELBO:  L = ELBO({x},{y} | q(z|{x},{y})) + ELBO({x} | q(z|{x})) + ELBO({y} | q(z|{y})),"
                f"  ELBO(o | q) = -E_q[log p(o|z)] + KL(q || p(z)),  q(z|{y}) = p(z) "
                + " ".join(f"q(z|{a.name})" for a in self.attributes))
