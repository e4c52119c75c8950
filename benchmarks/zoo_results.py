"""The model zoo side by side (docs/results-zoo.md): the five objectives on position-digit, fully and partly
labelled.

Every model at its defaults (`jmvae train --model M`), 3 seeds, on full MNIST (`jmvae data import` first),
read by the attribute classifier at 500 images per query; then every model with the attributes of only 10% and
1% of the training examples (`--label-fraction`). Runs are the query sweep's (benchmarks/sweep_queries.py:
same evaluation flags, same run layout runs/sweep/<source>/<config>-seed<seed>, finished runs kept), so the
JMVAE row reuses the sweep's `default-float32` runs, which are the same configuration. Every run here was
recorded in float32 and keeps it (`--precision float32`; the default since multiplies in bfloat16 on CPUs that
have it, at the same quality: docs/results-queries.md).

    python benchmarks/zoo_results.py --jobs 2                # everything (about 80 minutes on 2 cores)
    python benchmarks/zoo_results.py --report-only           # tables from the runs there
"""

from __future__ import annotations

import argparse
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sweep_queries as sweep

MODELS = ["jmvae", "telbo", "mvae", "mmvae", "mopoe", "mvtcae", "mmvaeplus"]
FRACTIONS = ["0.1", "0.01"]
ZOO = {"default-float32": sweep.CONFIGS["default-float32"]}  # jmvae's default, in float32
ZOO |= {
    f"zoo-{m}": (f"{m.upper()} at its defaults", ["--model", m, *sweep.F32]) for m in MODELS if m != "jmvae"
}
ZOO |= {
    f"labels{f}-{m}": (
        f"{m.upper()} at its defaults, attributes of {float(f):.0%} of the training examples",
        ["--model", m, "--label-fraction", f, *sweep.F32],
    )
    for f in FRACTIONS
    for m in MODELS
}
sweep.CONFIGS.update(ZOO)


def config_of(model: str, fraction: str = "1") -> str:
    if fraction != "1":
        return f"labels{fraction}-{model}"
    return "default-float32" if model == "jmvae" else f"zoo-{model}"


def cell(r: dict | None, key: str, digits: int = 3) -> str:
    if r is None:
        return "-"
    spread = f" ± {r[key + ' std']:.{digits}f}" if r["n"] > 1 else ""
    return f"{r[key]:.{digits}f}{spread}"


def tables(rows: dict, seeds_full: int) -> str:
    cols = [
        ("correctness, both attributes given (\\|O\\|=2)", "correctness |O|=2", 3),
        ("correctness, one given (\\|O\\|=1)", "correctness |O|=1", 3),
        ("coverage of the other attribute, \\|O\\|=1", "coverage |O|=1", 3),
        ("joint coherence (10,000 z ~ p(z))", "joint coherence", 3),
        ("image -> attribute accuracy, q(z\\|x)", "image->attribute accuracy", 3),
        ("log p(x,y), K = 1,000 (nats)", "log p(x,y)", 1),
    ]
    out = [
        "| full MNIST, fully labelled | "
        + " | ".join(m.upper() if m != "mopoe" else "MoPoE" for m in MODELS)
        + " |",
        "|---|" + "---|" * len(MODELS),
    ]
    for label, key, digits in cols:
        out.append(
            f"| {label} | " + " | ".join(cell(rows.get(config_of(m)), key, digits) for m in MODELS) + " |"
        )
    out += [
        "",
        "| full MNIST, share of labelled training examples | "
        + " | ".join(m.upper() if m != "mopoe" else "MoPoE" for m in MODELS)
        + " |",
        "|---|" + "---|" * len(MODELS),
    ]
    for fraction in ["1", *FRACTIONS]:
        for label, key, digits in cols[:4]:
            out.append(
                f"| {float(fraction):.0%}: {label} | "
                + " | ".join(cell(rows.get(config_of(m, fraction)), key, digits) for m in MODELS)
                + " |"
            )
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="runs/sweep")
    p.add_argument("--source", default="full")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--label-seeds", nargs="*", type=int, default=[0])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    root = Path(args.root)
    full = [config_of(m) for m in MODELS]
    partial = [config_of(m, f) for f in FRACTIONS for m in MODELS]
    if not args.report_only:
        jobs = [(args.source, n, s) for s in args.seeds for n in full]
        jobs += [(args.source, n, s) for s in args.label_seeds for n in partial]
        with ThreadPoolExecutor(args.jobs) as pool:
            for line in pool.map(lambda j: sweep.train(root, *j, []), jobs):
                print(line, flush=True)
    rows = {r["config"]: r for r in sweep.summarise(root, full + partial, [args.source], args.seeds)}
    for name, r in rows.items():
        worst = min(r["worst query"].split("; "), key=lambda w: float(w.rsplit(" ", 1)[1]))
        print(f"{name:22} n={r['n']}  worst (query, seed): {worst}")
    print(tables(rows, len(args.seeds)))  # docs/results-zoo.md holds these tables with what they show
    print(f"{statistics.fmean(r['n'] for r in rows.values()):.1f} seeds per row on average")


if __name__ == "__main__":
    main()
