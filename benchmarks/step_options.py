"""What a model option costs a training step: the default step against the same step with other options.

Each variant is a jmvae model built as `jmvae train` builds it (same data, batch size, precision) with some
options changed; they train on the same batches through the trainer's own hot loop (train.train_steps), in
blocks of --steps steps, alternating the variants' order every round, and the medians over --rounds blocks
are printed with every block, and samples/s (a variant may set another `batch_size`). The machine drifts by
more than most differences between neighbouring minutes, hence the interleaving. Two options are not
TrainConfig fields: `memory_format` (channels_last, the networks' own since 2026-12-04, or contiguous) puts
the variant's conv weights in that layout, and `placement` (fft, the glyph decoders' own since 2026-12-06, or
grouped: the grouped transposed convolution in float32, as before) is how they lay the glyph.

    JMVAE_OFFLINE=1 python benchmarks/step_options.py                                   # the gamma terms
    JMVAE_OFFLINE=1 python benchmarks/step_options.py no-prior:prior_recon=0 draws64:recon_draws=64
    JMVAE_OFFLINE=1 python benchmarks/step_options.py --preset mnist-a --precision bfloat16 \
        nchw:memory_format=contiguous
    JMVAE_OFFLINE=1 python benchmarks/step_options.py --preset mnist-a --precision float32 \
        coarse:placement_stride=4 former:placement_stride=4,placement=grouped
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

import torch  # noqa: E402
from common import bad_input, config_value, run_main  # noqa: E402
from placement_speed import grouped  # noqa: E402
from train_speed import machine  # noqa: E402

from jmvae.config import PRECISIONS, TrainConfig  # noqa: E402
from jmvae.networks import PlacedDecoder  # noqa: E402
from jmvae.train import build, make_optimizer, train_steps, training_split  # noqa: E402

GAMMA_TERMS = [
    "no-prior:prior_recon=0",
    "no-image:image_recon=0",
    "neither:prior_recon=0,image_recon=0",
    "draws128:recon_draws=128",
    "draws64:recon_draws=64",
    "draws32:recon_draws=32",
]


LAYOUTS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
SPECIAL = {"memory_format": tuple(LAYOUTS), "placement": ("fft", "grouped")}  # not TrainConfig fields


class GroupedPlacedDecoder(PlacedDecoder):
    """A glyph decoder that lays its glyph as before 2026-12-06: one grouped transposed convolution."""

    def pixels(self, z: torch.Tensor) -> torch.Tensor:
        lead, z = z.shape[:-1], z.reshape(-1, z.shape[-1])
        where = self.placement(z).reshape(len(z), 1, *self.offsets)
        canvas = grouped(self.ink(z), where, self.stride, self.shape) + self.background[:, None, None]
        return canvas.reshape(*lead, -1)


def parse_variant(text: str) -> tuple[str, dict]:
    """ "name:option=value,option=value" -> (name, {option: value}), values typed like the TrainConfig
    field; memory_format and placement besides."""
    name, _, spec = text.partition(":")
    options = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key in SPECIAL:
            if value not in SPECIAL[key]:
                bad_input(f"variant {text}: {key}={value} (allowed: {', '.join(SPECIAL[key])})")
            options[key] = value
        else:
            options.update([config_value(TrainConfig, item, f"variant {text}")])
    return name, options


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "variants", nargs="*", default=GAMMA_TERMS, help="NAME:option=value,... (default: the gamma terms)"
    )
    ap.add_argument("--steps", type=int, default=10, help="steps per block (default 10)")
    ap.add_argument("--rounds", type=int, default=8, help="blocks per variant (default 8)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mnist", default="auto", choices=["auto", "full", "bundled"])
    ap.add_argument("--preset", default="position-digit")
    ap.add_argument("--precision", default=TrainConfig.precision, choices=PRECISIONS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(mnist=args.mnist, preset=args.preset, precision=args.precision)
    data, _ = build(cfg, quiet=True)
    variants = dict([("default", {}), *map(parse_variant, args.variants)])
    runs = {}
    for name, options in variants.items():
        layout, placement = options.pop("memory_format", None), options.pop("placement", None)
        c = replace(cfg, **options)
        torch.manual_seed(0)
        _, model = build(c, quiet=True)
        if layout:
            model.to(memory_format=LAYOUTS[layout])
        for decoder in model.modules():
            if placement == "grouped" and isinstance(decoder, PlacedDecoder):
                decoder.__class__ = GroupedPlacedDecoder
        split = training_split(data, c, torch.device("cpu"))
        if args.steps * c.batch_size >= data.n_train:
            bad_input(
                f"variant {name}: {args.steps} steps of batch {c.batch_size} (allowed: fewer than the "
                f"{data.n_train} training examples a block)"
            )
        runs[name] = (model, make_optimizer(model, c.lr), split, c.resolved().precision_dtype(), c.batch_size)
        options |= ({"memory_format": layout} if layout else {}) | (
            {"placement": placement} if placement else {}
        )
    n = data.n_train
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    print(f"machine: {machine()}")
    print(
        f"{args.preset}, {n} training images, batch {cfg.batch_size}, products in "
        f"{cfg.resolved_precision()}; {args.rounds} blocks of {args.steps} steps per variant, interleaved"
    )

    def block(name: str, steps: int, at: int) -> float:
        model, optimizer, split, precision, batch = runs[name]  # a variant may change the batch size
        rows = order[(at * batch) % (n - steps * batch) :][: steps * batch]
        t = time.perf_counter()
        train_steps(model, optimizer, split, rows, batch, steps, precision=precision)
        return (time.perf_counter() - t) / steps * 1000

    for name in runs:  # warm-up
        block(name, 2, 0)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.rounds):
        for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
            times[name].append(block(name, args.steps, r * args.steps))

    def rate(name: str) -> float:  # samples/s: steps of another batch size take other times
        return runs[name][4] * 1000 / statistics.median(times[name])

    print(
        f"{'variant':10s} {'ms/step':>8s} {'samples/s':>9s} {'vs default':>10s}   options; ms/step by block"
    )
    for name, t in times.items():
        spec = ",".join(f"{k}={v}" for k, v in variants[name].items()) or "-"
        print(
            f"{name:10s} {statistics.median(t):8.1f} {rate(name):9.0f} {rate(name) / rate('default'):9.2f}x"
            f"   {spec}; {' '.join(f'{x:.0f}' for x in t)}"
        )


if __name__ == "__main__":
    run_main(main)
