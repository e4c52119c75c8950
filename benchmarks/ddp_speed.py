"""Samples/s of `jmvae train` on 1 and 2 ranks (torchrun, gloo on CPU; NCCL with one GPU per rank where
there are GPUs), and the scaling efficiency: rate(N) / (N x rate(1)).

Each configuration is a real `torchrun --standalone --nproc-per-node N -m jmvae train` run of --steps steps
(global batch --batch); the rate is taken from history.csv's per-epoch seconds, the first epoch left out
(warm-up), so data loading, evaluation and figures do not count.

    python benchmarks/ddp_speed.py --ranks 1 2 --threads 1
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

from train_speed import machine  # noqa: E402


def rate(ranks: int, args) -> float:
    out = Path(tempfile.mkdtemp()) / f"r{ranks}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks), "-m", "jmvae",
           "train", "--out", str(out), "--epochs", str(args.epochs), "--batch-size", str(args.batch), "--mnist", args.mnist,
           "--model", args.model, "--k", "10", "--n-per-query", "5", "--coherence-draws", "100"]
    env = os.environ | {"OMP_NUM_THREADS": str(args.threads), "JMVAE_OFFLINE": "1",
                        "PYTHONPATH": str(HERE.parent / "src")}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    rows = list(csv.DictReader(open(out / "history.csv")))
    steps = int(rows[-1]["step"]) - int(rows[0]["step"])          # every epoch after the first
    seconds = sum(float(r["seconds"]) for r in rows[1:])          # an epoch's wall time, its test-loss pass included
    return steps * args.batch / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=1, help="OMP threads per rank (default 1: 2 ranks on 2 cores)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--model", default="jmvae")
    ap.add_argument("--mnist", default="bundled")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    rates = {n: rate(n, args) for n in args.ranks}
    for n, r in rates.items():
        print(f"{n} rank(s) x {args.threads} thread(s): {r:8.0f} samples/s   efficiency {r / (n * rates[args.ranks[0]] / args.ranks[0]):.2f}")


if __name__ == "__main__":
    main()
