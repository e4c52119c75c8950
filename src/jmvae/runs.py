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


def read_json(path: Path, what: str = "") -> Any:
    """A JSON file of a run, or a UserError naming it (a truncated or edited file is not a traceback)."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:80]}; "
                        f"allowed: the file jmvae wrote{what})") from None


def read_config(run_dir: Path) -> dict:
    """config.json of a run, checked to be one jmvae wrote (it has a "train" section)."""
    config = read_json(run_dir / "config.json", ": re-run `jmvae train --overwrite`")
    if not isinstance(config, dict) or not isinstance(config.get("train"), dict):
        raise UserError(f"{run_dir / 'config.json'} is not a jmvae run config (no \"train\" section)")
    return config


def is_run_dir(run_dir: Path) -> bool:
    """Whether `run_dir` holds a config.json that jmvae wrote (what --overwrite and --resume require)."""
    try:
        read_config(run_dir)
        return True
    except UserError:
        return False


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
                        f"images from {config.get('mnist_source')}); the data built now is {now} ({len(data.train['x'])} / "
                        f"{len(data.test['x'])} from {data.source}) (allowed: the run's own MNIST files)")


def require_run(run_dir: str | Path, finished: bool = False) -> Path:
    """The run directory, or a UserError saying why it cannot be used."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise UserError(f"run directory {run_dir} does not exist or is not a jmvae run (no config.json)")
    read_config(run_dir)
    if not (run_dir / "model.pt").exists():
        raise UserError(f"run {run_dir} is not finished: no model.pt (resume it with `jmvae train --resume --out {run_dir}`)")
    if finished and not is_finished(run_dir):
        raise UserError(f"run {run_dir} is not finished: no {FINISHED} (run `jmvae evaluate {run_dir}`)")
    return run_dir


def load_run(run_dir: str | Path, device: str = "cpu"):
    """(config, dataset, model) of a trained run, the model in eval mode on `device`."""
    from .train import TrainConfig, build  # late import: train imports this module

    run_dir = require_run(run_dir)
    config = read_config(run_dir)
    cfg = TrainConfig.from_json(config["train"])
    data, model = build(cfg, quiet=True)
    check_data(run_dir, config, data)
    state = load_torch(run_dir / "model.pt", device)
    try:
        model.load_state_dict(state)
    except Exception as e:
        raise UserError(f"{run_dir / 'model.pt'} does not fit the model of config.json ({type(e).__name__}; "
                        "allowed: the model.pt this run wrote)") from None
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise UserError(f"{run_dir / 'model.pt'} holds non-finite weights (allowed: a model trained without nan; "
                        "train again with a lower --lr)")
    return cfg, data, model.to(device).eval()
