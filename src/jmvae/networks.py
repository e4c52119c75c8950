"""Encoder and decoder networks, as in the pixyz JMVAE example: MLPs 512-512 with ReLU.

Encoders end in a Gaussian head (mean, softplus scale); decoders end in the logits of their modality.
Two encoders compute the same function as a plain MLP on one-hot inputs, only cheaper:
`JointEncoder`'s first layer reads the image with a Linear and each attribute with a row lookup (a Linear
on a one-hot vector picks one column of its weight), and `ClassEncoder` evaluates its MLP once per class
and looks the posterior up, since q(z|y) depends on y only through its class.

Inside `low_precision(torch.bfloat16)` (training steps with --precision bfloat16) each network runs its
products under autocast and returns float32: a CPU with bfloat16 instructions multiplies twice as fast, and
the sums of the objective (1,568 pixels' log-densities, KLs) are never rounded to bfloat16's 8 bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .modalities import Continuous, Image, Modality
from .posteriors import Gaussian, Mixture

# -- reduced precision: the networks' products in bfloat16, everything they return in float32 ------------
_LOW: torch.dtype | None = None  # the dtype of the networks' products inside `low_precision`, else None


@contextmanager
def low_precision(dtype: torch.dtype | None):
    """Inside, every network below runs its products in `dtype` (autocast) and returns float32, so the
    likelihoods, KLs and products of experts that read its outputs stay float32. None: float32 throughout."""
    global _LOW
    before, _LOW = _LOW, dtype
    try:
        yield
    finally:
        _LOW = before


@contextmanager
def own_stream(model: nn.Module, seed: int | None = None):
    """Run the block on a random stream of its own (seeded with `seed` if given), on the CPU and on the
    model's CUDA device: the caller's random numbers after it stay as they were, on a GPU too."""
    device = next(model.parameters()).device
    cuda = (
        []
        if device.type != "cuda"
        else [torch.cuda.current_device() if device.index is None else device.index]
    )
    with torch.random.fork_rng(devices=cuda):
        if seed is not None:
            torch.manual_seed(seed)
        yield


def run(f, x: torch.Tensor | Sequence[torch.Tensor], *rest) -> torch.Tensor:
    """f(x, *rest), in the reduced precision if one is on (x: a tensor or a sequence of them)."""
    if _LOW is None:
        return f(x, *rest)
    device = x.device if isinstance(x, torch.Tensor) else x[0].device
    with torch.autocast(device.type, dtype=_LOW):
        out = f(x, *rest)
    return out.float()


class MLP(nn.Sequential):
    """Linear layers with ReLU between them (none after the last)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run(super().forward, x)

    def z_readers(self) -> list[nn.Linear]:
        """The Linear layers that read the input (as a decoder: z)."""
        return [cast(nn.Linear, self[0])]


def mlp(sizes: list[int]) -> MLP:
    """An MLP through the given widths."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(a, b))
    return MLP(*layers)


# An expert's smallest scale: its precision at most 1e8. Five 28x28 colour images once drove an MVAE and an
# MVTCAE expert to a scale of 2e-8 in one step, its precision (3e15) to an infinite gradient and the run to
# nan (docs/results-polymnist.md); a floor, not an added epsilon, so that no other run's numbers move.
MIN_SCALE = 1e-4


def gaussian(head_out: torch.Tensor) -> Gaussian:
    """A head's 2*z_dim outputs -> N(loc, max(softplus(s), MIN_SCALE))."""
    loc, s = head_out.chunk(2, dim=-1)
    return Gaussian(loc, F.softplus(s).clamp_min(MIN_SCALE))


class GaussianEncoder(nn.Module):
    """input -> hidden -> hidden -> N(loc, softplus(s)); `body` replaces the MLP trunk (e.g. a ConvTrunk)."""

    def __init__(self, in_dim: int, z_dim: int, hidden: int = 512, body: nn.Module | None = None):
        super().__init__()
        self.body = body if body is not None else mlp([in_dim, hidden, hidden])
        self.head = nn.Linear(hidden, 2 * z_dim)

    def params(self, h: torch.Tensor) -> torch.Tensor:
        """The head's 2*z_dim outputs (loc, pre-softplus scale) for input h."""
        return self.head(F.relu(self.body(h)))

    def forward(self, h: torch.Tensor) -> Gaussian:
        return gaussian(self.params(h))

    def from_body(self, read: torch.Tensor) -> Gaussian:
        """The posterior from the body's output (an image already read by a trunk this encoder shares)."""
        return gaussian(self.head(F.relu(read)))


class ClassEncoder(GaussianEncoder):
    """q(z | a class index): a GaussianEncoder on the one-hot vector, evaluated on the C classes only.

    The batch's posteriors are rows of that C-row table, so a step costs C rows of MLP instead of B, and
    the gradient (summed over the batch's rows of each class) is the same.
    """

    one_hot: torch.Tensor  # a buffer (C, C)

    def __init__(self, classes: int, z_dim: int, hidden: int = 512):
        super().__init__(classes, z_dim, hidden)
        self.register_buffer("one_hot", torch.eye(classes), persistent=False)

    def forward(self, y: torch.Tensor) -> Gaussian:
        table = self.params(self.one_hot)  # (C, 2 z_dim): every class's posterior
        return gaussian(F.embedding(y, table))


class ValueEncoder(GaussianEncoder):
    """q(z | a real number): a GaussianEncoder on the one value (B,)."""

    def __init__(self, z_dim: int, hidden: int = 512):
        super().__init__(1, z_dim, hidden)

    def forward(self, y: torch.Tensor) -> Gaussian:
        return gaussian(self.params(y.unsqueeze(-1)))


class MixtureClassEncoder(nn.Module):
    """q(z | a class index) as a mixture of K Gaussians: the same MLP on the C one-hot rows, with a head
    giving every component's weight logit, mean and scale.

    Component means start spread out (a unit-normal draw each, in the head's bias), so the components do
    not begin as copies of one another and stay that way.
    """

    def __init__(self, classes: int, z_dim: int, components: int, hidden: int = 512):
        super().__init__()
        self.z_dim, self.components = z_dim, components
        self.body = mlp([classes, hidden, hidden])
        self.head = nn.Linear(hidden, components * (1 + 2 * z_dim))
        with torch.no_grad():
            self.head.bias.view(components, 1 + 2 * z_dim)[:, 1 : 1 + z_dim] = torch.randn(components, z_dim)
        self.register_buffer("one_hot", torch.eye(classes), persistent=False)

    def forward(self, y: torch.Tensor) -> Mixture:
        table = self.head(F.relu(self.body(self.one_hot))).view(-1, self.components, 1 + 2 * self.z_dim)
        rows = table[y]
        return Mixture(
            rows[..., 0],
            rows[..., 1 : 1 + self.z_dim],
            F.softplus(rows[..., 1 + self.z_dim :]).clamp_min(MIN_SCALE),
        )


class JointEncoder(nn.Module):
    """q(z | images, attributes): the same network as a GaussianEncoder on [x, one-hot(y_1), ...].

    Its first layer W [x, y_1, ...] + b is kept as one Linear for the image and one weight per attribute
    (an nn.Embedding: W_i one-hot(y_i) is the y_i-th column of W_i), so no one-hot or concatenated input is
    built and the image product keeps its aligned width. With `image_trunk` (a conv trunk for large images)
    the image is read by that network and each attribute adds its embedding to its output. Further images
    (`more_images`: each one's size and trunk) add their own reader's output the same way.
    """

    def __init__(
        self,
        image_size: int,
        classes: Sequence[int | None],
        z_dim: int,
        hidden: int = 512,
        image_trunk: nn.Module | None = None,
        more_images: Sequence[tuple[int, nn.Module | None]] = (),
    ):
        """`classes`: each attribute's number of classes, or None for a continuous one (read by a Linear)."""
        super().__init__()
        self.more_images = nn.ModuleList()  # filled last: one image's weights draw as they always have

        def reader(c: int | None) -> nn.Module:
            return nn.Embedding(c, hidden) if c is not None else nn.Linear(1, hidden, bias=False)

        if image_trunk is not None:
            self.image = image_trunk
            self.attributes = nn.ModuleList(reader(c) for c in classes)
        else:
            width = sum(c if c is not None else 1 for c in classes)
            first = nn.Linear(image_size + width, hidden)  # drawn as the single Linear it stands for
            with torch.random.fork_rng(devices=[]):  # overwritten below: the seed's stream stays as drawn
                self.image = nn.Linear(image_size, hidden)
                self.attributes = nn.ModuleList(reader(c) for c in classes)
            self.set_first_layer(first.weight, first.bias)
        self.body = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 2 * z_dim)
        self.more_images.extend(
            trunk if trunk is not None else nn.Linear(size, hidden, bias=False) for size, trunk in more_images
        )

    @torch.no_grad()
    def set_first_layer(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Load W (hidden, image + sum of classes) and b of the equivalent single Linear."""
        image = self._first_image_layer()
        parts = weight.split([image.in_features, *(_width(e) for e in self.attributes)], dim=1)
        image.weight.copy_(parts[0])
        image.bias.copy_(bias)
        for reader, w in zip(self.attributes, parts[1:]):
            if isinstance(reader, nn.Embedding):
                reader.weight.copy_(w.t())
            else:
                _linear(reader).weight.copy_(w)

    def first_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W and b of the equivalent single Linear on [x, one-hot(y_1), ...] (a continuous y_i: its value)."""
        image = self._first_image_layer()
        return torch.cat([image.weight, *(_columns(e) for e in self.attributes)], 1), image.bias

    def _first_image_layer(self) -> nn.Linear:
        """The image's Linear of the first layer (there is one only without an image trunk, for one image)."""
        if not isinstance(self.image, nn.Linear) or len(self.more_images):
            raise TypeError("an encoder with an image trunk or several images has no single first Linear")
        return self.image

    def forward(
        self, xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor], read: Sequence[torch.Tensor] = ()
    ) -> Gaussian:
        """`xs`: every image (the first, then `more_images`' order); `ys`: every attribute; `read`: the images
        already read by `readers()` (a trunk shared with the image experts), else they are read here."""
        return gaussian(self.head(run(self.trunk, xs, ys, read)))

    def readers(self) -> list[nn.Module]:
        """Each image's reader (its trunk, or its Linear of the first layer), in the images' order."""
        return [self.image, *self.more_images]

    def trunk(
        self, xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor], read: Sequence[torch.Tensor] = ()
    ) -> torch.Tensor:
        h, *more = read or [r(x) for r, x in zip(self.readers(), xs)]
        for x in more:
            h = h + x
        for emb, y in zip(self.attributes, ys):
            h = h + (emb(y) if isinstance(emb, nn.Embedding) else emb(y.unsqueeze(-1)))
        return self.body(h)


def _width(reader: nn.Module) -> int:
    return reader.num_embeddings if isinstance(reader, nn.Embedding) else _linear(reader).in_features


def _columns(reader: nn.Module) -> torch.Tensor:
    """An attribute reader's columns of the first layer's W: (hidden, classes), or (hidden, 1) for a value."""
    return reader.weight.t() if isinstance(reader, nn.Embedding) else _linear(reader).weight


def _linear(reader: nn.Module) -> nn.Linear:
    if not isinstance(reader, nn.Linear):
        raise TypeError(f"an attribute reader is an Embedding or a Linear, not {type(reader).__name__}")
    return reader


def decoder(z_dim: int, out_dim: int, hidden: int = 512) -> nn.Sequential:
    """z -> hidden -> hidden -> logits."""
    return mlp([z_dim, hidden, hidden, out_dim])


# -- the image networks: an MLP for the founding experiment's small images, conv nets for larger ones -------
# Each conv recipe: the encoder trunk's channels, then the decoder's, one entry per stride-2 layer. conv3 is
# the default; conv4 reaches a 1/16 grid: on MNIST-A a better likelihood and coverage, the same correctness
# with all four given, 1.2-1.5x the step (docs/results-mnist-a.md, docs/results-own-data.md). conv3-light: a
# lighter encoder, for more passes in the same time (MNIST-A's JMVAE default).
CONV_WIDTHS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "conv2": ((32, 64), (64, 32)),  # only where asked for: 28x28 images (PolyMNIST) reach a 7x7 grid
    "conv3": ((32, 64, 64), (64, 64, 32)),
    "conv3-light": ((16, 32, 64), (64, 64, 32)),
    "conv4": ((32, 64, 128, 256), (256, 128, 64, 32)),
}
IMAGE_NETWORKS = ("mlp", *CONV_WIDTHS)
# Conv weights (and so their activations) channels-last: a faster CPU step, 1.12-1.36x by host
# (docs/decisions/benchmark-log.md); saved and resumed in that layout alike.
CONV_LAYOUT = torch.channels_last
# The recipe each falls back to where an image does not fit it (None: the MLP).
FALLBACK: dict[str, str | None] = {"conv4": "conv3", "conv3": None, "conv3-light": None, "conv2": None}


def conv_recipe(image: Image) -> str | None:
    """The conv recipe of this image's networks, None for the MLP: its `network` where both sides are at least
    32 pixels (conv2: 16) and divide by 2 ** layers, else the one it falls back to (conv4 -> conv3 -> MLP;
    the others -> MLP)."""
    h, w = image.shape
    name = image.network if image.network in CONV_WIDTHS else None
    while name is not None:
        least, scale = (16 if name == "conv2" else 32), 2 ** len(CONV_WIDTHS[name][0])
        if h >= least and w >= least and h % scale == 0 and w % scale == 0:
            return name
        name = FALLBACK[name]
    return None


def conv_trunk(image: Image, hidden: int) -> ConvTrunk | None:
    """The image's conv encoder trunk; None where its networks are the MLP."""
    recipe = conv_recipe(image)
    return ConvTrunk(image.shape, hidden, image.channels, CONV_WIDTHS[recipe][0]) if recipe else None


class ConvTrunk(nn.Module):
    """(..., C*H*W) -> (..., hidden): 4x4 stride-2 convolutions through `widths` channels, then a Linear."""

    def __init__(
        self,
        shape: tuple[int, int],
        hidden: int = 512,
        channels: int = 1,
        widths: tuple[int, ...] = (32, 64, 64),
    ):
        super().__init__()
        self.shape, self.channels = shape, channels
        scale = 2 ** len(widths)
        layers: list[nn.Module] = []
        for a, b in zip((channels, *widths), widths):
            layers += [nn.Conv2d(a, b, 4, 2, 1), nn.ReLU()]
        layers += [nn.Flatten(), nn.Linear(widths[-1] * (shape[0] // scale) * (shape[1] // scale), hidden)]
        self.net = nn.Sequential(*layers).to(memory_format=CONV_LAYOUT)  # type: ignore[call-overload]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        h = run(self.net, x.reshape(-1, self.channels, *self.shape))
        return h.reshape(*lead, h.shape[-1])  # not -1: a batch of no rows has a width too


class ConvDecoder(nn.Module):
    """z -> hidden -> widths[0] x H/s x W/s -> 4x4 stride-2 transposed convolutions through `widths` ->
    (..., C*H*W) logits, s = 2 ** len(widths)."""

    def __init__(
        self,
        z_dim: int,
        shape: tuple[int, int],
        hidden: int = 512,
        channels: int = 1,
        widths: tuple[int, ...] = (64, 64, 32),
    ):
        super().__init__()
        scale = 2 ** len(widths)
        self.grid = (widths[0], shape[0] // scale, shape[1] // scale)
        self.fc = nn.Sequential(
            nn.Linear(z_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, widths[0] * self.grid[1] * self.grid[2]),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        for a, b in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.ReLU()]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Flatten()]
        self.net = nn.Sequential(*layers).to(memory_format=CONV_LAYOUT)  # type: ignore[call-overload]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return run(self.pixels, z)

    def z_readers(self) -> list[nn.Linear]:
        """The Linear layers that read z."""
        return [cast(nn.Linear, self.fc[0])]

    def pixels(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        x = self.net(self.fc(z).reshape(-1, *self.grid))
        return x.reshape(*lead, x.shape[-1])  # not -1: a batch of no rows has a width too


def z_readers(net: nn.Module) -> list[nn.Linear]:
    """A decoder's Linear layers that read z: its own `z_readers()` where it has them (jmvae's decoders do),
    else its first Linear (a user's network)."""
    own = getattr(net, "z_readers", None)
    return own() if callable(own) else [next(m for m in net.modules() if isinstance(m, nn.Linear))]


# --image-decoder: the recipe's ConvDecoder; PlacedDecoder; PlacedDecoder whose glyph z turns, scales, shifts
IMAGE_DECODERS = ("conv", "placed", "posed")
GLYPH_DECODERS = ("placed", "posed")  # the ones PlacedDecoder draws (placed_fits)
PLACEMENT_STRIDES = (1, 2, 4)  # pixels between its offsets: each divides the glyph's sides (placed_fits)


def placed_fits(image: Image) -> bool:
    """Whether PlacedDecoder (placed, posed) draws this image: its glyph, half of each side, divides by 4."""
    h, w = image.shape
    return h >= 32 and w >= 32 and h % 8 == 0 and w % 8 == 0


def posed(ink: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """Images (n, C, h, w) shifted by pose[:, 2:] halves of their width and height, then turned by pose[:, 0]
    radians and scaled by exp(pose[:, 1]) about the centre, rigidly in pixels (so the shift turns and scales
    too); outside them is 0. In float32 even under autocast: a bfloat16 grid would place to 1/8 pixel."""
    if ink.numel() == 0:
        return ink
    angle, log_scale, dx, dy = pose.float().unbind(-1)
    (h, w), inv = ink.shape[-2:], (-log_scale).exp()
    cos, sin = angle.cos() * inv, angle.sin() * inv
    # where each output pixel reads its image, in [-1, 1] coordinates (so the aspect ratio enters the turn)
    theta = torch.stack([cos, sin * h / w, -dx, -sin * w / h, cos, -dy], -1).reshape(-1, 2, 3)
    with torch.autocast(ink.device.type, enabled=False):
        grid = F.affine_grid(theta, list(ink.shape), align_corners=False)
        return F.grid_sample(ink.float(), grid, align_corners=False)


def laid(glyph: torch.Tensor, where: torch.Tensor, stride: int, shape: tuple[int, int]) -> torch.Tensor:
    """Glyphs (n, C, h, w) laid at every offset, each weighted by `where` (n, 1, rows, cols): the sum over
    offsets (i, j) of w_ij times the glyph moved stride * (i, j) pixels, on (n, C, *shape) canvases that the
    offsets span exactly. A convolution, done by FFT in float32 (even under autocast): its cost does not grow
    with the offsets as a grouped transposed convolution's does (docs/decisions/benchmark-log.md), and the
    canvas holds the whole linear convolution, so the FFT's circular one does not wrap."""
    (rows, cols), (h, w), shape = where.shape[-2:], glyph.shape[-2:], (int(shape[0]), int(shape[1]))
    assert ((rows - 1) * stride + h, (cols - 1) * stride + w) == shape, "the offsets must span the canvas"
    with torch.autocast(glyph.device.type, enabled=False):
        spikes = where.new_zeros(*where.shape[:-2], *shape, dtype=torch.float32)
        spikes[..., : (rows - 1) * stride + 1 : stride, : (cols - 1) * stride + 1 : stride] = where.float()
        padded = F.pad(glyph.float(), (0, shape[1] - w, 0, shape[0] - h))
        return torch.fft.irfft2(torch.fft.rfft2(spikes) * torch.fft.rfft2(padded), s=shape)


class PlacedDecoder(nn.Module):
    """p(x|z) for a small object on a plain canvas: a glyph half the canvas's size drawn from z (two 4x4
    stride-2 transposed convolutions, 64-32 channels), laid at offsets every `stride` pixels weighted by a
    softmax over them that z gives (the expected placement, in logits), over a learnt background logit. A
    shape is learnt once for every place (ConvDecoder's first Linear learns it per grid cell) and the glyph
    is a quarter of the pixels. Not for images an object fills. `posed`: z also turns, scales and shifts the
    glyph (finer than the offsets) before it is laid, a spatial transformer that starts as the identity."""

    def __init__(
        self,
        z_dim: int,
        shape: tuple[int, int],
        hidden: int = 512,
        channels: int = 1,
        stride: int = 4,
        posed: bool = False,
    ):
        super().__init__()
        self.shape, self.channels, self.stride = shape, channels, stride
        self.glyph_shape = (shape[0] // 2, shape[1] // 2)
        self.glyph = ConvDecoder(z_dim, self.glyph_shape, hidden, channels, (64, 32))
        self.offsets = (
            (shape[0] - self.glyph_shape[0]) // stride + 1,
            (shape[1] - self.glyph_shape[1]) // stride + 1,
        )
        self.where = mlp([z_dim, max(hidden // 4, 1), self.offsets[0] * self.offsets[1]])
        self.background = nn.Parameter(torch.full((channels,), -4.0))
        self.pose: MLP | None = None  # posed: angle, log scale and shift (x, y; a share of half the glyph)
        if posed:
            self.pose = mlp([z_dim, max(hidden // 4, 1), 4])
            last = cast(nn.Linear, self.pose[-1])
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return run(self.pixels, z)

    def z_readers(self) -> list[nn.Linear]:
        """The Linear layers that read z: the glyph's first, the offsets' first and the pose's first."""
        return self.glyph.z_readers() + self.where.z_readers() + (self.pose.z_readers() if self.pose else [])

    def ink(self, z: torch.Tensor) -> torch.Tensor:
        """The glyph over the background, in logits, posed: (n, C, H/2, W/2) for z of (n, z_dim)."""
        ink = self.glyph(z).reshape(len(z), self.channels, *self.glyph_shape) - self.background[:, None, None]
        return ink if self.pose is None else posed(ink, self.pose(z))

    def placement(self, z: torch.Tensor) -> torch.Tensor:
        """Each offset's weight in the image, (n, offsets): a softmax that z gives."""
        return torch.softmax(self.where(z), -1)

    def pixels(self, z: torch.Tensor) -> torch.Tensor:
        lead, z = z.shape[:-1], z.reshape(-1, z.shape[-1])
        n, c, bg = len(z), self.channels, self.background[:, None, None]
        if n == 0:  # a batch of no rows has a width too
            return z.new_zeros(*lead, c * self.shape[0] * self.shape[1])
        canvas = laid(self.ink(z), self.placement(z).reshape(n, 1, *self.offsets), self.stride, self.shape)
        x = canvas + bg
        return x.reshape(*lead, c * self.shape[0] * self.shape[1])  # not -1: a batch of no rows has a width


def expert(m: Modality, z_dim: int, hidden: int = 512, components: int = 1) -> nn.Module:
    """The default unimodal encoder q(z|m): Gaussian on the image (MLP or conv trunk), on a class for an
    attribute (a mixture of `components` Gaussians if > 1)."""
    if isinstance(m, Image):
        body = conv_trunk(m, hidden)
        return GaussianEncoder(m.size, z_dim, hidden, body)
    if isinstance(m, Continuous):
        return ValueEncoder(z_dim, hidden)
    if components > 1:
        return MixtureClassEncoder(m.size, z_dim, components, hidden)
    return ClassEncoder(m.size, z_dim, hidden)


def modality_decoder(m: Modality, z_dim: int, hidden: int = 512) -> nn.Module:
    """The default decoder p(m|z): logits of the modality."""
    if isinstance(m, Image) and m.decoder in GLYPH_DECODERS:
        return PlacedDecoder(z_dim, m.shape, hidden, m.channels, m.stride, posed=m.decoder == "posed")
    if isinstance(m, Image) and (recipe := conv_recipe(m)):
        return ConvDecoder(z_dim, m.shape, hidden, m.channels, CONV_WIDTHS[recipe][1])
    return decoder(z_dim, m.out_size, hidden)
