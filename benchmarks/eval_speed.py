"""Evaluation speed: the importance-sampled likelihoods (K=1000) and the generation queries of `jmvae evaluate`.

Each setting runs in a fresh subprocess so its peak RSS is its own. For the likelihoods it prints seconds,
importance samples per second, peak RSS, and the share of a matmul ceiling: the decoder products that the
estimate needs (forward only) replayed as bare torch.mm at the chunk's shapes.

    JMVAE_OFFLINE=1 python benchmarks/eval_speed.py                 # a fresh (seeded) founding model
    JMVAE_OFFLINE=1 python benchmarks/eval_speed.py --run runs/X     # a trained run
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from jmvae.evaluate import EvalConfig, correctness_coverage, joint_coherence, log_likelihoods  # noqa: E402
from jmvae.classifier import train_classifier  # noqa: E402
from jmvae.train import TrainConfig, build  # noqa: E402


def load(run: str | None):
    if run:
        from jmvae.runs import load_run
        _, data, model = load_run(run)
        return data, model
    data, model = build(TrainConfig(), quiet=True)
    return data, model.eval()


def decoder_layers(model) -> list[tuple[int, int]]:
    """(in, out) of every Linear a likelihood estimate runs per importance sample: all decoders on z ~ q(z|x,y),
    and the image decoder again on z ~ q(z|x)."""
    def layers(seq):
        return [(m.in_features, m.out_features) for m in seq if isinstance(m, torch.nn.Linear)]
    out = [l for d in model.decoders.values() for l in layers(d)]
    return out + layers(model.decoders[model.image.name])


def mm_ceiling(layers, rows: int, seconds: float = 1.0, chunks: int = 5) -> float:
    """Samples/s of bare forward products (rows, in) @ (in, out) for every layer: median of `chunks`
    timings of about `seconds` each."""
    prods = [(torch.rand(rows, i), torch.rand(o, i).t(), torch.empty(rows, o)) for i, o in layers]

    def once() -> float:
        t0 = time.perf_counter()
        for a, b, c in prods:
            torch.mm(a, b, out=c)
        return time.perf_counter() - t0

    once()
    reps = max(1, int(seconds / chunks / once()))
    return rows * reps / statistics.median(sum(once() for _ in range(reps)) for _ in range(chunks))


def worker(args) -> None:
    torch.set_num_threads(args.threads)
    data, model = load(args.run)
    out: dict = {}
    if args.task == "likelihood":
        layers = decoder_layers(model)
        before = mm_ceiling(layers, args.rows)     # the machine drifts: time the ceiling on both sides
        t0 = time.perf_counter()
        log_likelihoods(model, data, args.k, rows_per_chunk=args.rows)
        seconds = time.perf_counter() - t0
        n = len(data.test["x"])
        out = {"seconds": seconds, "samples_per_s": n * args.k / seconds,
               "ceiling": (before + mm_ceiling(layers, args.rows)) / 2, "n": n}
    else:
        clf = train_classifier(data, steps=50)  # speed only: its accuracy does not matter here
        t0 = time.perf_counter()
        correctness_coverage(model, data, clf, EvalConfig().n_per_query)
        joint_coherence(model, data, clf, EvalConfig().coherence_draws)
        out = {"seconds": time.perf_counter() - t0}
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="a trained run directory (default: a fresh founding model)")
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--rows", type=int, nargs="+", default=[512, 2048, 8192, 32768],
                    help="rows (examples x K) per chunk (jmvae evaluate uses 2048)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--task", choices=["likelihood", "queries"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.task:
        args.rows = args.rows[0]
        return worker(args)
    base = [sys.executable, __file__, "--k", str(args.k), "--threads", str(args.threads)] + (["--run", args.run] if args.run else [])

    def child(*extra: str) -> dict:
        res = subprocess.run(base + list(extra), capture_output=True, text=True, check=True)
        return json.loads(res.stdout.strip().splitlines()[-1])

    print(f"importance-sampled likelihoods, K={args.k}, 4 estimates (3 share z ~ q(z|x,y), 1 uses z ~ q(z|x)), {args.threads} threads")
    print(f"{'rows/chunk':>10} {'seconds':>8} {'IS samples/s':>13} {'ceiling':>9} {'share':>6} {'peak RSS MB':>12}")
    for rows in args.rows:
        r = child("--task", "likelihood", "--rows", str(rows))
        print(f"{rows:10} {r['seconds']:8.1f} {r['samples_per_s']:13.0f} {r['ceiling']:9.0f} "
              f"{100 * r['samples_per_s'] / r['ceiling']:5.0f}% {r['peak_rss_mb']:12.0f}")
    q = child("--task", "queries", "--rows", "0")
    print(f"correctness/coverage queries + joint coherence ({EvalConfig().coherence_draws} draws): "
          f"{q['seconds']:.1f} s, peak RSS {q['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
