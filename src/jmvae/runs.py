"""Run directories: atomic writes, and loading a finished run back (config, data, model).

A run is finished when `metrics.json` exists; it is written last, so a killed run is never taken for a
finished one.
"""
from __future__ import annotations

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
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def save_torch(path: Path, obj: Any) -> None:
    atomic_write(path, lambda p: torch.save(obj, p))


def is_finished(run_dir: Path) -> bool:
    return (run_dir / FINISHED).exists()


def require_run(run_dir: str | Path, finished: bool = False) -> Path:
    """The run directory, or a UserError saying why it cannot be used."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise UserError(f"run directory {run_dir} does not exist or is not a jmvae run (no config.json)")
    if not (run_dir / "model.pt").exists():
        raise UserError(f"run {run_dir} is not finished: no model.pt (resume it with `jmvae train --resume --out {run_dir}`)")
    if finished and not is_finished(run_dir):
        raise UserError(f"run {run_dir} is not finished: no {FINISHED} (run `jmvae evaluate {run_dir}`)")
    return run_dir


def load_run(run_dir: str | Path, device: str = "cpu"):
    """(config, dataset, model) of a trained run, the model in eval mode on `device`."""
    from .train import TrainConfig, build  # late import: train imports this module

    run_dir = require_run(run_dir)
    cfg = TrainConfig.from_json(json.loads((run_dir / "config.json").read_text())["train"])
    data, model = build(cfg, quiet=True)
    model.load_state_dict(torch.load(run_dir / "model.pt", map_location=device, weights_only=True))
    return cfg, data, model.to(device).eval()
