"""Models: every objective shares `MultimodalVAE`'s interface; `build_model` picks one by name."""
from __future__ import annotations

from typing import Sequence

from ..modalities import Modality
from .base import MultimodalVAE
from .jmvae import JMVAE
from .telbo import TELBO

MODELS: dict[str, type[MultimodalVAE]] = {"jmvae": JMVAE, "telbo": TELBO}


def build_model(name: str, modalities: Sequence[Modality], z_dim: int = 2, hidden: int = 512,
                alpha: float = 1.0) -> MultimodalVAE:
    if name not in MODELS:
        raise ValueError(f"model {name} (allowed: {', '.join(MODELS)})")
    if name == "jmvae":
        return JMVAE(modalities, z_dim, hidden, alpha)
    return MODELS[name](modalities, z_dim, hidden)


__all__ = ["MODELS", "build_model", "MultimodalVAE", "JMVAE", "TELBO"]
