"""Run directories: atomic writes, and loading a finished run back (config, data, model).

A run is finished when `metrics.json` exists; it is written last, so a killed run is never taken for a
finished one. Every file is written to a temporary file beside it, flushed to disk (fsync) and renamed over
the old one, then the directory is synced: a kill or a power loss leaves the old file or the new one, never
a part. Temporary files a kill leaves behind are removed by the next command that writes to the run.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import UserError

FINISHED = "metrics.json"


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call write(tmp) on a temporary file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a run's files should read like any other file
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        sync_directory(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def sync_directory(directory: Path) -> None:
    """fsync a directory, so a rename in it survives a power loss (a no-op where the OS cannot)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_temp_files(run_dir: Path) -> list[Path]:
    """Delete the `.NAME.*.tmp` files that atomic_write leaves when a process is killed mid-write."""
    removed = []
    for directory in (run_dir, run_dir / "figures"):
        if directory.is_dir():
            for tmp in directory.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def save_torch(path: Path, obj: Any) -> None:
    atomic_write(path, lambda p: torch.save(obj, p))


def check_parents(path: Path, what: str) -> None:
    """UserError if a folder on `path` exists as a file (mkdir would fail deep inside the command)."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{what}: {parent} is a file (allowed: a path whose folders are directories)")
            return


def is_finished(run_dir: Path) -> bool:
    return (run_dir / FINISHED).exists()


def load_torch(path: Path, device: str | torch.device = "cpu") -> Any:
    """A checkpoint or model file, or a UserError naming it (truncated, foreign or corrupt)."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, pickle.UnpicklingError, EOFError, zipfile errors...
        raise UserError(f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else 'corrupt'}; "
                        "allowed: a file jmvae wrote; train again with --overwrite)") from None


def fingerprint(data) -> str:
    """sha256 over the train and test splits (every tensor, in order): what a run's numbers were computed on."""
    h = hashlib.sha256()
    for split in (data.train, data.test):
        for name in sorted(split):
            t = split[name].contiguous().cpu()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
            h.update(t.numpy().data)
    return h.hexdigest()[:16]


def check_data(run_dir: Path, config: dict, data) -> None:
    """Stop when the data rebuilt for a run is not the data it trained on (runs from before fingerprints pass)."""
    pinned = config.get("data_fingerprint")
    if pinned is None:
        return
    now = fingerprint(data)
    if now != pinned:
        raise UserError(f"run {run_dir} trained on data {pinned} ({config.get('n_train')} train / {config.get('n_test')} test "
                        f"images from {config.get('mnist_source')}); the data built now is {now} ({data.n_train} / "
                        f"{data.n_test} from {data.source}) (allowed: the run's own MNIST files)")
