"""Models: every objective shares `MultimodalVAE`'s interface; `build_model` picks one by name.

A model's options are the keyword arguments of its constructor after (modalities, z_dim, hidden); their
defaults there are the model's recommended settings, and PAPER holds the values that give the published
objective, so both stay reachable from the command line.
"""
from __future__ import annotations

import inspect
from typing import Any, Mapping, Sequence

from torch import nn

from ..modalities import Modality
from .base import MultimodalVAE
from .jmvae import JMVAE
from .mmvae import MMVAE
from .mopoe import MoPoE
from .mvae import MVAE
from .telbo import TELBO

MODELS: dict[str, type[MultimodalVAE]] = {"jmvae": JMVAE, "telbo": TELBO, "mvae": MVAE, "mmvae": MMVAE, "mopoe": MoPoE}

# The published objectives: JMVAE-kl (Suzuki et al. 2016) and TELBO (Vedantam et al. 2018) as the papers write them.
PAPER: dict[str, Any] = {"alpha": 1.0, "attribute_weight": 1.0, "every_subset": False, "attribute_recon": 0.0,
                         "image_recon": 0.0, "prior_recon": 0.0, "components": 1}
# The others' published settings where they differ from their defaults here: MVAE's MNIST experiment weighs
# the label 50 (as our default does); MMVAE trains with K = 30 and DReG (our default K = 1 is 30x cheaper a
# step on a CPU); MoPoE and MMVAE weigh the modalities alike (our defaults: attributes 50).
PAPER_OF: dict[str, dict[str, Any]] = {"jmvae": PAPER, "telbo": PAPER, "mvae": {"attribute_weight": 50.0},
                                       "mmvae": {"attribute_weight": 1.0, "samples": 30, "dreg": True},
                                       "mopoe": {"attribute_weight": 1.0}}


def paper(name: str) -> dict[str, Any]:
    """The options that give model `name`'s published objective (only those it takes)."""
    return {k: v for k, v in PAPER_OF[name].items() if k in options(name)}


def options(name: str) -> dict[str, Any]:
    """The options model `name` takes, with its defaults."""
    params = list(inspect.signature(MODELS[name].__init__).parameters.values())[4:]   # after self, modalities, z_dim, hidden
    return {p.name: p.default for p in params if p.kind is not p.VAR_KEYWORD}


def build_model(name: str, modalities: Sequence[Modality], z_dim: int = 2, hidden: int = 512,
                encoders: Mapping[str, nn.Module] | None = None, decoders: Mapping[str, nn.Module] | None = None,
                **given: Any) -> MultimodalVAE:
    """Model `name` with the given options (the rest at the model's defaults) and, by modality name, any
    encoders or decoders to use instead of the defaults; ValueError names an option the model does not have."""
    if name not in MODELS:
        raise ValueError(f"model {name} (allowed: {', '.join(MODELS)})")
    unknown = sorted(set(given) - set(options(name)))
    if unknown:
        raise ValueError(f"{', '.join(unknown)} for model {name} (allowed: {', '.join(options(name)) or 'none'})")
    return MODELS[name](modalities, z_dim, hidden, encoders=encoders, decoders=decoders, **given)


__all__ = ["MODELS", "PAPER", "PAPER_OF", "build_model", "options", "paper", "MultimodalVAE", "JMVAE", "TELBO", "MVAE", "MMVAE", "MoPoE"]
