"""Datasets: a list of modalities (one or more images and their attributes) and their train and test splits.

Images are kept as uint8 (N, C*H*W) tensors, categorical attributes as int64 class indices (-1: not
observed) and continuous ones as standardised float32 (NaN: not observed); a batch turns the image into
floats in [0, 1] only when it is used (`to_batch`). The MNIST presets of the founding experiment live here
(train and test split by *source digit*, so the two placements of one digit never straddle the split); a
user's own folder, .npz or arrays are read by `own.py`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..modalities import Attribute, Categorical, Image, Modality
from . import mnist_a as generator
from . import polymnist as poly
from .mnist import MnistData, cache_dir, load_mnist


@dataclass
class AttributeDataset:
    name: str
    images: list[Image]
    attributes: list[Attribute]
    train: dict[str, torch.Tensor]
    test: dict[str, torch.Tensor]
    source: str
    full_train_size: int | None = None  # the training split's size on full MNIST (None: this split's size)
    mnist: str = "full"  # "full" or "bundled": which MNIST the digits came from (see mnist.load_mnist)
    default_epochs: int = 20  # 10 in the founding experiment; the sweep (docs/results-queries.md) needed 20
    options: dict | None = None  # what else decides the data (MNIST-A: the generator's parameters and hash)

    @property
    def modalities(self) -> list[Modality]:
        return [*self.images, *self.attributes]

    @property
    def image_names(self) -> list[str]:
        return [m.name for m in self.images]

    @property
    def n_train(self) -> int:
        return len(self.train[self.images[0].name])

    @property
    def n_test(self) -> int:
        return len(self.test[self.images[0].name])

    @property
    def picture_shape(self) -> tuple[int, int]:
        """(H, W) of `pictures`: the images side by side, one pixel apart."""
        return max(m.shape[0] for m in self.images), sum(m.shape[1] + 1 for m in self.images) - 1

    def pictures(self, drawn: Mapping[str, torch.Tensor | np.ndarray]) -> np.ndarray:
        """Every image of each example side by side, as figures show them: (..., H, W) grey or (..., H, W, 3)
        colour floats from each image's (..., C*H*W) intensities in [0, 1] in `drawn` (other keys ignored).
        Several images: grey ones turn colour beside colour ones, shorter ones padded below, a grey gap."""
        parts = []
        for m in self.images:
            x = drawn[m.name]
            x = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)
            parts.append(m.pixels(x))
        return self.side_by_side(parts)

    def side_by_side(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        """`pictures` of images already in pixel layout ((..., H, W) or (..., H, W, 3), one per image, in
        `images` order)."""
        if len(parts) == 1:
            return parts[0]
        colour = any(m.channels > 1 for m in self.images)
        parts = [p[..., None] if m.channels == 1 else p for m, p in zip(self.images, parts)]  # (..., H, W, C)
        h, w = self.picture_shape
        out = np.full((*parts[0].shape[:-3], h, w, 3 if colour else 1), 0.5, dtype=np.float32)
        left = 0
        for m, p in zip(self.images, parts):
            rows, cols = m.shape
            out[..., :, left : left + cols, :] = 0  # a shorter image: black below it
            out[..., :rows, left : left + cols, :] = p  # a grey one broadcast to three channels
            left += cols + 1
        return out if colour else out[..., 0]

    def default_steps(self, batch_size: int, epochs: int | None = None) -> int:
        """A run's length without --epochs or --steps: `epochs` (else `default_epochs`) epochs of the
        full-MNIST training split, so the bundled subset trains as many steps as full MNIST (more passes over
        fewer digits)."""
        if not self.default_epochs:  # a user's data: its length scales with its size (own.default_steps)
            from .own import default_steps

            return default_steps(self.n_train, batch_size)
        return (epochs or self.default_epochs) * ((self.full_train_size or self.n_train) // batch_size)

    def attribute(self, name: str) -> Attribute:
        for a in self.attributes:
            if a.name == name:
                return a
        raise UserError(f"unknown attribute {name} (allowed: {', '.join(a.name for a in self.attributes)})")


def seeded_subset(n: int, examples: int | None, seed: int) -> torch.Tensor:
    """Indices of a seeded subsample of `examples` of n rows (sorted), or all of them when there are no more.
    The same seed picks the same rows for every model of a dataset, so their numbers compare on the same
    images (the likelihoods' test images, the per-epoch test loss)."""
    if examples is None or examples >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:examples].sort().values


def to_batch(
    data: dict[str, torch.Tensor], idx: torch.Tensor | slice, device: torch.device | str | None = None
) -> dict[str, torch.Tensor]:
    """Rows `idx` of a split as a model batch: the image as floats in [0, 1], attributes as they are.

    The rows go to `device` as uint8 (a quarter of the bytes); with device=None they stay where the split
    is, so a split already resident on the GPU never touches the host in the training loop.
    """
    out = {}
    for k, v in data.items():
        rows = v[idx] if device is None else v[idx].to(device, non_blocking=True)
        out[k] = rows.float().div_(255) if rows.dtype == torch.uint8 else rows
    return out


def batches(split: dict[str, torch.Tensor], size: int, device: torch.device | str | None = None):
    """The whole split in order, `size` rows at a time, as model batches (for evaluation passes)."""
    n = len(next(iter(split.values())))
    for start in range(0, n, size):
        yield to_batch(split, slice(start, start + size), device)


def split_sources(mnist: MnistData, digits: tuple[int, ...], seed: int, test_fraction: float):
    """(train images, train labels, test images, test labels) of the chosen digits.

    Full MNIST keeps its official split; the bundled subset is split at random (seeded) by source digit.
    """

    def pick(images, labels):
        keep = np.isin(labels, digits)
        return images[keep], labels[keep]

    if mnist.test_images is not None:
        out = (*pick(mnist.images, mnist.labels), *pick(mnist.test_images, mnist.test_labels))
    else:
        images, labels = pick(mnist.images, mnist.labels)
        order = np.random.default_rng(seed).permutation(len(labels))
        n_test = int(round(test_fraction * len(labels)))
        test, train = order[:n_test], order[n_test:]
        out = images[train], labels[train], images[test], labels[test]
    for name, labels in (("train", out[1]), ("test", out[3])):
        if len(labels) == 0:
            raise UserError(
                f"the {name} split has no digits {', '.join(map(str, digits))} ({mnist.source}, "
                f"test-fraction {test_fraction}; allowed: data and a test fraction that leave both splits "
                "some)"
            )
    return out


def _position_digit_split(images: np.ndarray, labels: np.ndarray) -> dict[str, torch.Tensor]:
    n = len(images)
    canvas = np.zeros((2 * n, 28, 56), dtype=np.uint8)
    canvas[:n, :, :28] = images  # left
    canvas[n:, :, 28:] = images  # right
    return {
        "x": torch.from_numpy(canvas.reshape(2 * n, -1)),
        "position": torch.cat([torch.zeros(n), torch.ones(n)]).long(),
        "digit": torch.from_numpy(np.concatenate([labels, labels]) - 1).long(),
    }


def position_digit(mnist: MnistData, seed: int = 0, test_fraction: float = 0.2) -> AttributeDataset:
    """The founding experiment: a 28x56 canvas with a 1 or a 2 in its left or right half.

    Every source digit appears in both positions, in the same split.
    """
    tr_x, tr_y, te_x, te_y = split_sources(mnist, (1, 2), seed, test_fraction)
    return AttributeDataset(
        "position-digit",
        [Image("x", (28, 56))],
        [Categorical("position", ("left", "right")), Categorical("digit", ("1", "2"))],
        _position_digit_split(tr_x, tr_y),
        _position_digit_split(te_x, te_y),
        mnist.source,
        full_train_size=25_400,
    )  # 2 placements x 12,700 ones and twos


def mnist_label(mnist: MnistData, seed: int = 0, test_fraction: float = 0.2) -> AttributeDataset:
    """The JMVAE paper's MNIST: a 28x28 digit and its label (10 classes)."""
    tr_x, tr_y, te_x, te_y = split_sources(mnist, tuple(range(10)), seed, test_fraction)

    def split(images, labels):
        return {
            "x": torch.from_numpy(images.reshape(len(images), -1).copy()),
            "digit": torch.from_numpy(labels).long(),
        }

    return AttributeDataset(
        "mnist-label",
        [Image("x", (28, 28))],
        [Categorical("digit", tuple(map(str, range(10))))],
        split(tr_x, tr_y),
        split(te_x, te_y),
        mnist.source,
        full_train_size=60_000,
    )


MNIST_A_IMAGES = (
    140_000  # about this many renders from any MNIST: 2 per full-MNIST digit (the paper: 10), 28 per
)
# bundled digit
MNIST_A_EPOCHS = 6  # a default run's length with conv images: 5,574 steps of batch 128; with the shared image
# trunk no longer on 2 cores than the former four passes without it (a glyph decoder's: config.GLYPH_EPOCHS)
MNIST_A_SEED = 0  # one rendering and split for every run seed: seeds and models compare on the same test set


def mnist_a(
    mnist: MnistData, seed: int = 0, test_fraction: float = 0.2, split: str = "iid"
) -> AttributeDataset:
    """The TELBO paper's MNIST-A (data/mnist_a.py): a 64x64 canvas with one digit, four attributes, and its
    iid or compositional split (test combinations never seen in training). The run seed does not change
    the set; `test_fraction` does not apply (the paper's 85/5/10 and 80/10/10 splits; the 5% / 10%
    validation part is not used)."""
    digits = len(mnist.labels) + (
        0 if mnist.test_labels is None else len(mnist.test_labels)
    )  # as digits_of takes them
    renders = math.ceil(MNIST_A_IMAGES / digits)
    try:
        rendered, key = generator.cached(mnist, renders, MNIST_A_SEED, split)
    except ValueError as e:
        raise UserError(str(e)) from None

    def rows(part: str) -> dict[str, torch.Tensor]:
        idx = rendered.split[part]
        return {
            "x": torch.from_numpy(rendered.images[idx].reshape(len(idx), -1)),
            **{name: torch.from_numpy(rendered.labels[name][idx]).long() for name in generator.ATTRIBUTES},
        }

    share = 0.85 if split == "iid" else 0.8  # of the images (iid) or of the combinations (compositional)
    data = AttributeDataset(
        "mnist-a",
        [Image("x", (generator.CANVAS, generator.CANVAS))],
        [Categorical(name, values) for name, values in generator.ATTRIBUTES.items()],
        rows("train"),
        rows("test"),
        f"{mnist.source}; MNIST-A {split} split, set {key}",
        full_train_size=round(share * MNIST_A_IMAGES),
        default_epochs=MNIST_A_EPOCHS,
    )
    data.options = rendered.params | {"hash": key}
    return data


POLYMNIST_EPOCHS = 4  # a default run's length on full MNIST: 1,872 steps of batch 128
POLYMNIST_SEED = 0  # the bundled digits' split: one for every run seed


def polymnist(mnist: MnistData, seed: int = 0, test_fraction: float = 0.2) -> AttributeDataset:
    """The MoPoE paper's PolyMNIST, with freely licensed backgrounds (data/polymnist.py): five colour images
    m0-m4 of one digit class and the class. One rendering and split for every run seed (the bundled digits
    are split at random with seed 0), so seeds and models compare on the same test set."""
    photos, photos_hash = poly.read_backgrounds(poly.background_dir(cache_dir()))
    tr_x, tr_y, te_x, te_y = split_sources(mnist, tuple(range(10)), POLYMNIST_SEED, test_fraction)
    params = {"short_side": poly.SHORT_SIDE, "test_fraction": test_fraction, "source": mnist.kind}
    key = poly.fingerprint(np.concatenate([tr_x, te_x]), np.concatenate([tr_y, te_y]), photos_hash, params)

    def rows(digits: np.ndarray, labels: np.ndarray, render_seed: int) -> dict[str, torch.Tensor]:
        drawn = poly.generate(digits, labels, photos, render_seed)
        return {f"m{i}": torch.from_numpy(x) for i, x in enumerate(drawn.images)} | {
            "digit": torch.from_numpy(drawn.labels)
        }

    data = AttributeDataset(
        "polymnist",
        [Image(f"m{i}", (poly.SIZE, poly.SIZE), channels=3) for i in range(len(photos))],
        [Categorical("digit", tuple(map(str, range(10))))],
        rows(tr_x, tr_y, 0),
        rows(te_x, te_y, 1),
        f"{mnist.source}; PolyMNIST-style set {key}",
        full_train_size=60_000,
        default_epochs=POLYMNIST_EPOCHS,
    )
    data.options = params | {"hash": key, "backgrounds": photos_hash}
    return data


PRESETS: dict[str, Callable[..., AttributeDataset]] = {
    "position-digit": position_digit,
    "mnist-label": mnist_label,
    "mnist-a": mnist_a,
    "polymnist": polymnist,
}
SPLIT_PRESETS = ("mnist-a",)  # the presets that take --split


def parse_assignments(data: AttributeDataset, items: list[str]) -> dict[str, float | int]:
    """["position=left", "digit=2"] -> {"position": 0, "digit": 1} (stored values: class indices, standardised
    numbers, a flag as true/false or 1/0); UserError names what is allowed.

    Naming an attribute twice is an error, not "the last one wins".
    """
    out: dict[str, float | int] = {}
    names = "|".join(re.escape(a.name) for a in data.attributes)
    for item in items:
        for part in re.split(rf",(?=\s*(?:{names})\s*=)", item):  # a comma inside a value stays in it
            name, sep, value = part.partition("=")
            if not sep:
                raise UserError(
                    f"{part!r} is not name=value (e.g. "
                    f"{data.attributes[0].name}={data.attributes[0].classes[0]})"
                )
            attribute = data.attribute(name.strip())
            if attribute.name in out:
                raise UserError(
                    f"{attribute.name} given twice in {' '.join(items)!r} (allowed: each attribute once)"
                )
            try:
                out[attribute.name] = attribute.parse(value.strip())
            except ValueError as e:
                raise UserError(str(e)) from None
    return out


def hold_out(data: AttributeDataset, combinations: list[dict[str, float | int]]) -> AttributeDataset:
    """Remove each attribute combination from the training split (they stay in the test split)."""
    drop = torch.zeros(data.n_train, dtype=torch.bool)
    for combination in combinations:
        match = torch.ones(data.n_train, dtype=torch.bool)
        for name, value in combination.items():
            a = data.attribute(name)
            match &= a.to_levels(data.train[name]) == a.to_levels(torch.tensor(value))
        drop |= match
    if drop.all():
        raise UserError(
            f"--hold-out {' '.join(map(str, combinations))} leaves no training examples "
            "(allowed: combinations that leave some)"
        )
    data.train = {k: v[~drop] for k, v in data.train.items()}
    return data


BINARY_TEST_SEED = 0  # one binarised test set for every run and seed, so their likelihoods compare


def binarized(
    split: dict[str, torch.Tensor], images: Sequence[str], seed: int = BINARY_TEST_SEED
) -> dict[str, torch.Tensor]:
    """The split with each pixel of the named images drawn once from Bernoulli(intensity) (seeded; the i-th
    image from seed + i), stored as 0 or 255: the fixed binarised test set of the likelihood papers (training
    images are binarised afresh at every step)."""
    out = dict(split)
    for i, image in enumerate(images):
        x = split[image].float().div(255)
        drawn = torch.bernoulli(x, generator=torch.Generator().manual_seed(seed + i))
        out[image] = drawn.mul(255).to(torch.uint8)
    return out


def load_dataset(
    preset: str | None,
    mnist_dir: str | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    held_out: list[str] | None = None,
    mnist: str = "auto",
    binarize: bool = False,
    split: str | None = None,
    data: str | None = None,
    attribute: list[str] | None = None,
    image_size: str | None = None,
    progress: bool = True,
) -> AttributeDataset:
    """A preset, or a user's data (`data`: a folder in the ImageFolder layout, or an .npz); then hold-outs and
    the binarised test set."""
    if data is not None:
        from . import own

        loaded = own.load(
            Path(data),
            own.parse_size(image_size),
            own.parse_kinds(attribute or []),
            test_fraction,
            seed,
            progress,
        )
        if held_out:
            loaded = hold_out(loaded, [parse_assignments(loaded, [h]) for h in held_out])
        if binarize:
            loaded.test = binarized(loaded.test, loaded.image_names)
        return loaded
    if preset not in PRESETS:
        raise UserError(f"preset {preset} (allowed: {', '.join(PRESETS)})")
    if split is not None and preset not in SPLIT_PRESETS:
        raise UserError(f"--split with preset {preset} (allowed: presets {', '.join(SPLIT_PRESETS)})")
    digits = load_mnist(mnist_dir, source=mnist)
    dataset = PRESETS[preset](digits, seed, test_fraction, **({"split": split} if split else {}))
    dataset.mnist = digits.kind
    if held_out:
        dataset = hold_out(dataset, [parse_assignments(dataset, [h]) for h in held_out])
    if binarize:
        dataset.test = binarized(dataset.test, dataset.image_names)
    return dataset


def hide_labels(
    split: dict[str, torch.Tensor], attributes: list[str], fraction: float, seed: int
) -> dict[str, torch.Tensor]:
    """The split with every attribute of a random 1 - fraction of its examples set to -1 ("not observed"),
    drawn from `seed` alone, so a resumed or repeated run hides the same examples. At least one example
    keeps its labels."""
    n = len(split[attributes[0]])
    keep = max(1, round(fraction * n))
    hidden = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[keep:]
    out = dict(split)
    for a in attributes:
        out[a] = split[a].clone()
        out[a][hidden] = -1 if out[a].dtype == torch.long else float("nan")
    return out
