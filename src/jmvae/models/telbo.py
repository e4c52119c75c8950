"""TELBO (Vedantam, Fischer, Huang & Murphy 2018, "Generative Models of Visually Grounded Imagination").

The same networks trained with three ELBOs, one per way of observing the data:

    L = ELBO(x, y | q(z|x,y)) + ELBO(x | q(z|x)) + ELBO(y | q(z|y)),
    ELBO(o | q) = -E_q[log p(o|z)] + KL(q || p(z)),   q(z|y) = p(z) prod_i q(z|y_i).
"""
from __future__ import annotations

import torch

from ..gaussian import kl, stack, standard_normal
from .base import Batch, MultimodalVAE, terms


class TELBO(MultimodalVAE):
    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x_view, y_view = self.views
        views = {"xy": tuple(self.modalities), "x": x_view, "y": y_view}   # what each ELBO observes
        q = {v: self.posterior({n: batch[n] for n in names}) for v, names in views.items()}
        z = {v: q[v].rsample() for v in views}
        kl_prior = dict(zip(views, kl(stack(list(q.values())), standard_normal(z["xy"]))))  # KL(q || p(z))
        # log p(m|z) of every ELBO that scores m, each decoder run once on those ELBOs' latents stacked
        log_p = {}
        for m in self.modalities:
            scoring = [v for v, names in views.items() if m in names]
            rows = self.log_likelihood(torch.stack([z[v] for v in scoring]), batch, [m])[m]
            log_p |= {(v, m): row for v, row in zip(scoring, rows)}
        elbo = {v: -torch.stack([log_p[v, m] for m in names]).sum(0) + kl_prior[v] for v, names in views.items()}
        named = {f"nll_{m}" if v == "xy" else f"nll_{m}|{v}": -lp for (v, m), lp in log_p.items()}
        per_example = elbo["xy"] + elbo["x"] + elbo["y"]
        return per_example.mean(), terms(**named, kl_prior=kl_prior["xy"], kl_x_prior=kl_prior["x"],
                                         kl_y_prior=kl_prior["y"], elbo_xy=elbo["xy"], elbo_x=elbo["x"], elbo_y=elbo["y"])

    def describe(self) -> str:
        x, y = self.image.name, self._y()
        return (f"TELBO:  L = ELBO({x},{y} | q(z|{x},{y})) + ELBO({x} | q(z|{x})) + ELBO({y} | q(z|{y})),"
                f"  ELBO(o | q) = -E_q[log p(o|z)] + KL(q || p(z)),  q(z|{y}) = p(z) "
                + " ".join(f"q(z|{a.name})" for a in self.attributes))
