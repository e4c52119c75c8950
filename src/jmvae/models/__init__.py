"""Models: every objective shares `MultimodalVAE`'s interface; `build_model` picks one by name.

A model's options are the keyword arguments of its constructor after (modalities, z_dim, hidden); their
defaults there are the model's recommended settings, and PAPER holds the values that give the published
objective, so both stay reachable from the command line.
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

from ..modalities import Modality
from .base import MultimodalVAE
from .jmvae import JMVAE
from .telbo import TELBO

MODELS: dict[str, type[MultimodalVAE]] = {"jmvae": JMVAE, "telbo": TELBO}

# The published objectives: JMVAE-kl (Suzuki et al. 2016) and TELBO (Vedantam et al. 2018) as the papers write them.
PAPER: dict[str, Any] = {"alpha": 1.0, "attribute_weight": 1.0, "every_subset": False, "attribute_recon": 0.0,
                         "image_recon": 0.0, "components": 1}


def options(name: str) -> dict[str, Any]:
    """The options model `name` takes, with its defaults."""
    params = list(inspect.signature(MODELS[name].__init__).parameters.values())[4:]   # after self, modalities, z_dim, hidden
    return {p.name: p.default for p in params}


def build_model(name: str, modalities: Sequence[Modality], z_dim: int = 2, hidden: int = 512,
                **given: Any) -> MultimodalVAE:
    """Model `name` with the given options (the rest at the model's defaults); ValueError names an option
    the model does not have."""
    if name not in MODELS:
        raise ValueError(f"model {name} (allowed: {', '.join(MODELS)})")
    unknown = sorted(set(given) - set(options(name)))
    if unknown:
        raise ValueError(f"{', '.join(unknown)} for model {name} (allowed: {', '.join(options(name)) or 'none'})")
    return MODELS[name](modalities, z_dim, hidden, **given)


__all__ = ["MODELS", "PAPER", "build_model", "options", "MultimodalVAE", "JMVAE", "TELBO"]
