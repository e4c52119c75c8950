"""jmvae: joint multimodal variational autoencoders (JMVAE, TELBO) in PyTorch.

One latent space shared by an image and its attributes: infer z from any subset of them, then generate or
classify across modalities. Start with `jmvae train` (the founding experiment) or, from Python:

    from jmvae import TrainConfig, train
    data, model = train(TrainConfig(steps=200), "runs/demo")
"""

__version__ = "0.1.0"  # the one place the version is written (pyproject.toml reads it)

from .config import TrainConfig
from .errors import UserError
from .models import JMVAE, MODELS, TELBO, MultimodalVAE, build_model
from .train import train

__all__ = ["UserError", "JMVAE", "TELBO", "MODELS", "MultimodalVAE", "build_model", "TrainConfig", "train"]
