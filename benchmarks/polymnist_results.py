"""The seven models on the PolyMNIST-style preset (docs/results-polymnist.md): every model at its defaults
(`jmvae train --preset polymnist --model M --seed S`), 3 seeds, full MNIST (`jmvae data import` first) and the
backgrounds (`pip install "jmvae[polymnist]"`); runs already finished are kept. Prints the markdown table:
coherence across images given 1-4 images and joint, beside the MoPoE paper's numbers.

    python benchmarks/polymnist_results.py --jobs 2 --root runs/poly          # about 80 minutes on 2 cores
    python benchmarks/polymnist_results.py --root runs/poly --report-only      # the table from the runs there
    python benchmarks/polymnist_results.py --root runs/poly-e20 --models mopoe --extra=--epochs=20
    python benchmarks/polymnist_results.py --root runs/poly-e100 --models mopoe --extra=--epochs=100

A finished run trains on to more passes with `jmvae train --resume --out RUN --epochs N` (the same weights as
`--epochs N` from the start); the minutes row sums history.csv, so it counts every pass.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MODELS = ["jmvae", "telbo", "mvae", "mmvae", "mopoe", "mvtcae", "mmvaeplus"]
PAPER = {"1": 0.66, "4": 0.83}  # MoPoE paper (Sutter et al. 2021), MoPoE on PolyMNIST, as issue 36 quotes it
ROWS = [
    ("coherence given 1 image", ("conditional", "1")),
    ("coherence given 2 images", ("conditional", "2")),
    ("coherence given 3 images", ("conditional", "3")),
    ("coherence given 4 images", ("conditional", "4")),
    ("joint coherence across images, z ~ p(z)", ("joint", "p(z)")),
    ("correctness, digit given (\\|O\\|=1)", ("correctness", "1")),
    ("image -> digit accuracy, q(z\\|all five images)", ("accuracy", "digit")),
    ("training minutes, every pass (one thread, 2 cores shared by 2-4 runs)", ("minutes", "training steps")),
]


def run_dir(root: Path, model: str, seed: int) -> Path:
    return root / f"{model}-s{seed}"


def train(root: Path, model: str, seed: int, extra: list[str]) -> None:
    out = run_dir(root, model, seed)
    if (out / "report.html").exists():
        return
    env = os.environ | {"OMP_NUM_THREADS": "1", "JMVAE_OFFLINE": "1"}
    args = [
        "jmvae",
        "train",
        "--preset",
        "polymnist",
        "--model",
        model,
        "--seed",
        str(seed),
        "--out",
        str(out),
    ]
    with open(f"{out}.log", "w") as log:
        subprocess.run([*args, *extra], env=env, stdout=log, stderr=subprocess.STDOUT, check=True)


def value(metrics: dict, where: tuple[str, str]) -> float:
    kind, key = where
    if kind in ("conditional", "joint"):
        cc = metrics["cross_coherence"]
        return cc["conditional"]["by_size"][key] if kind == "conditional" else cc["joint"][key]
    if kind == "minutes":  # every pass, also those of an earlier command the run was trained on from
        return sum(float(row["seconds"]) for row in metrics["history"]) / 60
    if kind == "correctness":
        return metrics["correctness"]["by_size"][key]
    return metrics["image_to_attribute_accuracy"]["q(z|x)"][key]


def table(root: Path, models: list[str], seeds: int) -> str:
    cells: dict[str, list[str]] = {}
    for m in models:
        found = [run_dir(root, m, s) / "metrics.json" for s in range(seeds)]
        runs = [
            json.loads(p.read_text()) | {"history": list(csv.DictReader((p.parent / "history.csv").open()))}
            for p in found
            if p.exists()
        ]
        for title, where in ROWS:
            vs = [value(r, where) for r in runs]
            digits = 1 if where[0] == "minutes" else 3
            text = "-" if not vs else f"{statistics.fmean(vs):.{digits}f}"
            if len(vs) > 1:
                text += f" ± {statistics.stdev(vs):.{digits}f}"
            cells.setdefault(title, []).append(text)
        cells.setdefault("seeds", []).append(str(len(runs)))
    head = (
        "| | " + " | ".join(m.upper() if m != "mmvaeplus" else "MMVAE+" for m in models) + " | MoPoE paper |"
    )
    lines = [head, "|---" * (len(models) + 2) + "|"]
    for title, _ in [("seeds", None), *ROWS]:
        paper = next(
            (str(v) for k, v in PAPER.items() if title == f"coherence given {k} image{'s' * (k != '1')}"), ""
        )
        lines.append(f"| {title} | " + " | ".join(cells[title]) + f" | {paper} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=Path("runs/poly"))
    p.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument(
        "--extra", action="append", default=[], help="a further train flag, e.g. --extra=--epochs=20"
    )
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args()
    if not a.report_only:
        a.root.mkdir(parents=True, exist_ok=True)
        extra = [part for e in a.extra for part in e.split("=", 1)]
        with ThreadPoolExecutor(a.jobs) as pool:
            jobs = [pool.submit(train, a.root, m, s, extra) for s in range(a.seeds) for m in a.models]
            for j in jobs:
                j.result()
    print(table(a.root, a.models, a.seeds))


if __name__ == "__main__":
    main()
