"""MNIST-A: the four-attribute benchmark of the TELBO paper (Vedantam et al. 2018), rendered from MNIST
digits.

Each image is a 64x64 black canvas with one MNIST digit, rotated, scaled and placed; its attributes, in this
order: digit (0-9), scale (big, small), orientation (clockwise, upright, counterclockwise), location
(top-left, top-right, bottom-left, bottom-right), each drawn uniformly per image. What follows the paper's
generator (google/joint_vae, datasets/mnist_attributes), as the issue states its facts:
- scale: big ~ N(0.9, 0.1), small ~ N(0.6, 0.1), resampled into [0.4, 1.0];
- orientation: clockwise ~ N(-45, 10) degrees, counterclockwise ~ N(+45, 10), upright 0, resampled into
  [-90, 90];
- location: the quadrant's centre (1/4 or 3/4 of the canvas per axis) pushed canvas/16 toward the corner,
  plus N(0, canvas/16) jitter per axis, resampled until the digit lies inside the canvas;
- the 28x28 digit is rotated (bicubic, canvas expanded to fit), shrunk to scale x its size (bicubic),
  cropped to its ink and pasted centred at the location (the ink must lie inside the canvas).
Splits: "iid" (by image, 85/5/10 train/val/test) and "compositional" (the 240 label combinations shuffled
with a fixed seed and split 80/10/10, so test combinations never occur in training). `cached` renders a set
once and keeps it in the cache under a hash of the digits and parameters.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from ..runs import atomic_write
from .mnist import cache_dir

VERSION = 1  # part of the cache key: renders made another way are another set
CANVAS = 64
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "digit": tuple(str(d) for d in range(10)),
    "scale": ("big", "small"),
    "orientation": ("clockwise", "upright", "counterclockwise"),
    "location": ("top-left", "top-right", "bottom-left", "bottom-right"),
}
SCALE_MEAN = {"big": 0.9, "small": 0.6}
ANGLE_MEAN = {
    "clockwise": -45.0,
    "upright": 0.0,
    "counterclockwise": 45.0,
}  # degrees, counterclockwise positive
SPLITS = ("iid", "compositional")


def _truncated(rng: np.random.Generator, mean: float, std: float, low: float, high: float) -> float:
    """One draw of N(mean, std) resampled until it lies in [low, high]."""
    while True:
        v = rng.normal(mean, std)
        if low <= v <= high:
            return float(v)


def transform(digit: np.ndarray, scale: float, angle: float) -> np.ndarray:
    """The 28x28 uint8 digit rotated by `angle` degrees (counterclockwise positive; bicubic, canvas expanded
    to fit), shrunk to `scale` x its size (bicubic) and cropped to its ink, as uint8. Placing the ink, not the
    expanded box (a 45-degree turn makes 28x28 into 40x40, mostly black), is what lets a big digit stay in
    its quadrant."""
    img = PILImage.fromarray(digit).rotate(angle, resample=PILImage.Resampling.BICUBIC, expand=True)
    size = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    patch = np.asarray(img.resize(size, resample=PILImage.Resampling.BICUBIC))
    rows, cols = np.flatnonzero(patch.any(1)), np.flatnonzero(patch.any(0))
    if len(rows) == 0:
        return patch
    return patch[
        rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1
    ]  # the ink's box: what must lie inside the canvas


def place(
    rng: np.random.Generator, location: str, shape: tuple[int, int], canvas: int = CANVAS
) -> tuple[int, int]:
    """Top-left (row, col) of a `shape` patch centred near `location`'s corner-pushed quadrant centre,
    jittered, resampled until the patch lies inside the canvas."""
    h, w = shape
    down, right = location.startswith("bottom"), location.endswith("right")
    push = canvas / 16
    centre = (
        canvas * (0.75 if down else 0.25) + (push if down else -push),
        canvas * (0.75 if right else 0.25) + (push if right else -push),
    )
    for _ in range(1000):
        r, c = (round(centre[i] + rng.normal(0, canvas / 16) - s / 2) for i, s in enumerate((h, w)))
        if 0 <= r <= canvas - h and 0 <= c <= canvas - w:
            return r, c
    raise ValueError(f"a {h}x{w} digit does not fit a {canvas}x{canvas} canvas near {location}")


def render(
    digit: np.ndarray, label: int, rng: np.random.Generator, canvas: int = CANVAS
) -> tuple[np.ndarray, dict[str, int]]:
    """One MNIST-A image (canvas x canvas uint8) of `digit` with freshly drawn attributes, and its labels
    (attribute name -> class index)."""
    labels = {"digit": int(label)} | {
        name: int(rng.integers(len(values))) for name, values in ATTRIBUTES.items() if name != "digit"
    }
    scale = _truncated(rng, SCALE_MEAN[ATTRIBUTES["scale"][labels["scale"]]], 0.1, 0.4, 1.0)
    orientation = ATTRIBUTES["orientation"][labels["orientation"]]
    angle = (
        ANGLE_MEAN[orientation]
        if orientation == "upright"
        else _truncated(rng, ANGLE_MEAN[orientation], 10, -90, 90)
    )
    patch = transform(digit, scale, angle)
    r, c = place(rng, ATTRIBUTES["location"][labels["location"]], patch.shape, canvas)
    image = np.zeros((canvas, canvas), np.uint8)
    image[r : r + patch.shape[0], c : c + patch.shape[1]] = patch
    return image, labels


@dataclass
class MnistA:
    images: np.ndarray  # (N, 64, 64) uint8
    labels: dict[str, np.ndarray]  # attribute -> (N,) int64 class indices
    split: dict[str, np.ndarray]  # "train" / "val" / "test" -> row indices
    params: dict  # what decides the set (recorded with a hash in a run's config)


def generate(
    digits: np.ndarray,
    digit_labels: np.ndarray,
    renders: int,
    seed: int = 0,
    split: str = "iid",
    canvas: int = CANVAS,
) -> MnistA:
    """`renders` images per MNIST digit, each with fresh attributes, and the split's row indices."""
    check_split(split)  # before the rendering, not after it
    rng = np.random.default_rng(seed)
    n = len(digits) * renders
    images = np.zeros((n, canvas, canvas), np.uint8)
    labels = {name: np.zeros(n, np.int64) for name in ATTRIBUTES}
    for i, (digit, label) in enumerate(zip(np.repeat(digits, renders, 0), np.repeat(digit_labels, renders))):
        images[i], drawn = render(digit, int(label), rng, canvas)
        for name, v in drawn.items():
            labels[name][i] = v
    rows = split_rows(labels, split, seed)
    return MnistA(
        images,
        labels,
        rows,
        {"renders": renders, "seed": seed, "split": split, "canvas": canvas, "digits": len(digits)},
    )


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split {split} (allowed: {', '.join(SPLITS)})")


def combinations() -> list[tuple[int, ...]]:
    """Every label combination (240), in attribute order."""
    return list(itertools.product(*(range(len(v)) for v in ATTRIBUTES.values())))


def split_rows(labels: dict[str, np.ndarray], split: str, seed: int) -> dict[str, np.ndarray]:
    """Row indices of train/val/test: by image 85/5/10 ("iid"), or by label combination 80/10/10
    ("compositional": no test combination occurs in training)."""
    check_split(split)
    n = len(next(iter(labels.values())))
    rng = np.random.default_rng(seed + 1)
    if split == "iid":
        order = rng.permutation(n)
        a, b = round(0.85 * n), round(0.90 * n)
        return {"train": np.sort(order[:a]), "val": np.sort(order[a:b]), "test": np.sort(order[b:])}
    combos = combinations()
    order = rng.permutation(len(combos))
    a, b = round(0.8 * len(combos)), round(0.9 * len(combos))
    part = np.empty(len(combos), np.int64)
    part[order[:a]], part[order[a:b]], part[order[b:]] = 0, 1, 2
    sizes = [len(v) for v in ATTRIBUTES.values()]
    code = np.ravel_multi_index([labels[name] for name in ATTRIBUTES], sizes)  # the row's combination index
    where = part[code]
    return {name: np.flatnonzero(where == k) for k, name in enumerate(("train", "val", "test"))}


def digits_of(mnist) -> tuple[np.ndarray, np.ndarray]:
    """Every digit a MnistData holds (full MNIST: its 60,000 training and 10,000 test digits)."""
    if mnist.test_images is None:
        return mnist.images, mnist.labels
    return np.concatenate([mnist.images, mnist.test_images]), np.concatenate(
        [mnist.labels, mnist.test_labels]
    )


def fingerprint(digits: np.ndarray, labels: np.ndarray, params: dict) -> str:
    """What decides a rendered set: the digits, their labels and the generator's parameters."""
    h = hashlib.sha1(json.dumps(params | {"version": VERSION}, sort_keys=True).encode())
    h.update(np.ascontiguousarray(digits).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def cached(
    mnist, renders: int, seed: int = 0, split: str = "iid", directory: Path | None = None
) -> tuple[MnistA, str]:
    """The MNIST-A set of these digits and parameters, rendered once and kept in the cache (`mnist-a/`), and
    its hash (for a run's config.json)."""
    digits, labels = digits_of(mnist)
    params = {"renders": renders, "seed": seed, "canvas": CANVAS, "digits": len(digits)}
    key = fingerprint(digits, labels, params)
    path = (directory or cache_dir() / "mnist-a") / f"mnist-a-{key}.npz"
    try:
        with np.load(path) as f:
            images, drawn = f["images"], {name: f[name] for name in ATTRIBUTES}
    except (
        OSError,
        KeyError,
        ValueError,
        EOFError,
        zipfile.BadZipFile,
    ):  # not rendered yet, or cut short: render it
        data = generate(digits, labels, renders, seed, split)

        def write(p: Path) -> None:
            with open(p, "wb") as f:
                # (mypy checks **labels against savez's allow_pickle: bool too)
                np.savez(f, images=data.images, **data.labels)  # type: ignore[arg-type]

        atomic_write(path, write)
        return data, key
    return MnistA(images, drawn, split_rows(drawn, split, seed), params | {"split": split}), key
