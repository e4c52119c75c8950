"""The JMVAE paper's MNIST+label likelihood, reproduced: test log p(x) of JMVAE-kl on MNIST with its label.

Suzuki et al. 2016 report log p(x) = -86.86 nats (JMVAE-kl, alpha = 0.1, z = 64); MultiVae reproduced
-86.85 +- 0.03 with 512-512 MLPs, images binarised afresh each epoch, the test set binarised once, KL warm-up
over 200 epochs, 500 epochs, batch 100, Adam 1e-3, and K = 1,000 importance samples from q(z|x,y) on the
10,000 test images. This trains each seed with `jmvae train` (as subprocesses, --parallel at a time), then
estimates the likelihoods on every test image and prints one row per seed and their mean.

    python benchmarks/mnist_label.py                               # the paper's schedule, 3 seeds
    python benchmarks/mnist_label.py --budget 420 --device cuda    # as many epochs as fit 420 s of training
    python benchmarks/mnist_label.py --evaluate-only OUT           # the table of runs already trained

--budget first trains every seed for 2 epochs together (the same concurrency as the real runs), reads the
seconds per epoch from history.csv, and shortens the schedule to fit, keeping warm-up / epochs = 200 / 500.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
import torch  # noqa: E402
from common import cpu_model  # noqa: E402

from jmvae.evaluate import log_likelihood_examples  # noqa: E402
from jmvae.train import load_run  # noqa: E402

PUBLISHED = [("JMVAE paper (Suzuki et al. 2016)", "-86.86"), ("MultiVae (3 seeds)", "-86.85 +- 0.03")]


def train_command(seed: int, epochs: int, warmup: int, device: str, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "jmvae",
        "train",
        "--preset",
        "mnist-label",
        "--mnist",
        "full",
        "--paper",
        "--alpha",
        "0.1",
        "--z-dim",
        "64",
        "--batch-size",
        "100",
        "--lr",
        "1e-3",
        "--binarize",
        "--warmup",
        str(warmup),
        "--epochs",
        str(epochs),
        "--seed",
        str(seed),
        "--device",
        device,
        "--precision",
        "float32",  # the paper's number, not a CPU's bfloat16 (auto picks it on some)
        "--out",
        str(out),
        "--overwrite",
        # the run's own evaluation kept small: the likelihoods that matter are estimated below, on the
        # device
        "--k",
        "10",
        "--likelihood-examples",
        "100",
        "--n-per-query",
        "100",
        "--coherence-draws",
        "1000",
        "--low-temperature",
        "1",
    ]


def train_all(seeds: list[int], epochs: int, warmup: int, device: str, out: Path, parallel: int) -> float:
    """Train every seed, `parallel` at a time; the wall time of all of it."""
    env = os.environ | {
        "PYTHONPATH": str(ROOT / "src"),
        "JMVAE_OFFLINE": "1",
        "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // parallel)),
    }
    t0, queue, running = time.perf_counter(), list(seeds), []
    while queue or running:
        while queue and len(running) < parallel:
            seed = queue.pop(0)
            log = open(out / f"seed{seed}.log", "w")
            running.append(
                (
                    seed,
                    subprocess.Popen(
                        train_command(seed, epochs, warmup, device, out / f"seed{seed}"),
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    ),
                )
            )
        time.sleep(1)
        for seed, p in list(running):
            if p.poll() is not None:
                running.remove((seed, p))
                if p.returncode:
                    print((out / f"seed{seed}.log").read_text()[-3000:])
                    raise SystemExit(f"seed {seed}: jmvae train exited {p.returncode}")
    return time.perf_counter() - t0


def seconds_per_epoch(run: Path) -> float:
    rows = list(csv.DictReader(open(run / "history.csv")))
    return float(rows[-1]["seconds"]) / (
        int(rows[-1]["epoch"]) - (int(rows[-2]["epoch"]) if len(rows) > 1 else 0)
    )


@torch.no_grad()
def likelihoods(run: Path, device: str, k: int) -> dict:
    cfg, data, model = load_run(run, device)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    rows = 100_000 if device.startswith("cuda") else 2048
    values = log_likelihood_examples(model, data, k, rows_per_chunk=rows, examples=None, seed=0)
    history = list(csv.DictReader(open(run / "history.csv")))
    return {
        "seed": cfg.seed,
        "epochs": int(history[-1]["epoch"]),
        "warmup": cfg.warmup,
        "k": k,
        "test_images": len(next(iter(values.values()))),
        "train_seconds": sum(float(r["seconds"]) for r in history),
        "eval_seconds": time.perf_counter() - t0,
        "mean": {name: float(v.mean()) for name, v in values.items()},
        "standard_error": {name: float(v.std() / math.sqrt(len(v))) for name, v in values.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument(
        "--budget", type=float, help="seconds of training: shorten the schedule to fit (probed first)"
    )
    ap.add_argument(
        "--parallel", type=int, default=1, help="seeds trained at once (a GPU has room for several)"
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--k", type=int, default=1000, help="importance samples per test image (default 1000)")
    ap.add_argument("--out", default="runs/mnist-label", help="parent of the runs (default runs/mnist-label)")
    ap.add_argument("--json", help="also write the table as JSON here")
    ap.add_argument("--evaluate-only", action="store_true", help="evaluate the runs already in --out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cpu = cpu_model()
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else f"CPU {cpu}"
    print(
        f"device: {where}; torch {torch.__version__}; seeds {args.seeds}, {args.parallel} at a time",
        flush=True,
    )
    epochs, warmup, wall = args.epochs, args.warmup, None
    if not args.evaluate_only:
        if args.budget:
            probe = out / "probe"
            probe.mkdir(exist_ok=True)
            train_all(args.seeds[: args.parallel], 2, 1, args.device, probe, args.parallel)
            per_epoch = max(seconds_per_epoch(probe / f"seed{s}") for s in args.seeds[: args.parallel])
            rounds = math.ceil(len(args.seeds) / args.parallel)
            epochs = max(2, min(args.epochs, int(args.budget / rounds / per_epoch)))
            warmup = max(1, round(epochs * args.warmup / args.epochs))
            print(
                f"probe: {per_epoch:.2f} s per epoch with {args.parallel} at once -> {epochs} epochs, "
                f"warm-up {warmup}",
                flush=True,
            )
        wall = train_all(args.seeds, epochs, warmup, args.device, out, args.parallel)
        print(f"trained {len(args.seeds)} seeds x {epochs} epochs in {wall:.0f} s", flush=True)
    rows = [likelihoods(out / f"seed{s}", args.device, args.k) for s in args.seeds]
    main_metric = "log p(x)"
    print(
        f"\ntest log p(x), K = {args.k} importance samples from q(z|x,y), binarised test images (fixed seed)"
    )
    print(
        f"{'run':34} {'epochs':>6} {'warm-up':>7} {'log p(x)':>16} {'log p(x) [q(z|x)]':>18} {'train s':>8}"
    )
    for r in rows:
        m, se = r["mean"], r["standard_error"]
        print(
            f"{'jmvae seed ' + str(r['seed']):34} {r['epochs']:6} {r['warmup']:7} "
            f"{m[main_metric]:9.2f} +- {se[main_metric]:4.2f} {m['log p(x) [proposal q(z|x)]']:18.2f} "
            f"{r['train_seconds']:8.0f}"
        )
    values = [r["mean"][main_metric] for r in rows]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    print(
        f"{'jmvae, mean +- std over seeds':34} {'':6} {'':7} {statistics.fmean(values):9.2f} +- {spread:4.2f}"
    )
    for name, value in PUBLISHED:
        print(f"{name:34} {500:6} {200:7} {value:>16}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"device": where, "wall_seconds": wall, "runs": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
