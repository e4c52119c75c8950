"""The glyph decoders' placement (networks.laid, by FFT) against a grouped transposed convolution, the former
way, forward and backward, for offsets every 4, 2 and 1 pixels: samples/s of each, interleaved in one process.

    python benchmarks/placement_speed.py                  # 64x64 canvases (MNIST-A), batch 128, float32
    python benchmarks/placement_speed.py --precision bfloat16 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import bad_input, run_main  # noqa: E402
from train_speed import machine  # noqa: E402

from jmvae.networks import PLACEMENT_STRIDES, laid  # noqa: E402


def grouped(glyph: torch.Tensor, where: torch.Tensor, stride: int, shape: tuple[int, int]) -> torch.Tensor:
    """The reference: each example's weights convolved with its own glyph, one group each, in float32 even
    under autocast, as the decoder laid it before the FFT (its bfloat16 kernel was slower still)."""
    n, c, h, w = glyph.shape
    weights = where.expand(n, c, *where.shape[-2:]).reshape(1, n * c, *where.shape[-2:])
    with torch.autocast(glyph.device.type, enabled=False):
        canvas = F.conv_transpose2d(
            weights.float(), glyph.float().reshape(n * c, 1, h, w), stride=stride, groups=n * c
        )
    return canvas.reshape(n, c, *shape)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=64, help="canvas side (default 64; the glyph is half)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--steps", type=int, default=10, help="forward-backward passes per block (default 10)")
    ap.add_argument("--rounds", type=int, default=6, help="blocks per way and stride (default 6)")
    args = ap.parse_args()
    if args.size < 8 or args.size % 8:
        bad_input(f"--size {args.size} (allowed: a multiple of 8 from 8)")
    if min(args.batch, args.channels, args.threads, args.steps, args.rounds) < 1:
        bad_input("--batch, --channels, --threads, --steps and --rounds (allowed: integers >= 1)")
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.precision == "bfloat16" else None
    shape, glyph_side = (args.size, args.size), args.size // 2
    print(f"machine: {machine()}")
    print(
        f"{args.size}x{args.size} canvases, {args.channels} channel(s), batch {args.batch}, products in "
        f"{args.precision}; {args.rounds} blocks of {args.steps} forward-backward passes, interleaved"
    )
    print("stride  offsets   FFT ms grouped ms FFT samples/s speed-up")
    for stride in PLACEMENT_STRIDES[::-1]:
        side = glyph_side // stride + 1
        torch.manual_seed(0)
        glyph0 = torch.randn(args.batch, args.channels, glyph_side, glyph_side) * 4
        where0 = torch.softmax(torch.randn(args.batch, 1, side * side), -1).reshape(args.batch, 1, side, side)
        ways = {"fft": laid, "grouped": grouped}

        def block(way, glyph0=glyph0, where0=where0, stride=stride) -> float:
            glyph, where = glyph0.clone().requires_grad_(), where0.clone().requires_grad_()
            t = time.perf_counter()
            for _ in range(args.steps):
                with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                    canvas = way(glyph, where, stride, shape)
                canvas.float().square().mean().backward()
            return (time.perf_counter() - t) / args.steps * 1000

        for way in ways.values():  # warm-up
            block(way)
        times: dict[str, list[float]] = {name: [] for name in ways}
        for r in range(args.rounds):
            for name in list(ways) if r % 2 == 0 else list(ways)[::-1]:
                times[name].append(block(ways[name]))
        fft, conv = (statistics.median(times[name]) for name in ways)
        print(
            f"{stride:6d} {side * side:8d} {fft:8.2f} {conv:10.2f} {args.batch * 1000 / fft:13.0f} "
            f"{conv / fft:7.2f}x"
        )


if __name__ == "__main__":
    run_main(main)
