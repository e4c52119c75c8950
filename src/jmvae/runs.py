"""Run directories: atomic writes, and loading a finished run back (config, data, model).

A run is finished when `metrics.json` exists; it is written last, so a killed run is never taken for a
finished one. Every file is written to a temporary file beside it, flushed to disk (fsync) and renamed over
the old one, then the directory is synced: a kill or a power loss leaves the old file or the new one, never
a part. Temporary files a kill leaves behind are removed by the next command that writes to the run.

One command writes a run at a time: each holds RunLock (an flock on RUN/.lock, which names its pid), so the
temporary files any other writer meets are a dead process's. Nothing is deleted or written through a link that
leads out of the run (check_links, safe_remove).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import UserError

FINISHED = "metrics.json"
LOCK = ".lock"  # RUN/.lock: flock-ed by the one command writing the run, holding its pid
LINKED_DIRS = ("figures", "tensorboard")  # the folders a run writes into


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
    except OSError as e:
        if e.filename is None:  # a full disk in write() or fsync names no file: name the one being written
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise
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
    """Delete the `.NAME.*.tmp` files that atomic_write leaves when a process is killed mid-write.

    Called with the run's RunLock held, so no live process owns them; never inside a linked folder."""
    removed = []
    for directory in (run_dir, run_dir / "figures"):
        if directory.is_dir() and (directory == run_dir or not directory.is_symlink()):
            for tmp in directory.glob(".*.tmp"):
                if safe_remove(run_dir, tmp):
                    removed.append(tmp)
    return removed


def safe_remove(run_dir: Path, path: Path) -> bool:
    """Unlink `path`, a file of the run, unless a folder between `run_dir` and it is a link (which could lead
    out of the run) or it is a directory; a link itself is removed, never what it points to. True if
    removed."""
    try:
        relative = Path(path).relative_to(run_dir)
    except ValueError:
        return False
    folder = Path(run_dir)
    for part in relative.parts[:-1]:
        folder = folder / part
        if folder.is_symlink() or not folder.is_dir():
            return False
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            return False
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def check_links(run_dir: Path) -> None:
    """UserError if a folder the run writes into (figures, tensorboard) is a link leading out of the run: its
    files would be deleted and written wherever it points."""
    inside = Path(run_dir).resolve()
    for name in LINKED_DIRS:
        path = Path(run_dir) / name
        if path.is_symlink():
            target = path.resolve()
            if target != inside and inside not in target.parents:
                raise UserError(
                    f"{path} is a link to {target}, outside the run, whose files a run would delete and "
                    "write there (allowed: a run whose folders are its own; remove the link)"
                )


def check_path(run_dir: Path) -> None:
    """UserError for a run path that is not valid UTF-8 (its pages and config could never be written)."""
    try:
        str(run_dir).encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(
            f"run directory {ascii(str(run_dir))} is not valid UTF-8 (allowed: a path in UTF-8)"
        ) from None


class RunLock:
    """An exclusive lock on a run for the command that writes it: flock on RUN/.lock, which holds the pid.

    The kernel drops it when the process ends, however it ends; a second writer gets one line naming the
    holder. `check` probes without creating anything (for before the checks that must change nothing)."""

    def __init__(self, run_dir: str | Path, what: str = "run"):
        self.run_dir, self.what = Path(run_dir), what
        self.path = self.run_dir / LOCK
        self.fd: int | None = None

    def _refuse(self, fd: int) -> UserError:
        pid = "?"
        for _ in range(20):  # the holder writes its pid just after taking the lock
            try:
                pid = os.pread(fd, 32, 0).decode().strip() or "?"
            except OSError:
                break
            if pid != "?":
                break
            time.sleep(0.01)
        return UserError(
            f"{self.what} {self.run_dir} is being written by another jmvae command; one writer at a time, "
            f"wait for it or stop it (pid {pid} holds it)"
        )

    def check(self) -> None:
        if self.fd is not None or not self.path.is_file():
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            raise self._refuse(fd) from None
        finally:
            os.close(fd)

    def acquire(self) -> RunLock:
        if self.fd is not None:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            error = self._refuse(fd)
            os.close(fd)
            raise error from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # the pid stays: only a lock held means anything
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def save_torch(path: Path, obj: Any) -> None:
    def write(tmp: Path) -> None:
        try:
            torch.save(obj, tmp)
        except (
            RuntimeError
        ) as e:  # torch's zip writer reports a full disk as "PytorchStreamWriter failed writing"
            raise OSError(
                errno.ENOSPC if "writ" in str(e) else errno.EIO,
                f"{str(e).splitlines()[0][:100] if str(e) else 'write failed'}",
                str(path),
            ) from None

    atomic_write(path, write)


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
        raise UserError(
            f"{path} cannot be read ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:80] if str(e) else 'corrupt'}; allowed: a file jmvae wrote; train "
            "again with --overwrite)"
        ) from None


def fingerprint(data) -> str:
    """sha256 over the train and test splits (every tensor, in order): what a run's numbers were computed
    on."""
    h = hashlib.sha256()
    for split in (data.train, data.test):
        for name in sorted(split):
            t = split[name].contiguous().cpu()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
            h.update(t.numpy().data)
    return h.hexdigest()[:16]


def check_data(run_dir: Path, config: dict, data) -> None:
    """Stop when the data rebuilt for a run is not the data it trained on (runs from before fingerprints
    pass)."""
    pinned = config.get("data_fingerprint")
    if pinned is None:
        return
    now = fingerprint(data)
    if now != pinned:
        raise UserError(
            f"run {run_dir} trained on data {pinned} ({config.get('n_train')} train / "
            f"{config.get('n_test')} test images from {config.get('mnist_source')}); the data built now is "
            f"{now} ({data.n_train} / {data.n_test} from {data.source}) (allowed: the run's own data, as it "
            "was: its MNIST files, or its --data folder unchanged)"
        )
