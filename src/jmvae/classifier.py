"""The attribute reader that reads generated images for the coherence metrics.

A small CNN trained on the run's real training images to predict every attribute (a class, or a continuous
value by regression, each on the cells that are observed); its accuracy on the real test images bounds every
metric that relies on it, so it is reported first. Trained once per dataset (keyed by the data's
fingerprint) and cached under the jmvae cache directory.

Generated images are means of p(x|z): greyer and blurrier than real digits. A classifier that has only
seen crisp digits reads a dim, blurred 2 as a 1 (the first version did, on 15% of real test digits blurred
and dimmed), which made faithful images count as failures. So it trains on real digits degraded at random
the way means are (Gaussian blur, lower contrast) and reports its accuracy on degraded test digits too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .data.attributes import AttributeDataset, to_batch
from .data.mnist import cache_dir
from .modalities import Attribute, Continuous, Image
from .runs import fingerprint, save_torch

CROP = 40  # the window a large canvas's digit is read in: a 28x28 digit turned 45 degrees fits in 40x40
LARGE = 64  # canvases of this size and more (MNIST-A) are read through that window


def ink_centres(img: torch.Tensor) -> torch.Tensor:
    """(B, 2) ink-weighted centre (row, column) of images (B, 1, H, W); the canvas centre where there is no
    ink."""
    h, w = img.shape[-2:]
    mass = img.sum((-3, -2, -1)).clamp_min(1e-6)
    rows = (img.sum((-3, -1)) * torch.arange(h, dtype=img.dtype, device=img.device)).sum(-1) / mass
    cols = (img.sum((-3, -2)) * torch.arange(w, dtype=img.dtype, device=img.device)).sum(-1) / mass
    empty = img.sum((-3, -2, -1)) <= 1e-6
    centre = torch.stack([rows, cols], -1)
    return torch.where(empty[:, None], torch.tensor([(h - 1) / 2, (w - 1) / 2], device=img.device), centre)


def crop_at(img: torch.Tensor, centres: torch.Tensor, size: int = CROP) -> torch.Tensor:
    """(B, 1, size, size) windows of images (B, 1, H, W) centred at the rounded centres, black outside."""
    pad = size // 2 + 1
    padded = F.pad(img, (pad, pad, pad, pad))
    start = centres.round().long() + pad - size // 2  # top-left in the padded image
    offsets = torch.arange(size, device=img.device)
    r = (start[:, 0, None] + offsets)[:, :, None].expand(-1, size, size)
    c = (start[:, 1, None] + offsets)[:, None, :].expand(-1, size, size)
    b = torch.arange(len(img), device=img.device)[:, None, None]
    return padded[b, 0, r, c].unsqueeze(1)


def feature_net(shape: tuple[int, int], channels: int) -> tuple[nn.Sequential, int, bool]:
    """One image's feature extractor, its output width, and whether it reads a window around the ink."""
    crop = min(shape) >= LARGE and channels == 1  # one small grey object on a black canvas
    if crop:
        net = nn.Sequential(
            nn.Conv2d(1, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        return net, 64 * ((CROP + 7) // 8) ** 2 + (shape[0] // 8) * (shape[1] // 8), True
    wide = 2 if channels > 1 else 1  # colour: twice the channels
    net = nn.Sequential(
        nn.Conv2d(channels, 16 * wide, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16 * wide, 32 * wide, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
    )
    return net, 32 * wide * ((shape[0] + 3) // 4) * ((shape[1] + 3) // 4), False


class ImageFeatures(nn.Module):
    """Features of one image modality: a CNN on the whole image, or on a window around the ink beside the
    canvas at 1/8 scale (see AttributeClassifier)."""

    def __init__(self, image: Image):
        super().__init__()
        self.shape, self.channels = image.shape, image.channels
        self.features, self.width, self.crop = feature_net(image.shape, image.channels)
        self.overview = nn.AvgPool2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return image_features(self, x)


def image_features(reader, x: torch.Tensor) -> torch.Tensor:
    """Features of flattened images by a reader's `features` (and, on a canvas it searches, `overview`): the
    window around the ink beside the coarse canvas, or the whole image."""
    img = x.reshape(-1, reader.channels, *reader.shape)
    if reader.crop:
        return torch.cat(
            [reader.features(crop_at(img, ink_centres(img))), reader.overview(img).flatten(1)], -1
        )
    return reader.features(img)


class AttributeClassifier(nn.Module):
    """Small images: a two-layer CNN on the whole image. A canvas of LARGE pixels or more holding one small
    object (MNIST-A's 64x64 with a rotated, scaled digit somewhere): the CNN reads a CROP x CROP window
    centred on the ink, beside the whole canvas averaged to 1/8 scale, so what the digit is, its size and its
    turn are read where the digit is and where it is comes from the coarse view (a CNN on the whole canvas
    read digits at 0.61 after the same training). Several images: each has its own features, read together
    by one head (the first image's modules keep the one-image names)."""

    def __init__(
        self,
        images: Sequence[Image],
        classes: dict[str, int],
        attributes: Sequence[Attribute] = (),
    ):
        """`classes`: the output width of each attribute (1 for a continuous one, read by regression)."""
        super().__init__()
        first, *more = images
        self.images = [m.name for m in images]
        self.shape, self.classes, self.channels = first.shape, classes, first.channels
        self.attributes = {a.name: a for a in attributes}
        self.features, width, self.crop = feature_net(first.shape, first.channels)
        if self.crop:
            self.overview = nn.AvgPool2d(8)  # the canvas at 1/8 scale: where the ink is
        readers = [ImageFeatures(m) for m in more]
        self.more = nn.ModuleList(readers)
        self.any_crop = self.crop or any(f.crop for f in readers)  # a canvas to search: a wider, longer read
        hidden = 256 if self.any_crop else 128
        self.hidden = nn.Sequential(nn.Linear(width + sum(f.width for f in readers), hidden), nn.ReLU())
        self.head = nn.Linear(hidden, sum(classes.values()))

    def forward(self, xs: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Flattened images in [0, 1], one tensor per image modality in `images` order -> logits per
        attribute."""
        h = image_features(self, xs[0])
        if len(self.more):
            h = torch.cat([h, *(f(x) for f, x in zip(self.more, xs[1:]))], -1)
        h = self.head(self.hidden(h))
        return dict(zip(self.classes, h.split(list(self.classes.values()), dim=-1)))

    @torch.no_grad()
    def predict(self, drawn: Mapping[str, torch.Tensor], chunk: int = 4096) -> dict[str, torch.Tensor]:
        """The level read for every attribute (the most probable class; a continuous value's nearest level),
        from the images in `drawn` (each of any leading shape (..., C*H*W); other keys are ignored)."""
        values = self.read(drawn, chunk)
        return {k: self.attributes[k].to_levels(v) if k in self.attributes else v for k, v in values.items()}

    @torch.no_grad()
    def read(self, drawn: Mapping[str, torch.Tensor], chunk: int = 4096) -> dict[str, torch.Tensor]:
        """The value read for every attribute: a class index, or a continuous value (standardised)."""
        lead = drawn[self.images[0]].shape[:-1]
        flat = [drawn[m].reshape(-1, drawn[m].shape[-1]) for m in self.images]
        parts = [
            {k: self._value(k, v) for k, v in self([x[i : i + chunk] for x in flat]).items()}
            for i in range(0, len(flat[0]), chunk)
        ]
        return {k: torch.cat([p[k] for p in parts]).reshape(lead) for k in self.classes}

    def _value(self, name: str, logits: torch.Tensor) -> torch.Tensor:
        return logits[..., 0] if isinstance(self.attributes.get(name), Continuous) else logits.argmax(-1)


def degraded_images(
    clf: AttributeClassifier, data: AttributeDataset, batch: dict[str, torch.Tensor], g: torch.Generator
) -> list[torch.Tensor]:
    """Every image of the batch degraded as generated means are (see `degrade`), in the reader's order."""
    images = {m.name: m for m in data.images}
    return [degrade(batch[n], images[n].shape, g, images[n].channels) for n in clf.images]


@torch.no_grad()
def accuracy(
    clf: AttributeClassifier, data: AttributeDataset, split: dict[str, torch.Tensor], degraded: bool = False
) -> dict[str, float]:
    """Share of the split's images whose every attribute the classifier reads right; `degraded`: the images
    blurred (std 1.1 pixels) and, grey ones, at half contrast first, as a generated mean often is."""
    x = to_batch(split, slice(None))
    if degraded:
        x = {
            m.name: blur(x[m.name], m.shape, 1.1, m.channels) * (0.5 if m.channels == 1 else 1.0)
            for m in data.images
        }
    pred = clf.predict(x)
    out = {}
    for k in clf.classes:
        truth = clf.attributes[k].to_levels(split[k]) if k in clf.attributes else split[k]
        seen = truth >= 0
        out[k] = float((pred[k] == truth)[seen].float().mean()) if seen.any() else float("nan")
    return out


@torch.no_grad()
def value_errors(clf: AttributeClassifier, split: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each continuous attribute's mean absolute reading error on the split's real images, as a share of
    its training range (0.1 = a tenth of the range)."""
    continuous = [a for a in clf.attributes.values() if isinstance(a, Continuous)]
    if not continuous:
        return {}
    read = clf.read(to_batch(split, slice(None)))
    out = {}
    for a in continuous:
        seen = ~split[a.name].isnan()
        out[a.name] = float((read[a.name] - split[a.name])[seen].abs().mean() / (a.high - a.low))
    return out


VERSION = 2  # part of the cache key: a classifier trained another way is another classifier
BLURS = (0.0, 0.7, 1.1, 1.5)  # Gaussian blur std in pixels; a batch is split evenly among them


def blur(
    x: torch.Tensor, shape: tuple[int, int], sigma: float, channels: int = 1, radius: int | None = None
) -> torch.Tensor:
    """Flattened images (B, C*H*W) blurred by a separable Gaussian of std `sigma` pixels (zero padding), cut
    at `radius` pixels (None: 3 sigma)."""
    if sigma <= 0:
        return x
    r = radius or max(1, round(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    img = x.reshape(-1, 1, *shape)  # each channel blurred alone
    img = F.conv2d(img, k.view(1, 1, 1, -1), padding=(0, r))
    img = F.conv2d(img, k.view(1, 1, -1, 1), padding=(r, 0))
    return img.reshape(x.shape)


def degrade(x: torch.Tensor, shape: tuple[int, int], g: torch.Generator, channels: int = 1) -> torch.Tensor:
    """Real images made to look like generated means: blur (one std per quarter of the batch, from BLURS)
    and contrast scaled by a factor in [0.4, 1] per image (grey images: dimmer ink on black)."""
    parts = [blur(part, shape, s, channels) for part, s in zip(x.chunk(len(BLURS)), BLURS)]
    gain = 0.4 + 0.6 * torch.rand(len(x), 1, generator=g, device=x.device)
    return torch.cat(parts) * gain if channels == 1 else torch.cat(parts)


def train_classifier(
    data: AttributeDataset,
    steps: int = 2000,
    batch_size: int = 128,
    seed: int = 0,
    images: Sequence[str] | None = None,
) -> AttributeClassifier:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    clf = reader_of(data, images)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
    n = data.n_train
    for _ in range(steps):
        batch = to_batch(data.train, torch.randint(0, n, (batch_size,), generator=g))
        logits = clf(degraded_images(clf, data, batch, g))
        loss = cast(
            torch.Tensor, sum(reading_loss(clf.attributes[a], logits[a], batch[a]) for a in clf.classes)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return clf.eval()


def reader_of(data: AttributeDataset, images: Sequence[str] | None = None) -> AttributeClassifier:
    """A reader of every attribute from all of the data's images, or from the named ones only."""
    widths = {a.name: 1 if isinstance(a, Continuous) else a.size for a in data.attributes}
    read = data.images if images is None else [m for m in data.images if m.name in images]
    return AttributeClassifier(read, widths, data.attributes)


def reading_loss(attribute: Attribute, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of a class, squared error of a continuous value; cells not observed left out."""
    if isinstance(attribute, Continuous):
        seen = ~target.isnan()
        return ((logits[:, 0] - target.nan_to_num(0.0)) ** 2 * seen).sum() / seen.sum().clamp_min(1)
    if bool((target < 0).any()):
        return (
            F.cross_entropy(logits, target, ignore_index=-1)
            if bool((target >= 0).any())
            else logits.sum() * 0
        )
    return F.cross_entropy(logits, target)


STEPS = 2000  # training steps of the small classifier
CROP_STEPS = 4000  # of the cropping one: MNIST-A's digits and turns need more (about 140 s on 2 cores, once)


def classifier_for(
    data: AttributeDataset, images: Sequence[str] | None = None, data_hash: str | None = None
) -> tuple[AttributeClassifier, dict[str, float]]:
    """The cached classifier of this dataset (trained on first use) and its real test accuracy; `images`:
    one that reads only those images (the per-image readers of cross-modal coherence); `data_hash`: the
    data's fingerprint where the caller has it (hashing 70,000 colour images takes about a second).

    Keyed by the data's fingerprint, not the run's settings: runs whose seeds or models differ but whose data
    is the same (full MNIST, MNIST-A) are read by one instrument, trained once (its training seed is fixed).
    """
    clf = reader_of(data, images)
    steps = CROP_STEPS if clf.any_crop else STEPS
    how = (
        {"version": VERSION}
        | ({"crop": CROP, "steps": steps} if clf.any_crop else {})  # small ones keep their keys
        | ({"images": clf.images} if images is not None else {})
    )
    key = hashlib.sha1(
        json.dumps({"data": data_hash or fingerprint(data)} | how, sort_keys=True).encode()
    ).hexdigest()[:16]
    path = cache_dir() / "classifiers" / f"{data.name}-{key}.pt"
    try:
        clf.load_state_dict(torch.load(path, weights_only=True))
        clf.eval()
    except Exception:  # not cached yet, or a cache file cut short by a kill: train it (again)
        clf = train_classifier(data, steps, images=images)
        save_torch(path, clf.state_dict())
    return clf, accuracy(clf, data, data.test)
