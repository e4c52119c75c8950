"""MultimodalVAE: one image, any number of categorical attributes, one shared Gaussian latent z.

It owns the networks and the posterior rules; a subclass only writes its objective (`loss`) and says it
in words (`describe`). Networks, as in the founding experiment:
  q(z|x,y)  joint encoder reading the image and the one-hot of every attribute (networks.JointEncoder),
  q(z|m)    one encoder per modality: an MLP on the image, an MLP on the one-hot for each attribute
            (networks.ClassEncoder; with components > 1 a mixture of Gaussians, networks.MixtureClassEncoder),
  p(m|z)    one decoder per modality.
"""
from __future__ import annotations

import itertools
from typing import Sequence

import torch
from torch import nn
from torch.distributions import Distribution

from ..modalities import Categorical, Image, Modality
from ..networks import ClassEncoder, GaussianEncoder, JointEncoder, MixtureClassEncoder, decoder
from ..posteriors import Posterior, product_of_experts, tempered

Batch = dict[str, torch.Tensor]


class MultimodalVAE(nn.Module):
    def __init__(self, modalities: Sequence[Modality], z_dim: int = 2, hidden: int = 512, components: int = 1):
        super().__init__()
        images = [m for m in modalities if isinstance(m, Image)]
        if len(images) != 1:
            raise ValueError("a model needs exactly one Image modality")
        self.image: Image = images[0]
        self.attributes: list[Categorical] = [m for m in modalities if isinstance(m, Categorical)]
        self.modalities: dict[str, Modality] = {m.name: m for m in [self.image, *self.attributes]}
        self.z_dim = z_dim
        self.joint_encoder = JointEncoder(self.image.size, [a.size for a in self.attributes], z_dim, hidden)
        self.components = components

        def expert(m: Modality) -> nn.Module:
            if m is self.image:
                return GaussianEncoder(m.size, z_dim, hidden)
            return ClassEncoder(m.size, z_dim, hidden) if components == 1 else MixtureClassEncoder(m.size, z_dim, components, hidden)
        self.encoders = nn.ModuleDict({n: expert(m) for n, m in self.modalities.items()})
        self.decoders = nn.ModuleDict({n: decoder(z_dim, m.size, hidden) for n, m in self.modalities.items()})

    # -- the attribute subsets an objective conditions on ------------------------------------------------
    def attribute_subsets(self, every: bool) -> list[tuple[str, ...]]:
        """All attributes together (every=False, as the papers), or every non-empty subset of them, smallest first."""
        names = [a.name for a in self.attributes]
        if not every:
            return [tuple(names)]
        return [s for r in range(1, len(names) + 1) for s in itertools.combinations(names, r)]

    # -- inference ----------------------------------------------------------------------------------------
    def posterior(self, given: Batch) -> Posterior:
        """q(z | the given modalities), for any non-empty subset (DESIGN.md's posterior rules)."""
        names = [n for n in self.modalities if n in given]
        unknown = sorted(set(given) - set(self.modalities))
        if unknown or not names:
            raise ValueError(f"posterior given {sorted(given)} (allowed: a non-empty subset of {list(self.modalities)})")
        if len(names) == len(self.modalities):
            return self.joint_encoder(given[self.image.name], [given[a.name] for a in self.attributes])
        experts = [self.encoders[n](given[n]) for n in names]
        if self.image.name in given:
            # q(z|x) already carries the prior: q(z|x) prod_i q(z|y_i)
            return experts[0] if len(experts) == 1 else product_of_experts(experts, prior=False)
        return product_of_experts(experts, prior=True)  # p(z) prod_i q(z|y_i)

    # -- generation ---------------------------------------------------------------------------------------
    def logits(self, z: torch.Tensor, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Decoder outputs (logits) for the named modalities (all by default)."""
        return {n: self.decoders[n](z) for n in (names or self.modalities)}

    def decode(self, z: torch.Tensor) -> dict[str, Distribution]:
        """p(m|z) for every modality: Bernoulli over pixels for the image, categorical for attributes."""
        return {n: self.modalities[n].distribution(l) for n, l in self.logits(z).items()}

    def log_likelihood(self, z: torch.Tensor, batch: Batch, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """log p(m|z) of the observed modalities, one number per example for each name."""
        return {n: self.modalities[n].log_likelihood(l, batch[n]) for n, l in self.logits(z, names).items()}

    @torch.no_grad()
    def generate(self, given: Batch, n: int, temperature: float = 1.0) -> dict[str, torch.Tensor]:
        """Draw n latents per query from q(z|given) (from p(z) if nothing is given) and decode them.

        Each given value is a (B,) tensor of B queries; outputs have leading shape (n, B): "z", the image's
        mean p(x|z) in [0, 1], and each attribute's most probable class under p(a|z). A temperature T < 1
        draws z = mean + T * std * eps: fewer images from the posterior's tails, and less variety.
        """
        if given:
            z = tempered(self.posterior(given), temperature).sample((n,))
        else:
            z = temperature * torch.randn(n, 1, self.z_dim, device=next(self.parameters()).device)
        out = {"z": z}
        for name, logit in self.logits(z).items():
            out[name] = logit.sigmoid() if name == self.image.name else logit.argmax(-1)
        return out

    # -- training -----------------------------------------------------------------------------------------
    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The scalar to minimise (mean over the batch) and its named terms (detached, per-example means).

        Terms stay tensors so the training loop never waits on the device for a float.
        """
        raise NotImplementedError

    def describe(self) -> str:
        """The objective as an equation, for the terminal and the report."""
        raise NotImplementedError

    def _y(self) -> str:
        return ",".join(a.name for a in self.attributes)


def terms(**values: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example terms -> their batch means, detached (for logging), in one stack and one mean."""
    means = torch.stack(list(values.values())).detach().mean(-1)
    return dict(zip(values, means.unbind()))
