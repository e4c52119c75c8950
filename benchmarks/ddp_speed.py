"""Samples/s of `jmvae train` on 1 and 2 ranks (torchrun, gloo on CPU; NCCL with one GPU per rank where
there are GPUs), and the scaling efficiency: rate(N) / (N x rate(1)).

Each configuration is a real `torchrun --standalone --nproc-per-node N -m jmvae train` run of --steps steps
(global batch --batch); the rate is taken from history.csv's per-epoch seconds, the first epoch left out
(warm-up), so data loading, evaluation and figures do not count. Beside it, the time of one gloo all-reduce of
the model's gradients (what DDP adds to every step on CPU ranks), so the efficiency can be read against it.

    python benchmarks/ddp_speed.py --ranks 1 2 --threads 1 --mnist full --epochs 3 --batch 128 512
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

import torch  # noqa: E402
from train_speed import machine  # noqa: E402

ALLREDUCE = """
import os, sys, time, torch, torch.distributed as dist
dist.init_process_group("gloo"); torch.set_num_threads(1)
grads = torch.randn(int(sys.argv[1]))
for _ in range(3): dist.all_reduce(grads)
t0 = time.perf_counter()
for _ in range(20): dist.all_reduce(grads)
if dist.get_rank() == 0: print((time.perf_counter() - t0) / 20)
dist.destroy_process_group()
"""


def allreduce_seconds(numel: int, ranks: int) -> float:
    """Seconds of one gloo all-reduce of `numel` float32 over `ranks` local processes."""
    script = Path(tempfile.mkdtemp()) / "allreduce.py"
    script.write_text(ALLREDUCE)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(ranks),
        str(script),
        str(numel),
    ]
    done = subprocess.run(
        cmd, env=os.environ | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True, check=True
    )
    return float(done.stdout.split()[-1])


def parameters(model: str, mnist: str) -> int:
    from jmvae.data.attributes import load_dataset
    from jmvae.models import build_model

    return sum(
        p.numel()
        for p in build_model(model, load_dataset("position-digit", mnist=mnist).modalities).parameters()
    )


def rate(ranks: int, batch: int, threads: int, args) -> float:
    out = Path(tempfile.mkdtemp()) / f"r{ranks}"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(ranks),
        "-m",
        "jmvae",
        "train",
        "--out",
        str(out),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(batch),
        "--mnist",
        args.mnist,
        "--model",
        args.model,
        "--k",
        "10",
        "--n-per-query",
        "5",
        "--coherence-draws",
        "100",
    ]
    env = os.environ | {
        "OMP_NUM_THREADS": str(threads),
        "JMVAE_OFFLINE": "1",
        "PYTHONPATH": str(HERE.parent / "src"),
    }
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    rows = list(csv.DictReader(open(out / "history.csv")))
    steps = int(rows[-1]["step"]) - int(rows[0]["step"])  # every epoch after the first
    seconds = sum(float(r["seconds"]) for r in rows[1:])  # an epoch's wall time, its test-loss pass included
    return steps * batch / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument(
        "--threads", type=int, default=1, help="OMP threads per rank (default 1: 2 ranks on 2 cores)"
    )
    ap.add_argument("--batch", type=int, nargs="+", default=[128], help="global batch sizes")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--model", default="jmvae")
    ap.add_argument("--mnist", default="bundled")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()} per rank")
    numel = parameters(args.model, args.mnist)
    for n in (r for r in args.ranks if r > 1):
        print(
            f"{args.model}: {numel:,} parameters; one gloo all-reduce of them on {n} ranks: "
            f"{allreduce_seconds(numel, n) * 1e3:.1f} ms (per step)"
        )
    for batch in args.batch:
        rates = {n: rate(n, batch, args.threads, args) for n in args.ranks}
        base = rates[args.ranks[0]] / args.ranks[0]
        for n, r in rates.items():
            print(
                f"batch {batch:4d}, {n} rank(s) x {args.threads} thread(s): {r:8.0f} samples/s   "
                f"efficiency {r / (n * base):.2f}"
            )
        most = max(args.ranks) * args.threads
        if args.threads < most:  # the same cores used by one process's threads instead: the reference on CPU
            print(
                f"batch {batch:4d}, 1 rank  x {most} thread(s): {rate(1, batch, most, args):8.0f} "
                "samples/s   (reference)"
            )


if __name__ == "__main__":
    main()
