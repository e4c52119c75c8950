"""Joint coherence from p(z) and from each post-hoc sampler, every model (docs/results-samplers.md).

Uses the zoo's finished runs (benchmarks/zoo_results.py trains them: full MNIST position-digit, each model at
its defaults, 3 seeds); for each run it fits every sampler at its defaults (`jmvae fit-sampler`, the run's
seed), then reads 10,000 decoded draws of each with the attribute classifier, as `jmvae evaluate` does. The
fitted samplers are stored in the runs. Add `--codes` to compare what the samplers are fitted to.

    python benchmarks/zoo_results.py --jobs 2 --label-seeds          # the 15 runs (about an hour)
    python benchmarks/sampler_results.py --root runs/sweep --codes auto image-mean joint-mean  # fits, table
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from common import cpu_model

from jmvae.classifier import classifier_for
from jmvae.evaluate import correctness_coverage, joint_coherence
from jmvae.runs import write_json
from jmvae.samplers import CODES, SAMPLERS, SamplerConfig, fit_sampler, save_sampler
from jmvae.train import load_run

MODELS = {"jmvae": "default-float32"} | {
    m: f"zoo-{m}" for m in ("telbo", "mvae", "mmvae", "mopoe", "mvtcae", "mmvaeplus")
}
DRAWS = 10_000


def measure(run: Path, codes: list[str], seed: int) -> dict:
    """{"p(z)": coherence, "<kind> <codes>": coherence, "seconds": {...}} for one run (cached beside it)."""
    cache = run / "sampler_coherence.json"
    done = json.loads(cache.read_text()) if cache.is_file() else {}
    wanted = ["p(z)"] + [f"{k} {c}" for c in codes for k in SAMPLERS]
    if all(w in done for w in [*wanted, "conditioned auto"]):
        return done
    _, data, model = load_run(run)
    clf, _ = classifier_for(data)
    torch.manual_seed(seed)
    done["p(z)"] = joint_coherence(model, data, clf, DRAWS)
    done.setdefault("seconds", {})
    for c in codes:
        for kind in SAMPLERS:
            key = f"{kind} {c}"
            if key in done:
                continue
            t0 = time.perf_counter()
            sampler, scores = fit_sampler(model, data, SamplerConfig(kind=kind, codes=c, seed=seed))
            done["seconds"][key] = time.perf_counter() - t0
            if c == SamplerConfig.codes:
                save_sampler(run, sampler, scores)  # the run keeps the default fit, as `jmvae fit-sampler`
            torch.manual_seed(seed)
            done[key] = joint_coherence(model, data, clf, DRAWS, sampler)
            print(f"{run.name:28} {key:16} {done[key]:.4f}  (p(z) {done['p(z)']:.4f})", flush=True)
    if "conditioned auto" not in done:  # correctness and coverage per |O|: q(z|given) and gmm (auto codes)
        metrics = json.loads((run / "metrics.json").read_text())
        sampler, _ = fit_sampler(model, data, SamplerConfig(kind="gmm", seed=seed))
        done["auto codes"] = sampler.cfg.codes
        torch.manual_seed(seed)
        fitted = correctness_coverage(model, data, clf, n=metrics["settings"]["n_per_query"], sampler=sampler)
        done["conditioned auto"] = {
            "q(z|given)": {k: metrics[k]["by_size"] for k in ("correctness", "coverage")},
            "gmm given": {k: fitted[k]["by_size"] for k in ("correctness", "coverage")},
        }
    write_json(cache, done)
    return done


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="runs/sweep")
    p.add_argument("--source", default="full")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--codes", nargs="+", choices=CODES, default=[SamplerConfig.codes])
    args = p.parse_args()
    print(
        f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}"
    )
    results: dict[str, list[dict]] = {}
    for model, config in MODELS.items():
        for seed in args.seeds:
            run = Path(args.root) / args.source / f"{config}-seed{seed}"
            if (run / "metrics.json").is_file():
                results.setdefault(model, []).append(measure(run, args.codes, seed))
    columns = ["p(z)"] + [f"{k} {c}" for c in args.codes for k in SAMPLERS]
    print(
        f"\n| joint coherence ({DRAWS:,} draws), mean ± std over seeds [lowest] | "
        + " | ".join(columns)
        + " |"
    )
    print("|---|" + "---|" * len(columns))
    for model, rows in results.items():
        cells = []
        for col in columns:
            values = [r[col] for r in rows]
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            cells.append(f"{statistics.fmean(values):.3f}{spread} [{min(values):.3f}]")
        auto = "/".join(sorted({r.get("auto codes", "?") for r in rows}))
        print(f"| {model} ({len(rows)} seeds; auto: {auto}) | " + " | ".join(cells) + " |")
    print("\n| correctness and coverage, mean ± std over seeds | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for how in ("q(z|given)", "gmm given"):
        for metric, size in (("correctness", "2"), ("correctness", "1"), ("coverage", "1")):
            cells = []
            for rows in results.values():
                values = [r["conditioned auto"][how][metric][size] for r in rows]
                spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
                cells.append(f"{statistics.fmean(values):.3f}{spread}")
            print(f"| {metric} \\|O\\|={size}, {how} | " + " | ".join(cells) + " |")
    fit = {
        col: [r["seconds"][col] for rows in results.values() for r in rows if col in r.get("seconds", {})]
        for col in columns[1:]
    }
    print(
        "\nfit seconds (mean over runs): "
        + ", ".join(f"{col} {statistics.fmean(v):.1f}" for col, v in fit.items() if v)
    )


if __name__ == "__main__":
    main()
