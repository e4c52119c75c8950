"""Models: every objective shares `MultimodalVAE`'s interface; `build_model` picks one by name.

A model's options are the keyword arguments of its constructor after (modalities, z_dim, hidden); their
defaults there are the model's recommended settings, and PAPER holds the values that give the published
objective, so both stay reachable from the command line.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from ..modalities import Modality
from .base import MultimodalVAE
from .jmvae import JMVAE
from .mmvae import MMVAE
from .mmvaeplus import MMVAEPlus
from .mopoe import MoPoE
from .mvae import MVAE
from .mvtcae import MVTCAE
from .telbo import TELBO

MODELS: dict[str, type[MultimodalVAE]] = {
    "jmvae": JMVAE,
    "telbo": TELBO,
    "mvae": MVAE,
    "mmvae": MMVAE,
    "mopoe": MoPoE,
    "mvtcae": MVTCAE,
    "mmvaeplus": MMVAEPlus,
}

# The published objectives' settings, as each model file declares them (PAPER); PAPER here is JMVAE's, which
# TELBO shares.
PAPER: dict[str, Any] = JMVAE.PAPER
PAPER_OF: dict[str, dict[str, Any]] = {name: cls.PAPER for name, cls in MODELS.items()}


def paper(name: str) -> dict[str, Any]:
    """The options that give model `name`'s published objective (only those it takes)."""
    return {k: v for k, v in PAPER_OF[name].items() if k in options(name)}


def option_flags() -> dict[str, dict[str, Any]]:
    """Every model option as a CLI flag: {option: {type, metavar, help, choices, defaults: {model: default}}},
    from the models' constructors (defaults, types) and their HELP and CHOICES (the text written once,
    there)."""
    out: dict[str, dict[str, Any]] = {}
    for name, cls in MODELS.items():
        params = list(inspect.signature(cls.__init__).parameters.values())[4:]
        for p in params:
            if p.kind is p.VAR_KEYWORD:
                continue
            flag = out.setdefault(p.name, {"defaults": {}})
            flag["defaults"][name] = p.default
            if "help" not in flag:
                kind = str(p.annotation)
                flag["type"] = (
                    bool if "bool" in kind else int if "int" in kind else float if "float" in kind else str
                )
                flag["metavar"], flag["help"] = cls.HELP[p.name]
                flag["choices"] = getattr(cls, "CHOICES", {}).get(p.name)
    return out


def options(name: str) -> dict[str, Any]:
    """The options model `name` takes, with its defaults."""
    params = list(inspect.signature(MODELS[name].__init__).parameters.values())[
        4:
    ]  # after self, modalities, z_dim, hidden
    return {p.name: p.default for p in params if p.kind is not p.VAR_KEYWORD}


def build_model(
    name: str,
    modalities: Sequence[Modality],
    z_dim: int = 2,
    hidden: int = 512,
    encoders: Mapping[str, nn.Module] | None = None,
    decoders: Mapping[str, nn.Module] | None = None,
    **given: Any,
) -> MultimodalVAE:
    """Model `name` with the given options (the rest at the model's defaults) and, by modality name, any
    encoders or decoders to use instead of the defaults; ValueError names an option the model does not
    have."""
    if name not in MODELS:
        raise ValueError(f"model {name} (allowed: {', '.join(MODELS)})")
    unknown = sorted(set(given) - set(options(name)))
    if unknown:
        raise ValueError(
            f"{', '.join(unknown)} for model {name} (allowed: {', '.join(options(name)) or 'none'})"
        )
    return MODELS[name](modalities, z_dim, hidden, encoders=encoders, decoders=decoders, **given)


__all__ = [
    "MODELS",
    "PAPER",
    "PAPER_OF",
    "build_model",
    "options",
    "paper",
    "MultimodalVAE",
    "JMVAE",
    "TELBO",
    "MVAE",
    "MMVAE",
    "MoPoE",
    "MVTCAE",
    "MMVAEPlus",
]
