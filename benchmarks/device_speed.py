"""Training speed on full-MNIST-sized data, on CUDA when present: eager, torch.compile, and CUDA graphs.

The founding experiment's JMVAE on 25,400 synthetic 28x56 images (the bundled 1s and 2s, shifted at
random, at the size of full MNIST's 1s and 2s in both positions), the training split resident on the
device as uint8, stepped by jmvae's own hot loop (`jmvae.train.train_steps`). Modes:
  eager            the trainer as it is
  compile          the loss compiled with torch.compile (default mode)
  reduce-overhead  torch.compile(mode="reduce-overhead"): CUDA graphs, for launch-bound small MLPs (CUDA only)
On CUDA the timed loop runs under torch.cuda.set_sync_debug_mode("error"), so a host sync or a
host-to-device copy inside a step fails the run instead of passing unnoticed.

    python benchmarks/device_speed.py                      # cuda if available, else cpu
    python benchmarks/device_speed.py --device cpu --steps 20 --modes eager    # a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import torch  # noqa: E402

from jmvae.data.attributes import position_digit  # noqa: E402
from jmvae.data.mnist import MnistData, load_bundled  # noqa: E402
from jmvae.models import build_model  # noqa: E402
from jmvae.train import flush_subnormals, make_optimizer, train_steps  # noqa: E402


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n bundled 1s and 2s, each shifted by up to 2 pixels: real strokes at full-MNIST scale."""
    bundled = load_bundled()
    keep = np.isin(bundled.labels, (1, 2))
    images, labels = bundled.images[keep], bundled.labels[keep]
    g = np.random.default_rng(seed)
    pick = g.integers(0, len(images), n)
    return np.stack([np.roll(images[i], tuple(g.integers(-2, 3, 2)), axis=(0, 1)) for i in pick]), labels[
        pick
    ]


def measure(mode: str, batch: int, data, device: torch.device, args) -> float:
    torch.manual_seed(0)
    model = build_model("jmvae", data.modalities).to(device)
    optimizer = make_optimizer(model, 1e-3)
    if mode != "eager":
        model.loss = torch.compile(model.loss, mode=None if mode == "compile" else mode)
    split = {k: v.to(device) for k, v in data.train.items()}
    n = len(split["x"])

    def run(steps: int, strict: bool = True) -> float:
        order = torch.randint(0, n, (steps * batch,), device=device)
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        if cuda and strict:
            torch.cuda.set_sync_debug_mode("error")  # a sync or host copy inside the steps raises
        try:
            sums, _ = train_steps(model, optimizer, split, order, batch, steps)
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
        sums.sum().item()  # one sync, as the trainer reads its means once an epoch
        return batch * steps / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    run(args.warmup, strict=False)  # compilation and graph capture happen here
    warmup_s = time.perf_counter() - t0
    rates = [run(args.steps) for _ in range(args.rounds)]
    print(
        f"   {mode:16} batch {batch:4}  {statistics.median(rates):9.0f} samples/s  "
        f"(rounds: {' '.join(f'{r:.0f}' for r in rates)}; warm-up incl. compilation {warmup_s:.1f} s)",
        flush=True,
    )
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, nargs="+", default=[128, 512])
    ap.add_argument(
        "--modes",
        nargs="+",
        default=["eager", "compile", "reduce-overhead"],
        choices=["eager", "compile", "reduce-overhead"],
    )
    ap.add_argument("--steps", type=int, default=200, help="timed steps per round (default 200)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=20)
    args = ap.parse_args()
    flush_subnormals()  # as jmvae.train.train does
    device = torch.device(args.device)
    images, labels = synthetic_digits(12_700 + 2_167, seed=0)
    data = position_digit(
        MnistData(images[:12_700], labels[:12_700], images[12_700:], labels[12_700:], "synthetic")
    )
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"device: {name}; torch {torch.__version__}; {len(data.train['x']):,} train images of 28x56 "
        "resident as uint8"
    )
    for batch in args.batch:
        for mode in args.modes:
            if mode == "reduce-overhead" and device.type != "cuda":
                print(f"   {mode:16} batch {batch:4}  skipped: CUDA graphs need a CUDA device")
                continue
            measure(mode, batch, data, device, args)


if __name__ == "__main__":
    main()
