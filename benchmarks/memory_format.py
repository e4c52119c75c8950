"""The MNIST-A training step with the model's weights in channels-last memory format against the default.

Both copies start from the same weights and step the same batches through the trainer's hot loop
(`jmvae.train.train_steps`), alternating every --steps steps for --rounds rounds (the first discarded); prints
the fastest round's seconds per step of each and their ratio, with the CPU model.

    JMVAE_OFFLINE=1 python benchmarks/memory_format.py --precision bfloat16
    JMVAE_OFFLINE=1 python benchmarks/memory_format.py --precision float32
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

import torch  # noqa: E402
from own_data import cpu_model  # noqa: E402

from jmvae.config import TrainConfig  # noqa: E402
from jmvae.train import build, flush_subnormals, make_optimizer, train_steps  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    flush_subnormals()
    cfg = TrainConfig(preset="mnist-a", seed=0, precision=args.precision).resolved()
    data, model = build(cfg, quiet=True)
    last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    pairs = {"default": model, "channels_last": last}
    optimizers = {k: make_optimizer(m, cfg.lr) for k, m in pairs.items()}
    order = torch.randperm(len(next(iter(data.train.values()))), generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {k: [] for k in pairs}
    for r in range(args.rounds):
        start = r * args.steps * cfg.batch_size
        for k, m in pairs.items():
            t = time.perf_counter()
            train_steps(
                m,
                optimizers[k],
                data.train,
                order[start:],
                cfg.batch_size,
                args.steps,
                precision=cfg.precision_dtype(),
            )
            if r:
                times[k].append((time.perf_counter() - t) / args.steps)
    best = {k: min(v) for k, v in times.items()}
    ratio = best["default"] / best["channels_last"]
    print(
        f"{cpu_model()}, {args.threads} threads, {cfg.resolved_precision()}: s/step "
        f"default {best['default']:.4f}, channels_last {best['channels_last']:.4f}, ratio {ratio:.2f}"
    )


if __name__ == "__main__":
    main()
