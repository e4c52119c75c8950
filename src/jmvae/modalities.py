"""Modalities: the kinds of observation a dataset holds, and everything the rest of jmvae asks of each kind.

- `Image`: C x H x W intensities in [0, 1], stored as uint8 (N, C*H*W) channel-first, scored as independent
  Bernoullis (grey values as soft targets, as in the founding experiment) or Laplaces.
- `Categorical`: a class index (int64; -1 = not observed), scored by a softmax.
- `Binary`: a yes/no flag, a Categorical with the classes ("false", "true").
- `Continuous`: a real number stored standardised (float32; NaN = not observed), scored by a Gaussian whose
  mean and scale the decoder gives.

Attributes also have *levels*: the values figures, queries and the explorer show. A categorical attribute's
levels are its classes; a continuous one's are LEVELS quantiles of its training values, and a reading is
the nearest level. `level_values` turns level indices into stored values, `to_levels` does the reverse.
Everything scores from raw decoder outputs ("logits") so the loss never builds a validating Distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, ContinuousBernoulli, Distribution, Laplace, Normal
from torch.distributions import Categorical as CategoricalDist

IMAGE_LIKELIHOODS = ("bernoulli", "laplace", "continuous-bernoulli")
LAPLACE_SCALE = 0.1  # the fixed scale b of a Laplace image likelihood, in intensity units
LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)  # the quantiles of a continuous attribute shown and queried
MIN_SCALE = 0.05  # a continuous decoder's smallest scale, in standard deviations of the data
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "y", "t"), ("false", "0", "no", "n", "f")


def wide(t: torch.Tensor) -> torch.Tensor:
    """`t` in float32 at least (bfloat16 and float16 cancel badly in the continuous Bernoulli's terms)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def log_norm(logits: torch.Tensor) -> torch.Tensor:
    """log C(l) = log(l / tanh(l / 2)) of the continuous Bernoulli, elementwise: even in l, log 2 + l^2 / 12
    near 0 (where the ratio is 0 / 0), about log |l| far from it."""
    a = wide(logits).abs()
    small = a < 1e-2
    safe = torch.where(small, torch.ones_like(a), a)
    return torch.where(small, math.log(2) + a * a / 12, safe.log() - torch.tanh(safe / 2).log())


@dataclass(frozen=True)
class Image:
    name: str
    shape: tuple[int, int]  # (height, width)
    channels: int = 1
    likelihood: str = "bernoulli"
    network: str = "conv3"  # its encoders and decoder: mlp or a conv recipe (networks.conv_recipe)
    decoder: str = "conv"  # conv: the network's decoder; placed, posed: networks.PlacedDecoder
    stride: int = 4  # placed, posed: the glyph laid at offsets every `stride` pixels

    @property
    def size(self) -> int:
        """Input width of a network reading this modality (and its decoder's output width)."""
        return self.channels * self.shape[0] * self.shape[1]

    @property
    def out_size(self) -> int:
        return self.size

    def log_likelihood(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) summed over pixels: one number per example.

        Bernoulli: sum_d x_d l_d - softplus(l_d) (minus the BCE with logits). Laplace: mean sigmoid(l), scale
        b. Continuous Bernoulli (Loaiza-Ganem & Cunningham 2019): the Bernoulli's terms plus the log of its
        normaliser, log C(l) = log(l / tanh(l / 2)), a density on [0, 1]. Logits may carry leading sample
        dimensions (K draws of z per example) that x broadcasts over, so importance sampling never copies the
        observations K times.
        """
        if self.likelihood == "laplace":
            return -(x - logits.sigmoid()).abs().sum(-1) / LAPLACE_SCALE - x.shape[-1] * math.log(
                2 * LAPLACE_SCALE
            )
        bernoulli = (logits * x).sum(-1) - F.softplus(logits).sum(-1)
        return (
            bernoulli + log_norm(logits).sum(-1) if self.likelihood == "continuous-bernoulli" else bernoulli
        )

    def log_likelihood_pairs(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x_j | z_i) for every decoded z_i (logits (..., I, D)) and every image x_j (x (J, D)):
        (..., I, J).

        Bernoulli: sum_d x_jd l_id for all pairs as one matrix product."""
        if self.likelihood == "laplace":
            mean = logits.sigmoid()
            flat = mean.reshape(-1, *mean.shape[-2:])
            dist = torch.stack([torch.cdist(m, x, p=1) for m in flat]).reshape(*mean.shape[:-1], len(x))
            return -dist / LAPLACE_SCALE - x.shape[-1] * math.log(2 * LAPLACE_SCALE)
        own = -F.softplus(logits) + (log_norm(logits) if self.likelihood == "continuous-bernoulli" else 0)
        return logits @ x.T + own.sum(-1, keepdim=True)

    def distribution(self, logits: torch.Tensor) -> Distribution:
        if self.likelihood == "laplace":
            return Laplace(logits.sigmoid(), torch.full_like(logits, LAPLACE_SCALE))
        if self.likelihood == "continuous-bernoulli":
            return ContinuousBernoulli(logits=logits, validate_args=False)
        # validate_args=False: grey-valued targets are legitimate soft Bernoulli targets here.
        return Bernoulli(logits=logits, validate_args=False)

    def point(self, logits: torch.Tensor) -> torch.Tensor:
        """What generation shows: the mean of p(x|z), in [0, 1]."""
        if self.likelihood == "continuous-bernoulli":  # 1 / (1 - e^-l) - 1 / l, 1/2 + l / 12 near l = 0
            logits = wide(logits)  # the difference cancels in low precision
            small = logits.abs() < 1e-2
            safe = torch.where(small, torch.ones_like(logits), logits)
            return torch.where(small, 0.5 + logits / 12, 1 / -torch.expm1(-safe) - 1 / safe)
        return logits.sigmoid()

    def pixels(self, flat: torch.Tensor | np.ndarray):
        """(..., C*H*W) -> (..., H, W) grey or (..., H, W, C) colour: how images are saved and drawn."""
        lead = flat.shape[:-1]
        img = flat.reshape(*lead, self.channels, *self.shape)
        if self.channels == 1:
            return img[..., 0, :, :]
        return (
            img.transpose(-3, -2).transpose(-2, -1)
            if isinstance(img, torch.Tensor)
            else img.swapaxes(-3, -2).swapaxes(-2, -1)
        )


@dataclass(frozen=True)
class Categorical:
    name: str
    classes: tuple[str, ...]

    kind = "categorical"

    @property
    def size(self) -> int:
        return len(self.classes)

    @property
    def out_size(self) -> int:
        return len(self.classes)

    def log_likelihood(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log p(y|z) for class indices y; logits may carry leading sample dimensions that y broadcasts
        over."""
        if logits.dim() == 2 and y.dim() == 1:
            return -F.cross_entropy(logits, y, reduction="none")
        index = y.expand(logits.shape[:-1]).unsqueeze(-1)
        return logits.log_softmax(-1).gather(-1, index).squeeze(-1)

    def log_likelihood_pairs(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log p(y_j | z_i) for every decoded z_i (logits (..., I, C)) and every value y_j (J,):
        (..., I, J)."""
        return logits.log_softmax(-1)[..., y]

    def distribution(self, logits: torch.Tensor) -> Distribution:
        return CategoricalDist(logits=logits)

    def point(self, logits: torch.Tensor) -> torch.Tensor:
        """The most probable class."""
        return logits.argmax(-1)

    def sample(self, logits: torch.Tensor) -> torch.Tensor:
        return CategoricalDist(logits=logits).sample()

    def observed(self, values: torch.Tensor) -> torch.Tensor:
        return values >= 0

    def filled(self, values: torch.Tensor) -> torch.Tensor:
        """Values an encoder can read where not observed (the terms that read them are masked)."""
        return values.clamp_min(0)

    def level_values(self, levels: torch.Tensor) -> torch.Tensor:
        return levels

    def to_levels(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def level_probs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(-1)

    def index(self, value: str | int) -> int:
        """A class given by name (or index) -> its index; ValueError names the allowed values."""
        if isinstance(value, int) and 0 <= value < len(self.classes):
            return value
        if str(value) in self.classes:
            return self.classes.index(str(value))
        raise ValueError(f"{self.name}={value} (allowed: {', '.join(self.classes)})")

    def parse(self, text: str) -> float | int:
        """A value typed by a user -> the stored value; ValueError names the allowed values."""
        return self.index(text)

    def show(self, value: float | int) -> str:
        """A stored value as a user reads it."""
        return self.classes[int(value)]

    def describe(self) -> dict:
        return {"kind": self.kind, "values": list(self.classes)}


@dataclass(frozen=True)
class Binary(Categorical):
    """A yes/no flag: the categorical likelihood with two classes is the Bernoulli one."""

    classes: tuple[str, ...] = ("false", "true")

    kind = "binary"

    def index(self, value: str | int) -> int:
        text = str(value).strip().lower()
        if text in TRUE_WORDS or text in ("1.0", "1."):
            return 1
        if text in FALSE_WORDS or text in ("0.0", "0.", "-0.0"):
            return 0
        raise ValueError(f"{self.name}={value} (allowed: true or false, 1 or 0)")


@dataclass(frozen=True)
class Continuous:
    """A real number, stored as (value - mean) / std; `quantiles` are LEVELS of the standardised training
    values."""

    name: str
    mean: float = 0.0
    std: float = 1.0
    quantiles: tuple[float, ...] = field(default=(-1.28, -0.52, 0.0, 0.52, 1.28))
    low: float = -3.0  # the training values' range, standardised (the explorer's sliders, the tolerance)
    high: float = 3.0

    kind = "continuous"
    size = 1
    out_size = 2  # the Gaussian's mean and pre-softplus scale

    @property
    def classes(self) -> tuple[str, ...]:
        """The levels' labels, in the data's units."""
        return tuple(self.show(q) for q in self.quantiles)

    def _normal(self, logits: torch.Tensor) -> Normal:
        return Normal(logits[..., 0], F.softplus(logits[..., 1]) + MIN_SCALE, validate_args=False)

    def log_likelihood(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._normal(logits).log_prob(y)

    def log_likelihood_pairs(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mean, scale = logits[..., 0:1], F.softplus(logits[..., 1:2]) + MIN_SCALE
        return Normal(mean, scale, validate_args=False).log_prob(y)

    def distribution(self, logits: torch.Tensor) -> Distribution:
        return self._normal(logits)

    def point(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[..., 0]

    def sample(self, logits: torch.Tensor) -> torch.Tensor:
        return self._normal(logits).sample()

    def observed(self, values: torch.Tensor) -> torch.Tensor:
        return ~values.isnan()

    def filled(self, values: torch.Tensor) -> torch.Tensor:
        return values.nan_to_num(0.0)

    def level_values(self, levels: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.quantiles, device=levels.device)[levels]

    def to_levels(self, values: torch.Tensor) -> torch.Tensor:
        """The nearest level of each value (-1 where not observed)."""
        q = torch.tensor(self.quantiles, device=values.device, dtype=torch.float32)
        nearest = (values.float().unsqueeze(-1) - q).abs().argmin(-1)
        return torch.where(values.isnan(), -1, nearest) if values.is_floating_point() else nearest

    def level_probs(self, logits: torch.Tensor) -> torch.Tensor:
        return F.one_hot(self.to_levels(self.point(logits)), len(self.quantiles)).float()

    @property
    def tolerance(self) -> float:
        """A reading counts as showing an asked value within a tenth of the training range (standardised)."""
        return 0.1 * (self.high - self.low)

    def parse(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"{self.name}={text} (allowed: a number, e.g. {self.show(0.0)})")
        return (value - self.mean) / self.std

    def show(self, value: float) -> str:
        return f"{float(value) * self.std + self.mean:.4g}"

    def unstandardise(self, values: torch.Tensor) -> torch.Tensor:
        return values * self.std + self.mean

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "mean": self.mean,
            "std": self.std,
            "range": [self.low * self.std + self.mean, self.high * self.std + self.mean],
        }


Attribute = Categorical | Binary | Continuous
Modality = Image | Categorical | Binary | Continuous
ATTRIBUTE_KINDS = {"categorical": Categorical, "binary": Binary, "continuous": Continuous}


def attribute_from_json(d: dict) -> Attribute:
    """An attribute from what `describe()` wrote plus its name (config.json's schema)."""
    if d["kind"] == "continuous":
        return Continuous(d["name"], d["mean"], d["std"], tuple(d["quantiles"]), d["low"], d["high"])
    if d["kind"] == "binary":
        return Binary(d["name"])
    return Categorical(d["name"], tuple(d["values"]))
