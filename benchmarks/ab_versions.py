"""Same numbers and same speed: this tree's jmvae against another source tree's (e.g. the commit before a
redesign, checked out with `git worktree add /tmp/before HEAD~1`).

1. Numbers: short runs of every model on position-digit and on a small colour 32x32 dataset (conv networks),
   with each tree in its own process; their history.csv must agree in every column but wall seconds.
2. Speed: the default training step of both trees in one process (the other tree imported as the package
   `jmvae_before`), same weights and batches, interleaved every --slot steps; samples/s and the ratio.

    JMVAE_OFFLINE=1 python benchmarks/ab_versions.py /tmp/before
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path[:0] = [str(HERE), str(SRC)]

import torch  # noqa: E402
from common import timed_steps  # noqa: E402
from train_speed import batch_indices, interleaved, machine  # noqa: E402

MODELS = ("jmvae", "telbo", "mvae", "mmvae", "mopoe", "mvtcae", "mmvaeplus")
RUNS = """
import sys, numpy as np
from jmvae.config import TrainConfig
from jmvae.train import train
out, colour = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
n = 300
np.savez(colour, images=(rng.random((n, 32, 32, 3)) * 255).astype(np.uint8),
         colour=np.array(["red", "green", "blue"])[np.arange(n) % 3], size=rng.random(n))
quiet = lambda *a, **k: None
for m in sys.argv[3].split(","):
    train(TrainConfig(model=m, steps=60), f"{out}/{m}", progress=False, log=quiet)
    conv = TrainConfig(model=m, steps=20, data=colour, batch_size=32)
    train(conv, f"{out}/conv-{m}", progress=False, log=quiet)
train(TrainConfig(steps=300), f"{out}/default", progress=False, log=quiet)
"""


def histories(src: Path, out: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-c", RUNS, str(out), str(out / "colour.npz"), ",".join(MODELS)], env=env, check=True
    )


def without_seconds(path: Path) -> list[list[str]]:
    rows = list(csv.reader(open(path)))
    keep = [i for i, name in enumerate(rows[0]) if name != "seconds"]
    return [[r[i] for i in keep] for r in rows]


def load_other(src: Path):
    """The other tree's jmvae package, imported as `jmvae_before` beside this tree's `jmvae`."""
    spec = importlib.util.spec_from_file_location(
        "jmvae_before", src / "jmvae" / "__init__.py", submodule_search_locations=[str(src / "jmvae")]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["jmvae_before"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("before", type=Path, help="the other checkout (its src/ holds jmvae)")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per round and tree")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slot", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    other = args.before.resolve() / "src"
    print(machine())

    with tempfile.TemporaryDirectory() as tmp:
        for name, src in (("before", other), ("after", SRC)):
            (Path(tmp) / name).mkdir()
            histories(src, Path(tmp) / name)
        runs = sorted(p.name for p in (Path(tmp) / "after").iterdir() if p.is_dir())
        differ = [
            r
            for r in runs
            if without_seconds(Path(tmp) / "after" / r / "history.csv")
            != without_seconds(Path(tmp) / "before" / r / "history.csv")
        ]
        print(
            f"history.csv, every column but seconds: {len(runs) - len(differ)} of {len(runs)} runs identical"
        )
        for r in differ:
            print(f"  differs: {r}")

    torch.set_num_threads(args.threads)
    load_other(other)
    from jmvae_before.config import TrainConfig as OldConfig
    from jmvae_before.networks import low_precision as old_precision
    from jmvae_before.train import build as old_build

    from jmvae.config import TrainConfig
    from jmvae.data.attributes import to_batch
    from jmvae.networks import low_precision
    from jmvae.train import build

    data, model = build(TrainConfig().resolved(), quiet=True)
    _, old = old_build(OldConfig().resolved(), quiet=True)
    old.load_state_dict(model.state_dict())
    split = data.train
    dtype = TrainConfig().resolved().precision_dtype()

    def loss_of(m, precision):
        def step(split, idx):
            with precision(dtype):
                return m.loss(to_batch(split, idx))[0]

        return step

    batches = batch_indices(data.n_train, 128, 5 + args.rounds * args.steps, 0)
    steps = {
        "after": timed_steps(model, loss_of(model, low_precision), split),
        "before": timed_steps(old, loss_of(old, old_precision), split),
    }
    rates = interleaved(steps, batches, 128, args)
    for name, r in rates.items():
        print(f"{name:>6}: {statistics.median(r):8.0f} samples/s (median of {len(r)} rounds)")
    ratios = [a / b for a, b in zip(rates["after"], rates["before"])]
    print(f"after / before: {statistics.median(ratios):.3f} (rounds {min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
