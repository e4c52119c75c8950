"""Evaluation speed: the whole `evaluate()` of a default run on full-MNIST-sized data, the importance-sampled
likelihoods (K=1000) at several chunk sizes, and the generation queries of `jmvae evaluate`.

Each setting runs in a fresh subprocess so its peak RSS is its own.
- evaluate: every part of `jmvae evaluate` with the default EvalConfig (the classifier trained, not cached)
  on the position-digit split of full MNIST (4,334 test images) when the cache holds it, else on a
  synthetic dataset of the same sizes (the bundled 1s and 2s shifted at random: 25,400 training and 4,334
  test images); seconds of each part, total and peak RSS.
- likelihood: seconds, importance samples per second, peak RSS, and the share of a matmul ceiling: the
  decoder products that the estimate needs (forward only) replayed as bare torch.mm at the chunk's shapes.

    JMVAE_OFFLINE=1 python benchmarks/eval_speed.py                 # a fresh (seeded) founding model
    JMVAE_OFFLINE=1 python benchmarks/eval_speed.py --run runs/X     # a trained run (likelihood, queries)
    JMVAE_OFFLINE=1 python benchmarks/eval_speed.py --tasks evaluate
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import cpu_model  # noqa: E402

from jmvae.classifier import train_classifier  # noqa: E402
from jmvae.config import TrainConfig  # noqa: E402
from jmvae.data.attributes import position_digit  # noqa: E402
from jmvae.data.mnist import MnistData, load_bundled, load_mnist  # noqa: E402
from jmvae.evaluate import EvalConfig, correctness_coverage, evaluate, joint_coherence, log_likelihoods  # noqa: E402
from jmvae.models import build_model  # noqa: E402
from jmvae.train import build  # noqa: E402


def synthetic_mnist(n_train: int = 12_700, n_test: int = 2_167, seed: int = 0) -> MnistData:
    """The bundled 1s and 2s, shifted at random, repeated to full MNIST's numbers of 1s and 2s."""
    bundled = load_bundled()
    keep = np.isin(bundled.labels, (1, 2))
    images, labels = bundled.images[keep], bundled.labels[keep]
    g = np.random.default_rng(seed)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        pick = g.integers(0, len(images), n)
        return np.stack([np.roll(images[i], tuple(g.integers(-2, 3, 2)), axis=(0, 1)) for i in pick]), labels[
            pick
        ]

    return MnistData(
        *draw(n_train),
        *draw(n_test),
        source=f"synthetic: bundled 1s and 2s shifted, {n_train:,} + {n_test:,}",
    )


def full_size_data():
    """Full MNIST's position-digit split if the cache holds full MNIST, else the synthetic one."""
    mnist = load_mnist(download_ok=False)
    return position_digit(mnist if mnist.test_images is not None else synthetic_mnist())


def load(run: str | None):
    if run:
        from jmvae.train import load_run

        _, data, model = load_run(run)
        return data, model
    data, model = build(TrainConfig(), quiet=True)
    return data, model.eval()


def decoder_layers(model) -> list[tuple[int, int]]:
    """(in, out) of every Linear a likelihood estimate runs per importance sample: all decoders on z ~
    q(z|x,y), and the image decoder again on z ~ q(z|x)."""

    def layers(seq):
        return [(m.in_features, m.out_features) for m in seq if isinstance(m, torch.nn.Linear)]

    out = [l for d in model.decoders.values() for l in layers(d)]
    return out + layers(model.decoders[model.images[0].name])


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
    data, model = load(args.run) if args.task != "evaluate" else (None, None)
    out: dict = {}
    if args.task == "evaluate":
        data = full_size_data()
        os.environ["JMVAE_CACHE"] = args.cache  # an empty cache: the classifier is trained, as on a first run
        torch.manual_seed(0)
        model = build_model("jmvae", data.modalities)
        examples = args.likelihood_examples or EvalConfig().likelihood_examples
        metrics = evaluate(model, data, TrainConfig(), EvalConfig(likelihood_examples=examples))
        out = {
            "seconds": metrics["seconds"],
            "source": data.source,
            "n_train": len(data.train["x"]),
            "n_test": len(data.test["x"]),
            "settings": metrics["settings"],
        }
    elif args.task == "likelihood":
        layers = decoder_layers(model)
        before = mm_ceiling(layers, args.rows)  # the machine drifts: time the ceiling on both sides
        t0 = time.perf_counter()
        log_likelihoods(model, data, args.k, rows_per_chunk=args.rows)  # the whole split, not a subsample
        seconds = time.perf_counter() - t0
        n = len(data.test["x"])
        out = {
            "seconds": seconds,
            "samples_per_s": n * args.k / seconds,
            "ceiling": (before + mm_ceiling(layers, args.rows)) / 2,
            "n": n,
        }
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
    ap.add_argument(
        "--rows",
        type=int,
        nargs="+",
        default=[512, 2048, 8192, 32768],
        help="rows (examples x K) per chunk (jmvae evaluate uses 2048)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--likelihood-examples", type=int, help=f"for evaluate (default {EvalConfig().likelihood_examples})"
    )
    ap.add_argument(
        "--tasks",
        nargs="+",
        choices=["evaluate", "likelihood", "queries"],
        default=["evaluate", "likelihood", "queries"],
        help="what to time (default: all)",
    )
    ap.add_argument("--task", choices=["evaluate", "likelihood", "queries"], help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.task:
        args.rows = args.rows[0]
        return worker(args)
    base = [sys.executable, __file__, "--k", str(args.k), "--threads", str(args.threads)] + (
        ["--run", args.run] if args.run else []
    )

    def child(*extra: str) -> dict:
        res = subprocess.run(base + list(extra), capture_output=True, text=True, check=True)
        return json.loads(res.stdout.strip().splitlines()[-1])

    print(
        f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads; "
        f"load average {os.getloadavg()[0]:.1f} at the start (other processes slow every number here)"
    )
    if "evaluate" in args.tasks:
        with tempfile.TemporaryDirectory() as cache:
            r = child(
                "--task",
                "evaluate",
                "--rows",
                "0",
                "--cache",
                cache,
                *(
                    ["--likelihood-examples", str(args.likelihood_examples)]
                    if args.likelihood_examples
                    else []
                ),
            )
        s = r["settings"]
        print(
            f"\nevaluate() of a default run (fresh JMVAE, classifier not cached) on {r['source']}: "
            f"{r['n_train']:,} training / {r['n_test']:,} test images; {s['n_per_query']} images per query "
            f"at T = 1 and {s['low_temperature']}, likelihoods K={s['k']} on {s['likelihood_examples']} "
            "test images"
        )
        for part, seconds in r["seconds"].items():
            print(f"{part:>36}: {seconds:6.1f} s")
        print(
            f"{'peak RSS':>36}: {r['peak_rss_mb']:6.0f} MB   (load average {os.getloadavg()[0]:.1f} at the "
            "end)"
        )
    if "likelihood" in args.tasks:
        results = {rows: child("--task", "likelihood", "--rows", str(rows)) for rows in args.rows}
        print(
            f"\nimportance-sampled likelihoods of the {'run' if args.run else 'default dataset'}'s whole "
            f"test split ({next(iter(results.values()))['n']:,} images), K={args.k}, 4 estimates (3 share z "
            "~ q(z|x,y), 1 uses z ~ q(z|x))"
        )
        print(
            f"{'rows/chunk':>10} {'seconds':>8} {'IS samples/s':>13} {'ceiling':>9} {'share':>6} "
            f"{'peak RSS MB':>12}"
        )
        for rows, r in results.items():
            print(
                f"{rows:10} {r['seconds']:8.1f} {r['samples_per_s']:13.0f} {r['ceiling']:9.0f} "
                f"{100 * r['samples_per_s'] / r['ceiling']:5.0f}% {r['peak_rss_mb']:12.0f}"
            )
    if "queries" in args.tasks:
        q = child("--task", "queries", "--rows", "0")
        print(
            f"\ncorrectness/coverage queries ({EvalConfig().n_per_query} images each, T = 1) + joint "
            f"coherence ({EvalConfig().coherence_draws} draws): {q['seconds']:.1f} s, peak RSS "
            f"{q['peak_rss_mb']:.0f} MB"
        )


if __name__ == "__main__":
    main()
