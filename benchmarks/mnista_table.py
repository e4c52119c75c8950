"""Not a timing: finished MNIST-A runs side by side, grouped by objective, mean ± std over their seeds
(docs/results-mnist-a.md, the table of every model at two passes).

Each run is a `jmvae train --preset mnist-a` directory; runs of one model with the same passes, learning rate
and evaluation settings form one row. Every number is the run's own metrics.json (its attribute classifier,
its images per query), so rows compare when their runs were evaluated alike (the script says when they were
not).

    for m in jmvae telbo mopoe mmvae; do for s in 0 1 2; do out=runs/mnista-zoo/$m-s$s
        jmvae train --preset mnist-a --model $m --epochs 2 --n-per-query 100 --seed $s --out $out
    done; done                                  # and --model mvae --lr 3e-4 (at 1e-3 its loss goes nan)
    # (the table's JMVAE rows: --no-shared-trunk, the preset's networks before 2026-12-05)
    python benchmarks/mnista_table.py runs/mnista-zoo/*            # add --per-seed for one row per run
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import bad_input

ATTRIBUTES = ["digit", "scale", "orientation", "location"]


def read_run(run: Path) -> dict:
    """The numbers of one finished run, and the settings that decide which row it joins."""
    if not (run / "metrics.json").exists():
        bad_input(f"{run}: no metrics.json (allowed: finished `jmvae train` runs)")
    metrics, config = (json.loads((run / name).read_text()) for name in ("metrics.json", "config.json"))
    train = config["train"]
    if train["preset"] != "mnist-a":
        bad_input(f"{run}: preset {train['preset']} (allowed: mnist-a)")
    completed = metrics.get("completed", {})
    temperature = next(iter(completed), None)
    return {
        "run": run.name,
        "seed": train["seed"],
        "key": (
            train["model"],
            config["epochs"],
            train["lr"],
            train.get("split") or "iid",
            bool(train.get("shared_trunk")),
        ),
        "evaluation": metrics["settings"]["n_per_query"],
        "correctness": [metrics["correctness"]["by_size"][str(k)] for k in (4, 3, 2, 1)],
        "coverage": [metrics["coverage"]["by_size"][str(k)] for k in (3, 2, 1)],
        "one given": [metrics["correctness"]["by_subset"]["{" + a + "}"] for a in ATTRIBUTES],
        "completed": [completed[temperature]["correctness"]["by_size"][str(k)] for k in (4, 3, 2, 1)]
        if temperature
        else [float("nan")] * 4,
        "temperature": temperature,
        "log p(x,y)": [metrics["log_likelihood"]["log p(x,y)"]],
        "joint coherence": [metrics["joint_coherence"]],
        "training s": [metrics["run_seconds"]["training steps"]],
    }


def cell(rows: list[dict], key: str, digits: int = 3) -> str:
    """Each component's mean over the rows, then its std where there are several rows."""
    columns = list(zip(*(r[key] for r in rows)))
    if any(v != v for c in columns for v in c):
        return "-"  # not measured in every run (e.g. no completed pass)
    means = " / ".join(f"{statistics.fmean(c):.{digits}f}" for c in columns)
    if len(rows) < 2:
        return means
    return f"{means} (± {' / '.join(f'{statistics.stdev(c):.{digits}f}' for c in columns)})"


def table(groups: dict[tuple, list[dict]]) -> str:
    head = [
        "model, passes, lr, split",
        "seeds",
        "correctness |O| = 4 / 3 / 2 / 1",
        "coverage |O| = 3 / 2 / 1",
        "one attribute given: digit / scale / orientation / location",
        "completed: correctness |O| = 4 / 3 / 2 / 1",
        "log p(x,y)",
        "joint coherence",
        "training s",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (model, epochs, lr, split, *_), rows in groups.items():
        temperature = {r["temperature"] for r in rows}
        lines.append(
            "| "
            + " | ".join(
                [
                    f"{model}, {epochs}, {lr:g}, {split}",
                    " ".join(str(r["seed"]) for r in rows),
                    cell(rows, "correctness"),
                    cell(rows, "coverage"),
                    cell(rows, "one given"),
                    cell(rows, "completed")
                    + (
                        f" (T = {temperature.pop()})"
                        if temperature != {None} and len(temperature) == 1
                        else ""
                    ),
                    cell(rows, "log p(x,y)", 1),
                    cell(rows, "joint coherence"),
                    cell(rows, "training s", 0),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--per-seed", action="store_true", help="one row per run instead of one per model")
    args = ap.parse_args()
    groups: dict[tuple, list[dict]] = {}  # (model, passes, lr, split[, run]) -> its runs
    for r in sorted((read_run(run) for run in args.runs), key=lambda r: (r["key"], r["seed"])):
        groups.setdefault((*r["key"], r["run"]) if args.per_seed else r["key"], []).append(r)
    for key, rows in groups.items():
        if len({r["evaluation"] for r in rows}) > 1:
            print(
                f"note: {key[0]}'s runs were evaluated at different images per query: "
                f"{sorted({r['evaluation'] for r in rows})}"
            )
    print(table(groups))


if __name__ == "__main__":
    main()
