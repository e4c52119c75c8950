"""A run from start to finish, the same from Python and from the command line: train, then figures, explorer,
evaluation and report (`finish_run`); `fit` does both.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import asdict
from pathlib import Path

from . import figures, report
from .config import TrainConfig, read_config, run_config
from .data.attributes import AttributeDataset
from .errors import UserError
from .evaluate import EvalConfig, evaluate, format_headline
from .explore import EXPLORER, write_explorer
from .runs import FINISHED, RunLock, remove_temp_files, safe_remove, write_json
from .samplers import SamplerConfig, fit_sampler, load_samplers, save_sampler
from .train import train


def read_history(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv", newline="") as f:
        return [
            {k: float(v) if k not in ("epoch", "step") else int(v) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


KEPT = ".metrics.json.kept.tmp"  # the old metrics.json while a run is evaluated again


def file_identity(path: Path) -> tuple[int, int] | None:
    """(inode, mtime) of a file, None if absent: atomic_write's rename always changes it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def finish_run(
    run_dir: Path, model, data, eval_cfg: EvalConfig, log=print, seconds: dict[str, float] | None = None
) -> dict:
    """Figures, metrics, report; metrics.json last, because it marks the run finished.

    The old metrics.json is moved out of sight first (to KEPT): a kill midway leaves an unfinished run
    (figures and report may be new), never a finished one whose report disagrees with its metrics; an error (a
    full disk) or Ctrl-C before the report is rewritten puts it back, so a finished run stays finished.
    metrics["run_seconds"] holds the wall time of each phase: `seconds` (training's, from train()) and this
    function's own.
    """
    seconds = dict(seconds or {})
    clock = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal clock
        seconds[phase] = time.perf_counter() - clock
        clock = time.perf_counter()

    config = read_config(run_dir)
    remove_temp_files(run_dir)
    kept, page = run_dir / KEPT, run_dir / "report.html"
    old_page = file_identity(page)
    if (run_dir / FINISHED).exists():
        os.replace(run_dir / FINISHED, kept)
    try:
        history = read_history(run_dir)
        infos = figures.make_figures(model, data, history, run_dir / "figures")
        lap("figures")
        samplers = load_samplers(run_dir, model.z_dim)
        try:
            write_explorer(model, data, run_dir / EXPLORER, run_dir.name, samplers=samplers)
        except UserError as e:  # a decoder the page cannot run: the run finishes without it
            safe_remove(run_dir, run_dir / EXPLORER)
            log(f"no {EXPLORER}: {e}")
        lap("explorer")
        metrics = evaluate(model, data, run_config(run_dir, config), eval_cfg, log=log, samplers=samplers)
        lap("evaluation")
        metrics["run_seconds"] = seconds
        report.write_report(run_dir, config, metrics, infos, history)
        lap("report")
        write_json(run_dir / FINISHED, metrics)
    except BaseException:
        if file_identity(page) == old_page and kept.exists() and not (run_dir / FINISHED).exists():
            os.replace(kept, run_dir / FINISHED)  # the report is the old one: the run is as it was
        raise
    safe_remove(run_dir, kept)
    log(format_headline(metrics))
    log(f"wrote {run_dir / FINISHED} and {run_dir / 'report.html'}")
    return metrics


def fit_samplers(run_dir: Path, model, data, kinds: list[str], seed: int, log=print) -> None:
    """Fit each post-hoc latent sampler named (`train --sampler`) at its defaults and store it in the run."""
    for kind in kinds:
        t0 = time.perf_counter()
        sampler, scores = fit_sampler(model, data, SamplerConfig(kind=kind, seed=seed))
        path = save_sampler(run_dir, sampler, scores)
        log(
            f"{sampler.describe()} fitted to {scores['codes']:,} codes ({sampler.cfg.codes}) in "
            f"{time.perf_counter() - t0:.1f} s: "
            f"{path}"
        )


def fit(
    cfg: TrainConfig,
    run_dir: str | Path,
    dataset: AttributeDataset | None = None,
    eval_cfg: EvalConfig | None = None,
    overwrite: bool = False,
    log=print,
) -> dict:
    """Train `cfg` (on `dataset` if given, e.g. `jmvae.data.from_arrays(...)`) into `run_dir` and finish the
    run: figures, explorer, metrics and report, as `jmvae train` does. Returns the metrics."""
    seconds: dict[str, float] = {}
    eval_cfg = eval_cfg or EvalConfig()
    lock = RunLock(Path(run_dir))  # taken by train() once its checks pass, held to the end
    try:
        data, model = train(
            cfg,
            run_dir,
            overwrite=overwrite,
            log=log,
            seconds=seconds,
            dataset=dataset,
            evaluation=asdict(eval_cfg),
            lock=lock,
        )
        fit_samplers(Path(run_dir), model.cpu(), data, cfg.sampler, cfg.seed, log=log)
        return finish_run(Path(run_dir), model.cpu(), data, eval_cfg, log=log, seconds=seconds)
    finally:
        lock.release()
