"""Which conv image decoder draws the digit asked for on MNIST-A, at equal training wall time (issue 38).

Each variant trains the preset's model (JMVAE's published objective, z = 10, attribute weight 50, batch 128,
Adam 1e-3, the preset's precision) for --seconds of training steps from the same seed, then is read by the
project's MNIST-A classifier on --n test examples:
- recon: the image decoded (mean of p(x|z)) from one draw of q(z|x,y), which knows the label: the digit read
  back, and all four attributes;
- gen: from one draw of q(z|y) at T = 1 with all four attributes given (the papers' sampler, no completion);
- recon-mean: as recon, from q(z|x,y)'s mean; for a decoder that places a glyph, how far its placement spreads
  (`--placement-temperature T` reads the images with its softmax sharpened, 0 for the one likeliest offset).

    JMVAE_OFFLINE=1 python benchmarks/decoder_search.py --variants conv3 conv4 --seconds 480 --threads 1
    python benchmarks/decoder_search.py --variants conv3 --steps 7425 --set 'lr_schedule="cosine"' \
        --read-at 3725     # a learning curve on the way; --read-at: multiples of 25; on CUDA where present
    python benchmarks/decoder_search.py --run RUN...   # the same read-back of trained MNIST-A runs
    python benchmarks/decoder_search.py --run RUN --placement-temperature 0.5

Run two at once with --threads 1 each on 2 cores; compare variants from runs that shared the machine alike.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import bad_input, config_value, cpu_model, run_main  # noqa: E402
from torch import nn  # noqa: E402

from jmvae import networks  # noqa: E402
from jmvae.classifier import classifier_for  # noqa: E402
from jmvae.config import TrainConfig  # noqa: E402
from jmvae.data.attributes import to_batch  # noqa: E402
from jmvae.figures import save_image_grid  # noqa: E402
from jmvae.modalities import Image  # noqa: E402
from jmvae.models import base  # noqa: E402
from jmvae.train import (  # noqa: E402
    build,
    flush_subnormals,
    load_run,
    make_optimizer,
    train_steps,
    training_split,
)


class Residual(nn.Module):
    """x + conv3x3(relu(x))."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(F.relu(x))


def conv3_decoder(widths=(64, 64, 32), norm: bool = False, residual: bool = False):
    """conv3's decoder with other widths, batch norm or a residual 3x3 convolution after each hidden layer."""

    def make(z_dim, shape, hidden=512, channels=1):
        dec = networks.ConvDecoder(z_dim, shape, hidden, channels, widths)
        layers: list[nn.Module] = []
        for layer in dec.net:
            layers.append(layer)
            if isinstance(layer, nn.ReLU):
                width = layers[-2].out_channels
                layers[-1:] = ([nn.BatchNorm2d(width)] if norm else []) + [nn.ReLU()]
                layers += [Residual(width)] if residual else []
        dec.net = nn.Sequential(*layers)
        return dec

    return make


class BroadcastDecoder(nn.Module):
    """conv3's decoder whose coarse grid is one shared function of z and each cell's coordinates (a spatial
    broadcast, Watters et al. 2019) instead of a Linear per cell: a digit's shape is learnt once for every
    place instead of once per grid cell."""

    def __init__(self, z_dim, shape, hidden=512, channels=1, widths=(64, 64, 32), mid=128):
        super().__init__()
        scale = 2 ** len(widths)
        gh, gw = shape[0] // scale, shape[1] // scale
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, gh), torch.linspace(-1, 1, gw), indexing="ij")
        self.register_buffer("coords", torch.stack([ys, xs])[None], persistent=False)
        self.fc = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, mid))
        self.at = nn.Conv2d(2, mid, 1)  # (Linear of [h, coords]) split: h's part once per example
        self.cells = nn.Sequential(nn.ReLU(), nn.Conv2d(mid, mid, 1), nn.ReLU(), nn.Conv2d(mid, widths[0], 1))
        self.net = networks.ConvDecoder(z_dim, shape, hidden, channels, widths).net

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return networks.run(self.pixels, z)

    def pixels(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.fc(z.reshape(-1, z.shape[-1]))[:, :, None, None] + self.at(self.coords)
        x = self.net(F.relu(self.cells(h)))
        return x.reshape(*lead, x.shape[-1])


class HintDecoder(nn.Module):
    """conv3's decoder reading z beside the attribute decoders' class probabilities p(y|z) (detached, so the
    image term does not train them): the digit and pose as one-hot-like features instead of only entangled
    in z. Still a function of z alone, so p(x|z) stays the model's."""

    def __init__(self, z_dim, shape, hidden, channels, heads: list[nn.Module], classes: int):
        super().__init__()
        self.heads = tuple(heads)  # a tuple: not registered again, they are the model's attribute decoders
        self.dec = networks.ConvDecoder(z_dim + classes, shape, hidden, channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        hints = [torch.softmax(head(z).float(), -1).detach().to(z.dtype) for head in self.heads]
        return self.dec(torch.cat([z, *hints], -1))


class TurnedPlacedDecoder(networks.PlacedDecoder):
    """--image-decoder posed without its shift: the glyph turned and scaled by an angle and a log scale that z
    gives (a spatial transformer, the identity at the start) before it is laid, not moved finer."""

    def __init__(self, z_dim, shape, hidden=512, channels=1):
        super().__init__(z_dim, shape, hidden, channels)
        self.turn = networks.mlp([z_dim, max(hidden // 4, 1), 2])
        nn.init.zeros_(self.turn[-1].weight)
        nn.init.zeros_(self.turn[-1].bias)

    def z_readers(self) -> list[nn.Linear]:
        return super().z_readers() + self.turn.z_readers()

    def ink(self, z: torch.Tensor) -> torch.Tensor:
        return networks.posed(super().ink(z), F.pad(self.turn(z), (0, 2)))  # no shift: dx = dy = 0


class HardPlacedDecoder(networks.PlacedDecoder):
    """--image-decoder posed laying its glyph at one offset, the softmax's most likely, in the forward pass,
    with the softmax's gradient (straight through): the trained default spreads its glyph over ~15 offsets
    (the softmax's perplexity), a blur the glyph need not learn."""

    def __init__(self, z_dim, shape, hidden=512, channels=1, stride=4):
        super().__init__(z_dim, shape, hidden, channels, stride, posed=True)

    def placement(self, z: torch.Tensor) -> torch.Tensor:
        soft = super().placement(z)
        hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
        return hard + soft - soft.detach()


class MixturePlacedDecoder(networks.PlacedDecoder):
    """--image-decoder posed whose p(x|z) is a mixture over the offsets, sum_k w_k p(x | the glyph laid at k),
    not one Bernoulli of the weighted placements: a spread placement no longer blurs the image for free (the
    trained default's softmax spreads the glyph over ~15 offsets), and the glyph learns from the offsets that
    explain the image (the responsibilities). Outputs, packed per row: the offsets' logits, the posed ink
    (glyph logits over the background) and the background logit; MixtureImage reads them."""

    def __init__(self, z_dim, shape, hidden=512, channels=1, stride=4):
        super().__init__(z_dim, shape, hidden, channels, stride, posed=True)

    def pixels(self, z: torch.Tensor) -> torch.Tensor:
        lead, z = z.shape[:-1], z.reshape(-1, z.shape[-1])
        parts = [self.where(z), self.ink(z).flatten(1), self.background.expand(len(z), -1)]
        out = torch.cat([p.float() for p in parts], -1)
        return out.reshape(*lead, out.shape[-1])


@dataclass(frozen=True)
class MixtureImage(Image):
    """The image modality of MixturePlacedDecoder's packed outputs: the mixture's log-likelihood and mean."""

    glyph_shape: tuple[int, int] = (32, 32)
    offsets: tuple[int, int] = (9, 9)

    def unpack(self, out: torch.Tensor):
        k, c = self.offsets[0] * self.offsets[1], self.channels
        n = out.reshape(-1, out.shape[-1]).shape[0]
        flat = out.reshape(n, -1).float()
        ink = flat[:, k : k + c * self.glyph_shape[0] * self.glyph_shape[1]].reshape(
            n * c, 1, *self.glyph_shape
        )
        return n, flat[:, :k], ink, flat[:, -c:]

    def log_likelihood(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log sum_k w_k prod_d Bernoulli(x_d | the canvas with the glyph at offset k): the background's terms
        on every pixel, plus each offset's window term, whose x-dependent part is one correlation of x with
        the ink per example."""
        n, where, ink, bg = self.unpack(out)
        c, (h, w) = self.channels, self.shape
        x = x.float().expand(*out.shape[:-1], x.shape[-1]).reshape(n, c, h, w)
        base = (x.sum((-2, -1)) * bg - h * w * F.softplus(bg)).sum(-1)
        glyph = (
            F.softplus(ink + bg.reshape(n * c, 1, 1, 1)) - F.softplus(bg).reshape(n * c, 1, 1, 1)
        ).reshape(n, -1)
        with torch.autocast(x.device.type, enabled=False):
            corr = F.conv2d(x.reshape(1, n * c, h, w), ink, stride=self.stride, groups=n * c)
        corr = corr.reshape(n, c, -1).sum(1)
        mix = torch.logsumexp(torch.log_softmax(where, -1) + corr, -1)
        return (base - glyph.sum(-1) + mix).reshape(out.shape[:-1])

    def log_likelihood_pairs(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("MixtureImage: the preset's objective only (no prior or image terms)")

    def point(self, out: torch.Tensor) -> torch.Tensor:
        """The mixture's mean: sum_k w_k (the canvas with the glyph at k), in [0, 1]."""
        n, where, ink, bg = self.unpack(out)
        c, (h, w) = self.channels, self.shape
        b = bg.reshape(n * c, 1, 1, 1)
        lift = (ink + b).sigmoid() - b.sigmoid()
        weights = torch.softmax(where, -1).reshape(n, 1, *self.offsets).expand(n, c, *self.offsets)
        with torch.autocast(out.device.type, enabled=False):
            canvas = F.conv_transpose2d(
                weights.reshape(1, n * c, *self.offsets), lift, stride=self.stride, groups=n * c
            )
        x = canvas.reshape(n, c, h, w) + bg.sigmoid()[:, :, None, None]
        return x.reshape(*out.shape[:-1], c * h * w)


class SharpPlacedDecoder(networks.PlacedDecoder):
    """--image-decoder posed whose offsets' logits are `gain` times the network's (its last layer starting at
    0, a uniform placement): the softmax can sharpen `gain` times as fast under Adam, whose steps do not
    scale with the gradient, where the default narrows slowly (about 15 offsets at nine passes, 11 at 18)."""

    def __init__(self, z_dim, shape, hidden=512, channels=1, stride=4, gain: float = 4.0):
        super().__init__(z_dim, shape, hidden, channels, stride, posed=True)
        self.gain = gain
        nn.init.zeros_(self.where[-1].weight)
        nn.init.zeros_(self.where[-1].bias)

    def placement(self, z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.gain * self.where(z), -1)


class AnnealedPlacedDecoder(networks.PlacedDecoder):
    """--image-decoder posed whose offsets' softmax is taken at a temperature that falls over training: 1 for
    the first fifth of `steps` training calls (the place is found soft), then geometrically to `last` by four
    fifths, then `last` (the glyph learns to stand sharp). The default's spread is the same at q(z|x,y)'s
    mean as at a draw (about 15 offsets): a blur it learns, not a hedge against z's noise."""

    def __init__(
        self, z_dim, shape, hidden=512, channels=1, stride=4, steps: int = 12077, last: float = 0.25
    ):
        super().__init__(z_dim, shape, hidden, channels, stride, posed=True)
        self.steps, self.last = steps, last
        # training calls so far: saved, so a trained run reads at `last`
        self.register_buffer("calls", torch.zeros(()))

    def temperature(self) -> float:
        p = float(self.calls) / self.steps
        return 1.0 if p < 0.2 else self.last if p > 0.8 else self.last ** ((p - 0.2) / 0.6)

    def placement(self, z: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            self.calls += 1
        return torch.softmax(self.where(z) / self.temperature(), -1)


class SeparablePlacedDecoder(networks.PlacedDecoder):
    """--image-decoder posed whose offsets' weights are a row's softmax times a column's (rank one): the
    default's 81 free weights can paint the digit with a blob of a glyph on the 4-pixel grid of offsets, too
    coarse for a 4's open top; a rank-one placement can only smear, so the glyph has to hold the shape."""

    def __init__(self, z_dim, shape, hidden=512, channels=1, stride=4):
        super().__init__(z_dim, shape, hidden, channels, stride, posed=True)
        self.where = networks.mlp([z_dim, max(hidden // 4, 1), sum(self.offsets)])

    def placement(self, z: torch.Tensor) -> torch.Tensor:
        rows, cols = self.where(z).split(self.offsets, -1)
        return (rows.softmax(-1).unsqueeze(-1) * cols.softmax(-1).unsqueeze(-2)).flatten(-2)


def posed_glyph(widths: tuple[int, ...]):
    """--image-decoder posed whose glyph's transposed convolutions have other widths (the default: 64, 32)."""

    def make(z_dim, shape, hidden=512, channels=1):
        dec = networks.PlacedDecoder(z_dim, shape, hidden, channels, posed=True)
        dec.glyph = networks.ConvDecoder(z_dim, dec.glyph_shape, hidden, channels, widths)
        return dec

    return make


# name: (--image-network, a replacement for conv3's decoder or None; "hint": HintDecoder); the conv3-shared
# variants read the image through one trunk for q(z|x,y) and q(z|x) (--shared-trunk)
VARIANTS = {
    "conv3": ("conv3", None),
    "conv4": ("conv4", None),
    "conv3-bn": ("conv3", conv3_decoder(norm=True)),
    "conv3-wide": ("conv3", conv3_decoder((128, 64, 32))),
    "conv3-fine": ("conv3", conv3_decoder((64, 64, 64))),
    "conv3-res": ("conv3", conv3_decoder(residual=True)),
    "conv3-bn-res": ("conv3", conv3_decoder(norm=True, residual=True)),
    "conv4-decoder": ("conv3", conv3_decoder(networks.CONV_WIDTHS["conv4"][1])),  # conv3's encoders
    "conv3-broadcast": ("conv3", BroadcastDecoder),
    "conv3-hint": ("conv3", "hint"),
    "conv3-shared": ("conv3", None),
    # --image-decoder placed (offsets every 4 pixels), and with offsets every 8; with the shared trunk
    "conv3-shared-placed": ("conv3", networks.PlacedDecoder),
    "conv3-shared-placed8": ("conv3", functools.partial(networks.PlacedDecoder, stride=8)),
    "conv3-shared-turned": ("conv3", TurnedPlacedDecoder),  # placed, the glyph turned and scaled first
    "conv3-shared-posed": ("conv3", functools.partial(networks.PlacedDecoder, posed=True)),  # and shifted
    "conv3-shared-posed-wide": ("conv3", posed_glyph((128, 64))),  # twice the glyph's channels
    "conv3-shared-posed-hard": ("conv3", HardPlacedDecoder),  # laid at one offset (straight through)
    "conv3-shared-posed-mixture": ("conv3", MixturePlacedDecoder),  # p(x|z) a mixture over the offsets
    "conv3-shared-posed-sharp4": ("conv3", SharpPlacedDecoder),  # the offsets' logits 4x, starting uniform
    "conv3-shared-posed-anneal": ("conv3", AnnealedPlacedDecoder),  # the offsets' softmax cooled to 1/4
    "conv3-shared-posed-separable": ("conv3", SeparablePlacedDecoder),  # the offsets' weights rank one
    # the preset's default: posed, read through conv3-light's 16-32-64 encoder
    "conv3-shared-posed-light": ("conv3-light", functools.partial(networks.PlacedDecoder, posed=True)),
}
INSTALLABLE = (
    "conv3-shared-posed-hard",
    "conv3-shared-posed-sharp4",
    "conv3-shared-posed-anneal",
    "conv3-shared-posed-separable",
)  # --decoder: posed, laid otherwise


def install(variant: str) -> None:
    """Every model built from now on in this process (by `jmvae train`, `load_run`, ...) draws its images with
    `variant`'s decoder: how a variant is trained and evaluated at full length, and read back after."""
    if variant not in INSTALLABLE:
        bad_input(f"--decoder {variant} (allowed: {', '.join(INSTALLABLE)})")
    decoder, plain = VARIANTS[variant][1], base.modality_decoder

    def modality_decoder(m, z_dim: int, hidden: int = 512) -> nn.Module:
        if isinstance(m, Image) and m.decoder in networks.GLYPH_DECODERS:
            return decoder(z_dim, m.shape, hidden, m.channels, m.stride)  # laid where the run says
        return plain(m, z_dim, hidden)

    base.modality_decoder = modality_decoder


@contextlib.contextmanager
def sharpened(decoder: nn.Module, temperature: float | None):
    """A placed decoder whose offsets' softmax is taken at `temperature` (0: the likeliest offset alone)."""
    if temperature is None or not isinstance(decoder, networks.PlacedDecoder):
        yield
        return

    own = decoder.placement  # whatever this decoder's softmax is (a variant may scale its logits)

    def placement(z: torch.Tensor) -> torch.Tensor:
        logits = own(z).float().log()  # softmax(l / T) = softmax(log softmax(l) / T)
        if temperature == 0:
            return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
        return torch.softmax((logits - logits.amax(-1, keepdim=True)) / temperature, -1)

    decoder.placement = placement
    try:
        yield
    finally:
        del decoder.placement


@torch.no_grad()
def read_back(
    model,
    clf,
    test: dict[str, torch.Tensor],
    names: list[str],
    image: str,
    n: int,
    figures: Path | None = None,
) -> dict:
    """Each attribute's and all four's accuracy, and the digit's for each digit, of images decoded from
    q(z|x,y) and from q(z|y) at T = 1, and from q(z|x,y)'s mean (recon-mean); for a decoder that places a
    glyph, how far its placement spreads on the reconstructions from a draw and from the mean (the largest
    offset weight and the softmax's perplexity, medians; the 4s' perplexity); with `figures`, the first 32
    test images, their reconstructions and generations saved there as PNG grids to look at."""
    model.eval()
    torch.manual_seed(1)
    batch = to_batch(test, slice(0, n))
    modality = model.modalities[image]
    shown = {"real": batch[image][:32]}
    out = {}
    device = next(model.parameters()).device
    decoder = model.decoders[image]
    for tag, given in (("recon", batch), ("gen", {a: batch[a] for a in names}), ("recon-mean", batch)):
        q = model.posterior({k: v.to(device) for k, v in given.items()})
        z = q.mean if tag == "recon-mean" else q.rsample()  # the draws first: the same as before this row
        if tag != "gen" and isinstance(decoder, networks.PlacedDecoder):
            w = torch.cat([decoder.placement(c).float() for c in z.split(512)])
            perplexity = (-(w * w.clamp_min(1e-30).log()).sum(-1)).exp()
            out["placement" if tag == "recon" else "placement at the mean"] = {
                "top weight": float(w.amax(-1).median()),
                "perplexity": float(perplexity.median()),
                "perplexity of the 4s": float(perplexity[batch["digit"] == 4].median()),
            }
        x = torch.cat([modality.point(model.logits(c, [image])[image]).cpu() for c in z.split(512)])
        read = clf.predict({image: x})
        hits = torch.stack([read[a] == batch[a] for a in names]).float()
        out[tag] = {a: round(float(h.mean()), 4) for a, h in zip(names, hits)} | {"all": float(hits.mean())}
        digit = hits[names.index("digit")]  # where the digit fails: its accuracy for each true digit
        out[tag]["digit by class"] = [round(float(digit[batch["digit"] == d].mean()), 3) for d in range(10)]
        if tag != "recon-mean":
            shown[tag] = x[:32]
    if figures is not None:
        for tag, x in shown.items():
            save_image_grid(modality.pixels(x.float()).numpy(), figures / f"{tag}.png", tag)
    model.train()
    return out


def run_variant(
    variant: str,
    seconds: float,
    seed: int,
    n: int,
    overrides: dict,
    kl_weight: float = 1.0,
    max_steps: int = 0,
    figures: Path | None = None,
    read_at: tuple[int, ...] = (),
    emit=lambda row: None,
) -> dict:
    network, decoder = VARIANTS[variant]
    # a trunk each for conv3 and its variants, as measured before the preset's JMVAE shared one (conv3-shared)
    shared = (
        {"shared_trunk": variant.startswith("conv3-shared")}
        if overrides.get("model", "jmvae") in ("jmvae", "telbo")
        else {}
    )
    cfg = TrainConfig(preset="mnist-a", seed=seed, image_network=network, **(shared | overrides)).resolved()
    data, model = build(cfg, quiet=True)
    model.kl_weight = kl_weight  # every KL term's weight (beta) through training
    image = data.images[0]
    if decoder == "hint":
        heads = [model.decoders[a.name] for a in data.attributes]
        classes = sum(a.size for a in data.attributes)
        model.decoders[image.name] = HintDecoder(
            cfg.z_dim, image.shape, cfg.hidden, image.channels, heads, classes
        )
    elif callable(decoder):  # drawn after the rest: the other networks start as conv3's do
        model.decoders[image.name] = decoder(cfg.z_dim, image.shape, cfg.hidden, image.channels)
        laid_at = getattr(model.decoders[image.name], "stride", cfg.placement_stride)
        if "placement_stride" in overrides and laid_at != cfg.placement_stride:
            bad_input(
                f"--set placement_stride={cfg.placement_stride} with {variant} (allowed: its {laid_at})"
            )
        if decoder is MixturePlacedDecoder:  # its packed outputs are read by their own modality
            dec = model.decoders[image.name]
            image = MixtureImage(
                **(asdict(image) | {"stride": dec.stride}), glyph_shape=dec.glyph_shape, offsets=dec.offsets
            )
            model.modalities[image.name] = image
            model.images[0] = image
    clf, real = classifier_for(data)
    device = cfg.resolved_device()  # CUDA where present: model and training split live there
    model.to(device)
    split = training_split(data, cfg, device)
    opt = make_optimizer(model, cfg.lr)
    n_train = len(next(iter(split.values())))
    g = torch.Generator().manual_seed(seed)
    steps, spent, last_loss = 0, 0.0, float("nan")
    chunk = 25
    order = torch.randperm(n_train, generator=g).to(device)
    pos = 0
    names = [a.name for a in data.attributes]
    params = sum(p.numel() for p in model.decoders[image.name].parameters())

    def row(quality: dict) -> dict:
        return {
            "variant": variant,
            "overrides": overrides,
            "kl_weight": kl_weight,
            "seed": seed,
            "steps": steps,
            "train_seconds": round(spent, 1),
            "s_per_step": round(spent / steps, 4),
            "decoder_params": params,
            "last_loss": round(last_loss, 2),
            "classifier_real": real,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
            **quality,
        }

    while (steps < max_steps) if max_steps else (spent < seconds):
        if pos + chunk * cfg.batch_size > n_train:
            order, pos = torch.randperm(n_train, generator=g).to(device), 0
        t0 = time.perf_counter()
        sums, _ = train_steps(
            model,
            opt,
            split,
            order[pos:],
            cfg.batch_size,
            chunk,
            lr_at=(lambda i, at=steps: cfg.lr_at(at + i, max_steps)) if max_steps else None,
            precision=cfg.precision_dtype(),
        )
        spent += time.perf_counter() - t0
        pos += chunk * cfg.batch_size
        steps += chunk
        last_loss = float(sums[0]) / chunk
        if steps in read_at and steps != max_steps:  # a learning curve: read back on the way
            emit(row(read_back(model, clf, data.test, names, image.name, n)))
    return row(read_back(model, clf, data.test, names, image.name, n, figures))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    p.add_argument("--seconds", type=float, default=480)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=2000, help="test examples read back")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="TrainConfig fields")
    p.add_argument("--steps", type=int, default=0, help="train this many steps instead (machine shared)")
    p.add_argument(
        "--read-at", type=int, nargs="*", default=[], help="with --steps, also read back after these steps"
    )
    p.add_argument("--kl-weight", type=float, default=1.0, help="every KL term's weight in training (beta)")
    p.add_argument("--run", type=Path, nargs="+", help="read back these trained runs instead of training")
    p.add_argument("--out", type=Path, help="append one JSON line per variant")
    p.add_argument(
        "--figures", type=Path, help="save each variant's real, recon and gen images under DIR/VARIANT"
    )
    p.add_argument(
        "--placement-temperature",
        type=float,
        help="with --run: read a placed decoder's images with its offsets' softmax at this temperature",
    )
    p.add_argument("--decoder", choices=INSTALLABLE, help="with --run or --jmvae: the runs' image decoder")
    p.add_argument(
        "--jmvae",
        nargs=argparse.REMAINDER,
        help="run `jmvae ARGS...` (train, evaluate, ...) with --decoder's decoder in place of the posed one",
    )
    args = p.parse_args()
    if args.decoder:
        install(args.decoder)
    if args.jmvae is not None:
        if not args.decoder:
            bad_input("--jmvae without --decoder (allowed: --decoder VARIANT --jmvae ARGS...)")
        from jmvae.cli import main as jmvae

        raise SystemExit(jmvae(args.jmvae))
    t = args.placement_temperature
    if t is not None and (not math.isfinite(t) or t < 0 or not args.run):
        bad_input(f"--placement-temperature {t} (allowed: a number >= 0, with --run)")
    sharpening = {} if t is None else {"placement_temperature": t}
    torch.set_num_threads(args.threads)
    flush_subnormals()
    print(f"# {cpu_model()}, {args.threads} thread(s), torch {torch.__version__}", flush=True)
    overrides = dict(config_value(TrainConfig, o, f"--set {o}") for o in args.set)

    def emit(row: dict) -> None:
        row |= {"threads": args.threads, "cpu": cpu_model()}
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")

    for run_dir in args.run or []:
        _, data, model = load_run(run_dir)
        decoder = model.decoders[data.images[0].name]
        if sharpening and not isinstance(decoder, networks.PlacedDecoder):
            bad_input(f"--placement-temperature with {run_dir} (allowed: runs of a placed or posed decoder)")
        clf, real = classifier_for(data)
        names = [a.name for a in data.attributes]
        figures = args.figures / run_dir.name if args.figures else None
        with sharpened(decoder, t):
            quality = read_back(model, clf, data.test, names, data.images[0].name, args.n, figures)
        emit({"run": str(run_dir), "classifier_real": real} | sharpening | quality)
    for v in [] if args.run else args.variants:
        figures = args.figures / v if args.figures else None
        run = (v, args.seconds, args.seed, args.n, overrides, args.kl_weight, args.steps, figures)
        emit(run_variant(*run, tuple(args.read_at), emit))


if __name__ == "__main__":
    run_main(main)
