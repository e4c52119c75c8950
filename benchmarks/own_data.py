"""The own-data path's speed: loading a folder of colour images, and a training step on colour images.

    python benchmarks/own_data.py                      # 100,000 colour 64x64 images; steps at 32, 64, 128
    python benchmarks/own_data.py --images 20000 --steps 10
    python benchmarks/own_data.py --skip-load --sizes 32 64 128   # the steps only

Load: writes --images random-shape colour PNGs and a metadata.csv to a temporary folder (not timed), then
times `jmvae.data.attributes.load_dataset(data=...)` cold (decoding every file into the cache) and warm (the
cache). Steps: samples/s of the default JMVAE step (and in float32 where `auto` picks bfloat16; with its
conv weights in the former contiguous layout; with --shared-trunk, also with --image-decoder placed and
posed, and posed every 2 pixels through conv3-light as MNIST-A's JMVAE), of JMVAE with the conv4 image
networks and of MVAE on colour data of each size, beside a plain float32 single-image VAE step on conv3's
networks (the reference: what one image's ELBO costs), alternated in one process. Prints the CPU model and
threads first.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import cpu_model
from PIL import Image

from jmvae.config import TrainConfig
from jmvae.data import own
from jmvae.data.attributes import load_dataset
from jmvae.networks import GLYPH_DECODERS, ConvDecoder, ConvTrunk, GaussianEncoder
from jmvae.posteriors import kl, standard_normal
from jmvae.train import build, make_optimizer, train_steps, training_split


def write_folder(root: Path, n: int, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        img = (rng.random((size, size, 3)) * 60).astype(np.uint8)
        c = rng.integers(3)
        r = int(rng.integers(size // 8, size // 3))
        x, y = rng.integers(r, size - r, 2)
        img[y - r : y + r, x - r : x + r, c] = 220
        name = f"{i:06d}.png"
        Image.fromarray(img).save(root / name, compress_level=1)
        rows.append(
            {"file_name": name, "channel": "rgb"[c], "half_width": str(r), "left": str(x < size // 2).lower()}
        )
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def time_load(n: int, size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "data", Path(tmp) / "cache"
        root.mkdir()
        t = time.perf_counter()
        write_folder(root, n, size)
        print(
            f"wrote {n:,} colour {size}x{size} PNGs in {time.perf_counter() - t:.1f} s (not part of the load)"
        )
        os.environ["JMVAE_CACHE"] = str(cache)
        for what in ("cold (decode into the cache)", "warm (from the cache)"):
            t = time.perf_counter()
            data = load_dataset(None, data=str(root), progress=False)
            dt = time.perf_counter() - t
            print(
                f"load {what}: {dt:.1f} s, {n / dt:,.0f} images/s; {data.n_train:,} train / {data.n_test:,} "
                f"test, images {data.train[data.images[0].name].dtype} "
                f"({data.train[data.images[0].name].numel() / 1e9:.2f} G values)"
            )


class PlainVAE(torch.nn.Module):
    """The reference: one image's ELBO through the same conv trunk and decoder jmvae uses."""

    def __init__(self, size: int, z_dim: int = 2, hidden: int = 512):
        super().__init__()
        self.enc = GaussianEncoder(0, z_dim, hidden, ConvTrunk((size, size), hidden, 3))
        self.dec = ConvDecoder(z_dim, (size, size), hidden, 3)

    def loss(self, batch):
        x = batch["x"]
        q = self.enc(x)
        z = q.rsample()
        logits = self.dec(z)
        nll = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        return (nll + kl(q, standard_normal(q.loc))).mean(), {}


def time_steps(size: int, steps: int, rounds: int, n: int = 2048) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "x": (rng.random((n, size, size, 3)) * 255).astype(np.uint8),
        "colour": rng.integers(3, size=n),
        "flag": rng.integers(2, size=n).astype(bool),
        "amount": rng.normal(size=n),
    }
    data = own.from_arrays(arrays, image_size=None)
    setups = {}
    own_defaults = TrainConfig(data="benchmark").resolved()
    auto, default = own_defaults.precision, own_defaults.image_network
    contenders = [
        ("jmvae", "auto", default, ""),
        ("jmvae", "auto", "conv4", ""),
        ("mvae", "auto", default, ""),
    ]
    contenders += [("jmvae", "float32", default, "")] if auto != "float32" else []
    contenders += [("jmvae", "auto", default, "contiguous")]  # the conv weights' layout before channels-last
    contenders += [("jmvae", "auto", default, "shared-trunk")]  # --shared-trunk
    contenders += [
        ("jmvae", "auto", default, f"shared-trunk, {d}") for d in GLYPH_DECODERS
    ]  # --image-decoder
    # MNIST-A's JMVAE recipe
    contenders += [("jmvae", "auto", "conv3-light", "shared-trunk, posed, every 2 pixels")]
    for model, precision, network, extra in contenders:
        parts = extra.split(", ")
        cfg = TrainConfig(
            model=model,
            data="benchmark",
            precision=precision,
            image_network=network,
            shared_trunk=True if "shared-trunk" in extra else None,
            image_decoder=next((d for d in GLYPH_DECODERS if d in parts), "conv"),
            placement_stride=2 if "every 2 pixels" in parts else None,
        ).resolved()  # own data's defaults
        _, m = build(cfg, quiet=True, dataset=data)
        if extra == "contiguous":
            m.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
        setups[f"{model}, {network}, {cfg.precision}" + (f", {extra}" if extra else "")] = (
            m,
            make_optimizer(m, 1e-3),
            training_split(data, cfg, torch.device("cpu")),
            cfg.batch_size,
            cfg.precision_dtype(),
        )
    ref = PlainVAE(size)
    setups["plain VAE (reference)"] = (ref, make_optimizer(ref, 1e-3), {"x": data.train["x"]}, 256, None)
    rates: dict[str, list[float]] = {k: [] for k in setups}
    for r in range(rounds + 1):
        for name, (m, opt, split, batch, dtype) in setups.items():
            order = torch.randperm(len(split["x"]))
            t = time.perf_counter()
            train_steps(m, opt, split, order, batch, steps, precision=dtype)
            if r:  # the first round warms up
                rates[name].append(steps * batch / (time.perf_counter() - t))
    ref_rate = float(np.median(rates["plain VAE (reference)"]))
    for name, v in rates.items():
        med = float(np.median(v))
        print(
            f"  {size}x{size} colour, {name:50s} {med:8.0f} samples/s  ({med / ref_rate:.2f}x the reference)"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--size", type=int, default=64, help="side of the loaded images (default 64)")
    p.add_argument("--steps", type=int, default=5, help="steps per round of each contender (default 5)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip-load", action="store_true")
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128], help="sides of the step's images")
    args = p.parse_args()
    print(
        f"CPU: {cpu_model()}; {torch.get_num_threads()} threads; torch {torch.__version__}; "
        f"Python {platform.python_version()}"
    )
    if not args.skip_load:
        time_load(args.images, args.size)
    print("training step, batch 256, default options (precision as `auto` picks it here):")
    for size in args.sizes:
        time_steps(size, args.steps, args.rounds)


if __name__ == "__main__":
    main()
