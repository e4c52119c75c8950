"""MMVAE+ (Palumbo, Daunhawer & Vogt 2023, "MMVAE+: Enhancing the Generative Quality of Multimodal VAEs
without Compromises").

Each modality m has its own private latent w_m beside the shared z; p(m|z, w_m) decodes both.

    q(z|X) = 1/M sum_m q(z|m)                          (mixture of the shared experts, as MMVAE)
    L = -1/M sum_m E_{z_k ~ q(z|m), w_k ~ q(w_m|m), w'_k,n ~ r_n} [ log 1/K sum_k
          p(m|z_k, w_k) prod_(n != m) p(n|z_k, w'_k,n)
          * ( p(z_k) p(w_k) / (q(z_k|X) q(w_k|m)) )^beta ],

with p(z), p(w) standard normals and r_n = N(0, diag(s_n^2)) an auxiliary prior (s_n learnt): decoding
modality n from another's z takes w_n from r_n, so z alone must carry what the modalities share. Generation
and likelihoods draw every w_n from r_n. An example mixes and scores only the modalities it observes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import cast

import torch
from torch import nn

from ..modalities import Modality
from ..networks import expert, modality_decoder, z_readers
from ..posteriors import Gaussian, Posterior, stack, standard_normal
from ..subsets import OBSERVED, filled
from .base import Batch, terms
from .mmvae import MMVAE


class PrivateDecoder(nn.Module):
    """p(m | z, w_m): a network on [z, w_m], with w_m ~ r_m(w) = N(0, diag(exp(log_scale))^2) unless given."""

    def __init__(self, net: nn.Module, z_dim: int, private_dim: int):
        super().__init__()
        self.net, self.z_dim = net, z_dim
        self.log_scale = nn.Parameter(torch.zeros(private_dim))

    def prior(self, like: torch.Tensor) -> Gaussian:
        """r_m(w), batched as `like`'s leading dimensions."""
        scale = self.log_scale.exp().expand(*like.shape[:-1], -1)
        return Gaussian(torch.zeros_like(scale), scale)

    def forward(self, z: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        w = self.prior(z).rsample() if w is None else w
        return self.net(torch.cat([z, w.to(z.dtype)], -1))

    def at_prior_mean(self) -> nn.Module:
        """The network with w_m at r_m's mean (0): a deterministic decoder of z alone (the explorer's)."""
        net = copy.deepcopy(self.net)
        for first in z_readers(net):
            first.weight = nn.Parameter(first.weight[:, : self.z_dim].detach().clone())
            first.in_features = self.z_dim
        return net


def split(q: Gaussian, z_dim: int) -> tuple[Gaussian, Gaussian]:
    """An encoder's Gaussian over [z, w] as q(z|m) and q(w|m)."""
    return Gaussian(q.loc[..., :z_dim], q.scale[..., :z_dim]), Gaussian(
        q.loc[..., z_dim:], q.scale[..., z_dim:]
    )


class MMVAEPlus(MMVAE):
    HELP = MMVAE.HELP | {
        "beta": ("B", "beta, the weight of the KL (prior over posterior) terms"),
        "private_dim": ("D", "dimensions of each modality's private latent w_m"),
    }
    # Palumbo et al. 2023 on PolyMNIST (and MultiVae's reproduction): K = 1, beta = 2.5, modalities alike
    PAPER = {"attribute_weight": 1.0, "samples": 1, "dreg": False, "beta": 2.5}

    def __init__(
        self,
        modalities: Sequence[Modality],
        z_dim: int = 2,
        hidden: int = 512,
        attribute_weight: float = 50.0,
        samples: int = 1,
        dreg: bool = False,
        beta: float = 1.0,
        private_dim: int = 2,
        **networks: Mapping[str, nn.Module] | None,
    ):
        if private_dim < 1:
            raise ValueError(f"private_dim {private_dim} (allowed: an integer >= 1)")
        width = z_dim + private_dim  # encoders give [z, w]; decoders take it
        encoders, decoders = dict(networks.get("encoders") or {}), dict(networks.get("decoders") or {})
        for m in modalities:
            encoders.setdefault(m.name, expert(m, width, hidden))
            decoders[m.name] = PrivateDecoder(
                decoders.get(m.name) or modality_decoder(m, width, hidden), z_dim, private_dim
            )
        super().__init__(
            modalities, z_dim, hidden, attribute_weight, samples, dreg, encoders=encoders, decoders=decoders
        )
        self.beta, self.private_dim = beta, private_dim

    def experts(self, given: Batch) -> list[Posterior]:
        """The shared parts q(z|m) of the given modalities' encoders."""
        return [split(self.encoders[n](given[n]), self.z_dim)[0] for n in self.given_names(given)]

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        present = batch.get(OBSERVED)
        batch = filled(batch)
        parts = [split(self.encoders[n](batch[n]), self.z_dim) for n in self.names]
        q_z, q_w = stack([s for s, _ in parts]), stack([p for _, p in parts])  # (M, B, ·)
        z, w = q_z.rsample((self.samples,)), q_w.rsample((self.samples,))  # (K, M, B, ·): from expert m
        dreg = self.dreg and z.requires_grad
        fixed_z = Gaussian(q_z.loc.detach(), q_z.scale.detach()) if dreg else q_z
        fixed_w = Gaussian(q_w.loc.detach(), q_w.scale.detach()) if dreg else q_w
        log_mix = self._log_mixture_weights(present, z.device)
        log_q = torch.logsumexp(fixed_z.log_prob(z.unsqueeze(-3)) + log_mix, -2)  # (K, M, B): q(z|X)
        log_px, named = torch.zeros(()), {}
        for i, name in enumerate(self.names):
            decoder = cast(PrivateDecoder, self.decoders[name])
            other = decoder.prior(w).rsample()  # w_name ~ r_name, for the other experts' z
            w_i = torch.cat([other[:, :i], w[:, i : i + 1], other[:, i + 1 :]], 1)  # expert i: its own w
            lp = self.modalities[name].log_likelihood(decoder(z, w_i), batch[name])  # (K, M, B)
            named[f"nll_{name}"] = -lp.mean((0, 1))
            log_px = log_px + self.weights[name] * (lp if present is None else lp * present[:, i])
        log_prior = standard_normal(z).log_prob(z) + standard_normal(w).log_prob(w)
        log_iw = log_px + self.beta * (log_prior - log_q - fixed_w.log_prob(w))  # (K, M, B)
        bound = torch.logsumexp(log_iw, 0) - math.log(self.samples)  # (M, B)
        per_example = self._mean_over_experts(-bound, present)
        if dreg:
            weights = torch.softmax(log_iw, 0).detach()
            w.register_hook(lambda grad: grad * weights.unsqueeze(-1))  # as z's, in _dreg_surrogate
            surrogate = self._dreg_surrogate(z, log_iw, present)
            per_example = per_example.detach() + surrogate - surrogate.detach()
        named |= {f"iwae_{n}": -b for n, b in zip(self.names, bound)}
        return per_example.mean(), terms(**named)

    def describe(self) -> str:
        lam = "" if self.attribute_weight == 1 else f", each log p(y_i|z) weighted {self.attribute_weight:g}"
        all_, m = ",".join(self.names), len(self.names)
        ratio = f"(p(z) p(w) / q(z|X) q(w|m))^{self.beta:g}"
        return (
            f"MMVAE+ (K={self.samples}{', DReG' if self.dreg else ''}, private w_m of "
            f"{self.private_dim} dims):  L = -1/{m} sum_(m in {all_}) E[log 1/K sum_k p(m|z,w_m) "
            f"prod_(n != m) p(n|z,w'_n) {ratio}],  z ~ q(z|m), w_m ~ q(w|m), w'_n ~ r_n,  "
            f"q(z|X) = 1/{m} sum_m q(z|m){lam}"
        )
