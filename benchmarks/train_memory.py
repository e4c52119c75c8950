"""Peak memory of `jmvae train` on full-MNIST-sized data: 25,400 images of the founding shape (28x56).

Writes a synthetic MNIST in IDX format (the bundled 1s and 2s, shifted at random, repeated to 12,700 training
and 2,167 test digits: the sizes of full MNIST's 1s and 2s), trains on it through the real `--mnist-dir`
path in a subprocess, and prints that process's peak RSS next to the size of the images as uint8 (how
jmvae keeps them) and as float32 (how they would take if converted up front).

    python benchmarks/train_memory.py [--steps 200]
"""

from __future__ import annotations

import argparse
import gzip
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from jmvae.data.mnist import load_bundled  # noqa: E402


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header + array.astype(np.uint8).tobytes())


def synthetic_mnist(root: Path, n_train: int = 12_700, n_test: int = 2_167, seed: int = 0) -> None:
    bundled = load_bundled()
    keep = np.isin(bundled.labels, (1, 2))
    images, labels = bundled.images[keep], bundled.labels[keep]
    g = np.random.default_rng(seed)
    for name, n in (("train", n_train), ("t10k", n_test)):
        pick = g.integers(0, len(images), n)
        shifted = np.stack([np.roll(images[i], tuple(g.integers(-2, 3, 2)), axis=(0, 1)) for i in pick])
        write_idx(root / f"{name}-images-idx3-ubyte.gz", shifted)
        write_idx(root / f"{name}-labels-idx1-ubyte.gz", labels[pick])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synthetic_mnist(root)
        cmd = [
            sys.executable,
            "-m",
            "jmvae.cli",
            "train",
            "--mnist-dir",
            tmp,
            "--steps",
            str(args.steps),
            "--out",
            str(root / "run"),
            "--k",
            "50",
            "--coherence-draws",
            "1000",
        ]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    n_images, pixels = 2 * (12_700 + 2_167), 28 * 56
    print(
        f"jmvae train on {n_images:,} synthetic 28x56 images ({2 * 12_700:,} train), {args.steps} steps, "
        f"then figures, metrics (K=50) and report: {seconds:.0f} s"
    )
    print(
        f"images as uint8: {n_images * pixels / 2**20:.0f} MiB; as float32 they would be "
        f"{4 * n_images * pixels / 2**20:.0f} MiB"
    )
    print(f"peak RSS of the jmvae process: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
