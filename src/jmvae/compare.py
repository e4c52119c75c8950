"""`jmvae compare`: one table of headline metrics across runs, mean ± std over seeds of one config."""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import asdict
from pathlib import Path

from .config import MODEL_OPTIONS, read_json, require_run, run_config
from .errors import UserError
from .evaluate import headline
from .models import options
from .runs import FINISHED

IGNORED = {"seed", "device"}  # settings that do not make a different experiment


def load(run: str | Path) -> tuple[dict, dict]:
    run_dir = require_run(run, finished=True)
    metrics = read_json(run_dir / FINISHED, ": run `jmvae evaluate` again")
    try:
        # every field, so runs recorded before a field existed compare with runs after it
        return asdict(run_config(run_dir)), headline(metrics)
    except (KeyError, TypeError, AttributeError):
        raise UserError(
            f"{run_dir / FINISHED} is not jmvae metrics (allowed: the file `jmvae evaluate` writes)"
        ) from None


def group(runs: list[str | Path]) -> list[dict]:
    """Rows: one per config (seeds pooled), with n, and mean and std of every headline metric."""
    seen: dict[Path, str] = {}
    for run in runs:
        if Path(run).resolve() in seen:
            raise UserError(f"run {run} given twice (as {seen[Path(run).resolve()]}; allowed: each run once)")
        seen[Path(run).resolve()] = str(run)
    groups: dict[str, list[tuple[dict, dict]]] = {}
    for run in runs:
        config, metrics = load(run)
        key = json.dumps({k: v for k, v in config.items() if k not in IGNORED}, sort_keys=True)
        groups.setdefault(key, []).append((config, metrics))
    configs = [json.loads(k) for k in groups]
    presets = sorted({c.get("preset") for c in configs})
    if len(presets) > 1:
        raise UserError(
            f"runs of presets {', '.join(presets)} (allowed: runs of one preset: their metrics differ)"
        )
    varying = [
        k
        for k in configs[0]
        if len({json.dumps(c[k]) for c in configs}) > 1 and not _same_where_taken(k, configs)
    ]
    varying = varying or ["model"]
    rows = []
    for config, members in zip(configs, groups.values()):
        row = {
            "config": " ".join(f"{k}={config[k]}" for k in varying),
            "n": len(members),
            "seeds": ",".join(str(c["seed"]) for c, _ in members),
        }
        for name in dict.fromkeys(
            name for _, m in members for name in m
        ):  # runs from before a metric lack it
            values = [m[name] for _, m in members if name in m]
            row[name] = statistics.fmean(values)
            row[name + " std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def _same_where_taken(key: str, configs: list[dict]) -> bool:
    """A model option that differs only because some of the models do not take it (alpha: 1 for JMVAE, None
    for TELBO) says nothing the model name does not."""
    if key not in MODEL_OPTIONS:
        return False
    return len({json.dumps(c[key]) for c in configs if key in options(c["model"])}) <= 1


def keys(rows: list[dict]) -> list[str]:
    """Every column of any row, in first-seen order: a run from before a metric lacks its column."""
    return list(dict.fromkeys(k for r in rows for k in r))


def format_table(rows: list[dict]) -> str:
    metrics = [k for k in keys(rows) if k not in ("config", "n", "seeds") and not k.endswith(" std")]
    body = [
        [m]
        + [
            "" if m not in r else f"{r[m]:.4g} ± {r[m + ' std']:.2g}" if r["n"] > 1 else f"{r[m]:.4g}"
            for r in rows
        ]
        for m in metrics
    ]
    header = ["metric"] + [f"{r['config']} (n={r['n']})" for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    fmt = lambda line: "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))
    )
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, body)])


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys(rows))
        writer.writeheader()
        writer.writerows(rows)
