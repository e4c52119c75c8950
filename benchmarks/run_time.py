"""Wall time of a whole `jmvae train`, as a user runs it, split into its phases.

Runs `python -m jmvae train --out TMP [flags]` in a fresh process (imports, data, training, figures, the
explorer page, classifier, metrics, report: everything a user waits for) and reads the phase times the run
records in metrics.json ("run_seconds", and the evaluation's own parts in "seconds"). "start-up" is what the
process spends outside those phases (interpreter, imports, argument checks). The attribute classifier is
cached across runs (by dataset); --cold gives the run an empty cache so it trains one, as a first run does.

    JMVAE_OFFLINE=1 python benchmarks/run_time.py                       # the default run (bundled digits)
    JMVAE_OFFLINE=1 python benchmarks/run_time.py --mnist full          # on full MNIST (cache holds it)
    JMVAE_OFFLINE=1 python benchmarks/run_time.py -- --steps 500        # flags after -- go to jmvae train
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

import torch  # noqa: E402
from train_speed import machine  # noqa: E402

from jmvae.data.mnist import cache_dir  # noqa: E402


def run(args) -> tuple[float, dict, dict]:
    out = Path(tempfile.mkdtemp()) / "run"
    env = os.environ | {"PYTHONPATH": str(HERE.parent / "src"), "OMP_NUM_THREADS": str(args.threads)}
    if args.cold:
        env["JMVAE_CACHE"] = str(out.parent / "cache")
        mnist = cache_dir() / "mnist"
        if mnist.is_dir():  # keep full MNIST (imported once by the user), drop the classifiers
            shutil.copytree(mnist, out.parent / "cache" / "mnist")
    cmd = [sys.executable, "-m", "jmvae", "train", "--out", str(out), "--mnist", args.mnist, *args.flags]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    shutil.rmtree(out.parent, ignore_errors=True)
    return wall, metrics, config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mnist", default="bundled", choices=["bundled", "full", "auto"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cold", action="store_true", help="an empty classifier cache (a first run)")
    ap.add_argument("flags", nargs="*", help="more `jmvae train` flags, after --")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    wall, metrics, config = run(args)
    phases = dict(metrics["run_seconds"])
    inside = {k: v for k, v in metrics["seconds"].items() if k != "total"}
    phases["start-up"] = wall - sum(phases.values())
    steps = phases["training steps"]
    print(
        f"jmvae train --mnist {args.mnist} {' '.join(args.flags)}: {config['total_steps']} steps of batch "
        f"{config['train']['batch_size']} on {config['n_train']:,} images; "
        f"{config['total_steps'] * config['train']['batch_size'] / steps:,.0f} samples/s in the training "
        "steps"
    )
    print(f"{'phase':<28}{'seconds':>9}{'share':>8}")
    for name, s in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"{name:<28}{s:9.1f}{s / wall:8.0%}")
        if name == "evaluation":
            for part, t in sorted(inside.items(), key=lambda kv: -kv[1]):
                print(f"  {part:<26}{t:9.1f}")
    print(f"{'whole run':<28}{wall:9.1f}")
    print(f"{'not training steps':<28}{wall - steps:9.1f}{(wall - steps) / wall:8.0%}")


if __name__ == "__main__":
    main()
