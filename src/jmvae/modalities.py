"""Modalities: what one kind of observation looks like and how its decoder scores it.

An `Image` is a flattened grid of intensities in [0, 1] scored as independent Bernoullis (grey values are
used as soft targets, as in the founding experiment). A `Categorical` attribute is a class index scored by
a softmax. Both score from logits so that the loss never builds a validating `Distribution` in the hot loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Categorical as CategoricalDist, Distribution


@dataclass(frozen=True)
class Image:
    name: str
    shape: tuple[int, int]  # (height, width)

    @property
    def size(self) -> int:
        """Input width of a network reading this modality."""
        return self.shape[0] * self.shape[1]

    def log_likelihood(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) summed over pixels: one number per example.

        sum_d x_d l_d - softplus(l_d), the Bernoulli log-density from logits (the same value as minus the
        BCE-with-logits). Logits may carry leading sample dimensions (K draws of z per example) that x
        broadcasts over, so importance sampling never copies the observations K times.
        """
        return (logits * x).sum(-1) - F.softplus(logits).sum(-1)

    def log_likelihood_pairs(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x_j | z_i) for every decoded z_i (logits (..., I, D)) and every image x_j (x (J, D)): (..., I, J).

        The same Bernoulli log-density, with sum_d x_jd l_id for all pairs as one matrix product.
        """
        return logits @ x.T - F.softplus(logits).sum(-1, keepdim=True)

    def distribution(self, logits: torch.Tensor) -> Distribution:
        # validate_args=False: grey-valued targets are legitimate soft Bernoulli targets here.
        return Bernoulli(logits=logits, validate_args=False)


@dataclass(frozen=True)
class Categorical:
    name: str
    classes: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.classes)

    def log_likelihood(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log p(y|z) for class indices y; logits may carry leading sample dimensions that y broadcasts over."""
        if logits.dim() == 2 and y.dim() == 1:
            return -F.cross_entropy(logits, y, reduction="none")
        index = y.expand(logits.shape[:-1]).unsqueeze(-1)
        return logits.log_softmax(-1).gather(-1, index).squeeze(-1)

    def distribution(self, logits: torch.Tensor) -> Distribution:
        return CategoricalDist(logits=logits)

    def index(self, value: str | int) -> int:
        """A class given by name (or index) -> its index; ValueError names the allowed values."""
        if isinstance(value, int) and 0 <= value < len(self.classes):
            return value
        if str(value) in self.classes:
            return self.classes.index(str(value))
        raise ValueError(f"{self.name}={value} (allowed: {', '.join(self.classes)})")


Modality = Image | Categorical
