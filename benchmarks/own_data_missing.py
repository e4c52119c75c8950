"""JMVAE's step on data with empty cells: the examples missing an attribute scored on their image's own ELBO
with the decoder run on those rows only (today) or on every row (before), alternated in one process.

    python examples/make_shapes.py shapes --n 10000 && python benchmarks/own_data_missing.py shapes
"""

from __future__ import annotations

import argparse
import time

import torch
from common import bad_input, cpu_model  # benchmarks/ is on the path when run as a script

from jmvae.config import TrainConfig
from jmvae.data.attributes import load_dataset
from jmvae.models.jmvae import JMVAE
from jmvae.train import build, make_optimizer, train_steps, training_split


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="a folder or .npz with some empty cells")
    p.add_argument("--steps", type=int, default=6, help="steps per round of each contender (default 6)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    print(f"CPU: {cpu_model()}; {torch.get_num_threads()} threads; torch {torch.__version__}")
    data = load_dataset(None, data=args.data, progress=False)
    cfg = TrainConfig(data=args.data).resolved()
    _, model = build(cfg, quiet=True, dataset=data)
    optimizer = make_optimizer(model, cfg.lr or 1e-3)
    split = training_split(data, cfg, torch.device("cpu"))
    if "observed" not in split:
        bad_input(f"{args.data} has no empty cell (allowed: a dataset with empty cells, to compare)")
    print(f"examples missing an attribute: {float((~split['observed'].all(-1)).float().mean()):.1%}")
    rows_only = JMVAE.image_elbo
    contenders = {
        "those rows only (today)": rows_only,
        "every row (before)": lambda self, batch, q_x, rows: rows_only(self, batch, q_x, rows | True),
    }
    rates: dict[str, list[float]] = {k: [] for k in contenders}
    assert cfg.batch_size is not None
    for r in range(args.rounds + 1):
        for name, f in contenders.items():
            JMVAE.image_elbo = f  # type: ignore[method-assign]
            t = time.perf_counter()
            order = torch.randperm(len(split[data.images[0].name]))
            train_steps(
                model, optimizer, split, order, cfg.batch_size, args.steps, precision=cfg.precision_dtype()
            )
            if r:  # the first round warms up
                rates[name].append(args.steps * cfg.batch_size / (time.perf_counter() - t))
    JMVAE.image_elbo = rows_only  # type: ignore[method-assign]
    for name, v in rates.items():
        print(f"  {name:26s} {sorted(v)[len(v) // 2]:7.0f} samples/s")


if __name__ == "__main__":
    main()
