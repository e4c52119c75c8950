"""MultimodalVAE: what every model has. One or more images, any number of attributes, one latent z.

Each modality has an encoder (its expert q(z|m)) and a decoder p(m|z); a model family says how experts
combine into q(z | any given subset) (`posterior`), and each objective is a subclass writing `loss` and
saying it in words (`describe`). Default networks, as in the founding experiment (networks.py): an MLP
512-512 on the image (a small conv net for images of 32x32 and more), the same MLP on each attribute's
one-hot, decoders alike; `encoders` / `decoders` replace any of them by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from torch.distributions import Distribution

from ..modalities import Attribute, Image, Modality
from ..networks import expert, modality_decoder
from ..posteriors import Posterior
from ..samplers import LatentSampler
from ..subsets import nonempty_subsets

Batch = dict[str, torch.Tensor]
GENERATE_ROWS = (
    1024  # latents decoded at once by `generate` (queries, joint-coherence draws, figures); a conv
)
# decoder's activations for 1,024 64x64 images are 134 MB, below the malloc threshold train.reuse_freed_memory
# sets


class MultimodalVAE(nn.Module):
    # Each model declares these: per constructor option its metavar and help (models.option_flags), and the
    # options of its published objective (models.PAPER_OF).
    HELP: ClassVar[dict[str, tuple[str | None, str]]]
    PAPER: ClassVar[dict[str, Any]]

    def __init__(
        self,
        modalities: Sequence[Modality],
        z_dim: int = 2,
        hidden: int = 512,
        components: int = 1,
        encoders: Mapping[str, nn.Module] | None = None,
        decoders: Mapping[str, nn.Module] | None = None,
    ):
        super().__init__()
        self.images: list[Image] = [m for m in modalities if isinstance(m, Image)]
        if not self.images:
            raise ValueError("a model needs at least one Image modality")
        self.attributes: list[Attribute] = [m for m in modalities if not isinstance(m, Image)]
        self.modalities: dict[str, Modality] = {m.name: m for m in [*self.images, *self.attributes]}
        if len(self.modalities) != len(modalities):
            raise ValueError(f"two modalities share a name ({', '.join(m.name for m in modalities)})")
        self.names: list[str] = list(self.modalities)  # the images first, then the attributes
        self.z_dim, self.hidden, self.components = z_dim, hidden, components
        self.kl_weight = (
            1.0  # the KL terms' weight (a warm-up schedule sets it per epoch; JMVAE and TELBO use it)
        )
        unknown = sorted((set(encoders or {}) | set(decoders or {})) - set(self.names))
        if unknown:
            raise ValueError(f"networks for {', '.join(unknown)} (allowed: {', '.join(self.names)})")
        self.shared_networks()
        encoders, decoders = dict(encoders or {}), dict(decoders or {})
        self.encoders = nn.ModuleDict(
            {n: encoders.get(n) or expert(m, z_dim, hidden, components) for n, m in self.modalities.items()}
        )
        self.decoders = nn.ModuleDict(
            {n: decoders.get(n) or modality_decoder(m, z_dim, hidden) for n, m in self.modalities.items()}
        )

    def shared_networks(self) -> None:
        """Networks a family adds beside the experts (the joint encoder), built before them so a seed draws
        the same initial weights as it always has."""

    @property
    def image_names(self) -> list[str]:
        return [m.name for m in self.images]

    @property
    def attribute_names(self) -> list[str]:
        return [a.name for a in self.attributes]

    def images_log_likelihood(self, log_p: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """sum_j log p(x_j|z) over the images, from each modality's log p."""
        total = log_p[self.image_names[0]]
        for x in self.image_names[1:]:
            total = total + log_p[x]
        return total

    def _x(self) -> str:
        """The images' name in equations: "x", or "x,mask" for several."""
        return ",".join(self.image_names)

    def attribute_subsets(self, every: bool) -> list[tuple[str, ...]]:
        """All attributes together (every=False, as the papers), or every non-empty subset of them, smallest
        first."""
        return nonempty_subsets(self.attribute_names) if every else [tuple(self.attribute_names)]

    # -- inference ----------------------------------------------------------------------------------------
    def given_names(self, given: Batch) -> list[str]:
        """The modalities in `given`, in the model's order; ValueError for an unknown one or none."""
        names = [n for n in self.names if n in given]
        unknown = sorted(set(given) - set(self.modalities))
        if unknown or not names:
            raise ValueError(f"posterior given {sorted(given)} (allowed: a non-empty subset of {self.names})")
        return names

    def experts(self, given: Batch) -> list[Posterior]:
        """q(z|m) for every given modality, in the model's order."""
        return [self.encoders[n](given[n]) for n in self.given_names(given)]

    def posterior(self, given: Batch) -> Posterior:
        """q(z | the given modalities), for any non-empty subset: the family's rule (see DESIGN.md)."""
        raise NotImplementedError

    # -- generation ---------------------------------------------------------------------------------------
    def logits(self, z: torch.Tensor, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Decoder outputs (logits) for the named modalities (all by default)."""
        return {n: self.decoders[n](z) for n in (names or self.modalities)}

    def decode(self, z: torch.Tensor) -> dict[str, Distribution]:
        """p(m|z) for every modality: Bernoulli over pixels for the image, categorical for attributes."""
        return {n: self.modalities[n].distribution(l) for n, l in self.logits(z).items()}

    def log_likelihood(
        self, z: torch.Tensor, batch: Batch, names: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """log p(m|z) of the observed modalities, one number per example for each name."""
        return {n: self.modalities[n].log_likelihood(l, batch[n]) for n, l in self.logits(z, names).items()}

    @torch.no_grad()
    def generate(
        self,
        given: Batch,
        n: int,
        temperature: float = 1.0,
        complete: bool = False,
        sampler: LatentSampler | None = None,
    ) -> dict[str, torch.Tensor]:
        """Draw n latents per query from q(z|given) (if nothing is given, from p(z)) and decode them; with a
        fitted `sampler`, z comes from it instead (conditioned on what is given: `LatentSampler.conditioned`).

        Each given value is a (B,) tensor of B queries (stored values: class indices, standardised numbers);
        outputs have leading shape (n, B): "z", the image's mean p(x|z) in [0, 1], and each attribute's
        `point` under p(a|z) (the most probable class, the mean of a continuous one). A temperature T < 1
        draws z = mean + T * std * eps: fewer images from the posterior's tails, and less variety.

        complete=True first completes the attributes not given, one draw per image: z' ~ q(z|given) at T = 1,
        a ~ p(a|z') for each missing attribute, then z from q(z | given and drawn) at the temperature. One
        Gaussian q(z|given) spans every value of the missing attributes and its centre lies between them;
        the completed posterior is about one value each, so its images show the given ones more often
        (docs/results-mnist-a.md), while the missing ones still vary as p(a|given) says.
        """
        missing = [a for a in self.attribute_names if a not in given]
        if given and complete and missing:
            queries = next(iter(given.values())).shape[0]
            full = {
                name: v.repeat(n, *[1] * (v.dim() - 1)) for name, v in given.items()
            }  # row i * queries + j
            drawn = self.posterior(given).sample((n,)).reshape(n * queries, self.z_dim)
            attributes = {a.name: a for a in self.attributes}
            for name, logit in self.logits(drawn, missing).items():
                full[name] = attributes[name].sample(logit)
            z = self.posterior(full).tempered(temperature).sample().reshape(n, queries, self.z_dim)
        elif given and sampler is not None:
            z = sampler.conditioned(self, given, n)
        elif given:
            z = self.posterior(given).tempered(temperature).sample((n,))
        elif sampler is not None:
            z = sampler.sample(n).to(next(self.parameters()).device).unsqueeze(1)
        else:
            z = temperature * torch.randn(n, 1, self.z_dim, device=next(self.parameters()).device)
        out = {"z": z}
        flat = z.reshape(-1, self.z_dim)
        for name in self.names:  # decoded GENERATE_ROWS latents at a time: a conv decoder's
            decoder = self.decoders[name]  # activations for MNIST-A's 120,000 draws would take 31 GB
            logit = torch.cat([decoder(part) for part in flat.split(GENERATE_ROWS)]).reshape(
                *z.shape[:-1], -1
            )
            out[name] = self.modalities[name].point(logit)
        return out

    # -- training -----------------------------------------------------------------------------------------
    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The scalar to minimise (mean over the batch) and its named terms (detached, per-example means).

        Terms stay tensors so the training loop never waits on the device for a float. A batch may be
        partly observed (subsets.OBSERVED); every objective then trains each example on what it has.
        """
        raise NotImplementedError

    def describe(self) -> str:
        """The objective as an equation, for the terminal and the report."""
        raise NotImplementedError

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss: what DistributedDataParallel calls, so that it can average the gradients."""
        return self.loss(batch)

    def _y(self) -> str:
        return ",".join(self.attribute_names)


def terms(**values: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example terms -> their batch means, detached (for logging), in one stack and one mean."""
    means = torch.stack(list(values.values())).detach().mean(-1)
    return dict(zip(values, means.unbind()))


def zero_unseen(per_example: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """per_example where mask, else 0 (a term an example cannot have): the batch mean counts every example,
    so an example's weight does not depend on how many others in its batch are labelled."""
    return per_example if mask is None else per_example * mask
