"""TELBO (Vedantam, Fischer, Huang & Murphy 2018, "Generative Models of Visually Grounded Imagination").

The same networks trained with one ELBO per way of observing the data:

    L = ELBO(x, y | q(z|x,y)) + ELBO(x | q(z|x)) + sum_S ELBO(y_S | q(z|y_S)),
    ELBO(o | q) = -E_q[log p(o|z)] + KL(q || p(z)),   q(z|y_S) = p(z) prod_{i in S} q(z|y_i),

every log p(y_i|z) weighted by lambda (attribute_weight; the paper's best MNIST-A runs use 50). The paper
has S = all attributes only; every_subset adds an ELBO for every non-empty attribute subset, so each
single-attribute expert is trained on its own; image_recon = gamma_x adds gamma_x log p(x|z) to the
ELBO of q(z|y), so p(x|z) learns to draw the class wherever q(z|y) puts its mass. An example trains the
ELBOs whose modalities it observes (an image without attributes: ELBO(x) alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch

from ..modalities import Modality
from ..posteriors import Gaussian, kl, stack, standard_normal
from ..subsets import filled, observed
from .base import Batch, terms, zero_unseen
from .joint import SHARED_TRUNK_HELP, JointVAE


class TELBO(JointVAE):
    HELP = {
        "attribute_weight": ("LAMBDA", "weight of every log p(y_i|z)"),
        "every_subset": (
            None,
            "an ELBO for every non-empty attribute subset, not only all attributes together",
        ),
        "image_recon": ("GAMMA_X", "weight of the image reconstructed in the ELBO of q(z|y)"),
        "shared_trunk": SHARED_TRUNK_HELP,
    }
    PAPER = {"attribute_weight": 1.0, "every_subset": False, "image_recon": 0.0}  # Vedantam et al. 2018

    def __init__(
        self,
        modalities: Sequence[Modality],
        z_dim: int = 2,
        hidden: int = 512,
        attribute_weight: float = 1.0,
        every_subset: bool = False,
        image_recon: float = 0.0,
        shared_trunk: bool = False,
        **networks,
    ):
        super().__init__(modalities, z_dim, hidden, shared_trunk=shared_trunk, **networks)
        self.attribute_weight, self.image_recon = attribute_weight, image_recon
        xs, every = tuple(self.image_names), tuple(a.name for a in self.attributes)
        lam = attribute_weight
        # each ELBO: the modalities its posterior is given, and the weight of each log p(m|z) it scores.
        # Several images: one ELBO per image alone (each trains its own expert) and one given them all (their
        # product is a posterior of its own, not the product of k posteriors that each hold the prior)
        self.elbos: dict[str, tuple[tuple[str, ...], dict[str, float]]] = {}
        self.joint = self._add(
            f"{xs[0]}y" if len(xs) == 1 else "joint",
            (*xs, *every),
            {x: 1.0 for x in xs} | {a: lam for a in every},
        )
        for x in xs:
            self._add(x, (x,), {x: 1.0})
        if len(xs) > 1:
            self._add(self._x(), xs, {x: 1.0 for x in xs})
        for s in self.attribute_subsets(every_subset):
            scored = {a: lam for a in s} | (
                {x: image_recon for x in xs} if image_recon and s == every else {}
            )
            self._add("y" if s == every else ",".join(s), s, scored)

    def _add(self, name: str, given: tuple[str, ...], weights: dict[str, float]) -> str:
        """Add an ELBO under `name`, prefixed with "_" while a modality's name already took it."""
        while name in self.elbos:
            name = "_" + name
        self.elbos[name] = (given, weights)
        return name

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        seen = {
            v: observed(batch, self.names, [*given, *weights]) for v, (given, weights) in self.elbos.items()
        }
        batch = filled(batch)
        # Gaussians: the joint encoder, q(z|x), and products of TELBO's Gaussian experts (no `components`)
        posteriors = self.posteriors(batch, [given for given, _ in self.elbos.values()])
        q = {v: cast(Gaussian, p) for v, p in zip(self.elbos, posteriors)}
        z = {v: q[v].rsample() for v in self.elbos}
        kls = kl(stack(list(q.values())), standard_normal(z[self.joint]))  # KL(q || p(z)) per ELBO
        kl_prior = dict(zip(self.elbos, kls))
        weighted = kl_prior if self.kl_weight == 1 else dict(zip(self.elbos, self.kl_weight * kls))
        # log p(m|z) of every ELBO that scores m, each decoder run once on those ELBOs' latents stacked
        log_p: dict[tuple[str, str], torch.Tensor] = {}
        for m in self.modalities:
            scoring = [v for v, (_, weights) in self.elbos.items() if m in weights]
            rows = self.log_likelihood(torch.stack([z[v] for v in scoring]), batch, [m])[m]
            log_p |= {(v, m): row for v, row in zip(scoring, rows)}
        elbo = {
            v: zero_unseen(-sum(w * log_p[v, m] for m, w in weights.items()) + weighted[v], seen[v])
            for v, (_, weights) in self.elbos.items()
        }
        joint = self.joint
        named = {f"nll_{m}" if v == joint else f"nll_{m}|{v}": -lp for (v, m), lp in log_p.items()}
        named |= {"kl_prior" if v == joint else f"kl_{v}_prior": kl_prior[v] for v in self.elbos}
        named |= {f"elbo_{v}": e for v, e in elbo.items()}
        return cast(torch.Tensor, sum(elbo.values())).mean(), terms(**named)

    def describe(self) -> str:
        x, y = self._x(), self._y()
        lam = "" if self.attribute_weight == 1 else f"{self.attribute_weight:g} "
        image = f"{self.image_recon:g} log p({x}|z) + " if self.image_recon else ""
        rest = " + ".join(  # the images alone (and together), then the attribute subsets: the ELBOs' order
            f"ELBO({','.join(given)} | q(z|{','.join(given)}))"
            for v, (given, _) in self.elbos.items()
            if v != self.joint
        )
        return (
            f"TELBO:  L = ELBO({x},{y} | q(z|{x},{y})) + {rest},"
            f"  ELBO(o | q) = -E_q[log p(o|z)] + KL(q || p(z))"
            + (f", each log p(y_i|z) weighted {self.attribute_weight:g}" if lam else "")
            + (f", ELBO({y} | q(z|{y})) scoring {image}log p({y}|z)" if image else "")
            + f",  q(z|{y}) = p(z) "
            + " ".join(f"q(z|{a.name})" for a in self.attributes)
        )
