"""PolyMNIST-style data (the MoPoE paper's benchmark, Sutter et al. 2021): five 28x28 colour images of one
digit class per example, each image a different MNIST digit of that class on a random crop of its own
background photograph, the digit's pixels (intensity > 0.5) with the crop's colours inverted.

The paper's backgrounds are not redistributable here; ours are five freely licensed photographs that
scikit-image ships in its package (BACKGROUNDS: public domain, CC0, or no known copyright restrictions),
each scaled so its shorter side is SHORT_SIDE pixels, so a 28x28 crop shows texture rather than one flat
colour. Rendering is a seeded gather (seconds for 70,000 examples), so the set is rebuilt on load rather
than stored; its fingerprint (the digits, the scaled photographs and the parameters) is recorded with every
run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from ..errors import UserError

VERSION = 1  # part of the fingerprint: renders made another way are another set
SIZE = 28
SHORT_SIDE = 128
# scikit-image's data files and their licences (skimage/data/_fetchers.py's docstrings).
BACKGROUNDS = {
    "astronaut.png": "NASA, public domain",
    "chelsea.png": "CC0, Stefan van der Walt",
    "coffee.png": "CC0, Rachel Michetti",
    "ihc.png": "no known copyright restrictions",
    "rocket.jpg": "SpaceX, public domain (CC0)",
}
NEEDS = (
    "--preset polymnist needs scikit-image's sample photographs (allowed: `pip install scikit-image`, "
    "or a folder of them in $JMVAE_CACHE/backgrounds)"
)


def background_dir(cache: Path) -> Path:
    """Where the photographs are: `cache`/backgrounds if it holds all five, else the installed
    scikit-image's data folder (located without importing scikit-image)."""
    if all((cache / "backgrounds" / name).is_file() for name in BACKGROUNDS):
        return cache / "backgrounds"
    spec = importlib.util.find_spec("skimage")
    for root in (spec.submodule_search_locations or []) if spec else []:
        if all((Path(root) / "data" / name).is_file() for name in BACKGROUNDS):
            return Path(root) / "data"
    raise UserError(NEEDS)


def read_backgrounds(directory: Path) -> tuple[list[np.ndarray], str]:
    """The five photographs as (H, W, 3) uint8, shorter side SHORT_SIDE pixels, and a hash of those pixels
    (another Pillow's resampling would be another set)."""
    h = hashlib.sha1()
    out = []
    for name in BACKGROUNDS:
        raw = (directory / name).read_bytes()
        try:
            img = PILImage.open(io.BytesIO(raw)).convert("RGB")
        except (OSError, ValueError, PILImage.DecompressionBombError) as e:
            why = "too large" if isinstance(e, PILImage.DecompressionBombError) else type(e).__name__
            raise UserError(
                f"background {directory / name} is not a readable image ({why}); {NEEDS}"
            ) from None
        scale = SHORT_SIDE / min(img.size)
        size = max(SIZE, round(img.width * scale)), max(SIZE, round(img.height * scale))
        out.append(np.asarray(img.resize(size, resample=PILImage.Resampling.LANCZOS)))
        h.update(f"{name}{out[-1].shape}".encode() + out[-1].tobytes())
    return out, h.hexdigest()[:16]


def render(digits: np.ndarray, background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 3*28*28) uint8, channel first: each 28x28 digit on a random crop of `background` (H, W, 3), the
    crop's colours inverted where the digit's intensity is above one half."""
    n = len(digits)
    rows = rng.integers(0, background.shape[0] - SIZE + 1, n)
    cols = rng.integers(0, background.shape[1] - SIZE + 1, n)
    r = np.arange(SIZE)
    crops = background[(rows[:, None] + r)[:, :, None], (cols[:, None] + r)[:, None, :]]  # (N, 28, 28, 3)
    ink = (digits > 127)[..., None]
    out = np.where(ink, 255 - crops, crops).astype(np.uint8)
    return out.transpose(0, 3, 1, 2).reshape(n, -1)


def partners(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row indices of another digit of the same class for every row (a permutation within each class)."""
    out = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        out[rows] = rows[rng.permutation(len(rows))]
    return out


@dataclass
class PolyMnist:
    images: list[np.ndarray]  # one (N, 3*28*28) uint8 array per modality
    labels: np.ndarray  # (N,) digit class


def generate(digits: np.ndarray, labels: np.ndarray, backgrounds: list[np.ndarray], seed: int) -> PolyMnist:
    """One example per digit: modality 0 shows that digit, modality m another digit of its class, each on
    its own background."""
    rng = np.random.default_rng(seed)
    images = []
    for m, background in enumerate(backgrounds):
        rows = np.arange(len(labels)) if m == 0 else partners(labels, rng)
        images.append(render(digits[rows], background, rng))
    return PolyMnist(images, labels.astype(np.int64))


def fingerprint(digits: np.ndarray, labels: np.ndarray, backgrounds_hash: str, params: dict) -> str:
    h = hashlib.sha1(
        json.dumps(params | {"version": VERSION, "backgrounds": backgrounds_hash}, sort_keys=True).encode()
    )
    h.update(np.ascontiguousarray(digits).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]
