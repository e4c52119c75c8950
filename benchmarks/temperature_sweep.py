"""Correctness against coverage as the sampling temperature falls: z = mean + T std eps of q(z|given).

Reads finished runs with the evaluation's own code (every query, the cached attribute classifier) at each
temperature and prints the per-|O| means with 95% intervals, plus how many queries miss the evaluation's
targets, and the mean over runs where several are given. T = 1 is what a run's report shows first; lower T
trades the variety of the attributes left free (coverage) for images that show the given ones. `--complete`
draws as `jmvae generate --complete` does: the attributes not given first, from the model.

    RUN=runs/mnist-a-jmvae-z10-seed0
    JMVAE_OFFLINE=1 python benchmarks/temperature_sweep.py $RUN --temperatures 1 0.75 0.5 0.25
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import torch  # noqa: E402

from jmvae.classifier import classifier_for  # noqa: E402
from jmvae.evaluate import correctness_coverage, misses  # noqa: E402
from jmvae.train import load_run  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.75, 0.5, 0.25])
    p.add_argument("--n-per-query", type=int, default=100)
    p.add_argument("--json", help="write every run's means per temperature here")
    p.add_argument(
        "--complete",
        action="store_true",
        help="complete the attributes not given from the model first (generate --complete)",
    )
    args = p.parse_args()
    if any(not t > 0 for t in args.temperatures):
        p.error(f"--temperatures {args.temperatures} (allowed: numbers > 0)")
    table: dict[str, dict[str, dict]] = {}
    for run in args.runs:
        _, data, model = load_run(run)
        clf, _ = classifier_for(data)
        for t in args.temperatures:
            clock = time.perf_counter()
            torch.manual_seed(0)
            m = correctness_coverage(
                model, data, clf, args.n_per_query, temperature=t, complete=args.complete
            )
            corr, cov = m["correctness"], m["coverage"]
            sizes = sorted(corr["by_size"], key=int, reverse=True)
            missed = sum(bool(misses(r)) for r in m["queries"])
            table.setdefault(run, {})[f"{t:g}"] = {"correctness": corr["by_size"], "coverage": cov["by_size"]}
            parts = [
                f"|O|={k}: {corr['by_size'][k]:.3f} [{corr['by_size_interval'][k][0]:.3f}, "
                f"{corr['by_size_interval'][k][1]:.3f}]"
                + (f" cov {cov['by_size'][k]:.3f}" if k in cov["by_size"] else "")
                for k in sizes
            ]
            print(
                f"{run} T={t:g}{' completed' if args.complete else ''}: "
                + "; ".join(parts)
                + f"; queries missing the targets {missed} of "
                f"{len(m['queries'])} ({time.perf_counter() - clock:.0f} s)",
                flush=True,
            )
    if len(args.runs) > 1:
        for t in (f"{t:g}" for t in args.temperatures):
            rows = [table[r][t] for r in args.runs]
            parts = []
            for k in sorted(rows[0]["correctness"], key=int, reverse=True):
                c = [r["correctness"][k] for r in rows]
                part = f"|O|={k}: {statistics.fmean(c):.3f} ± {statistics.stdev(c):.3f}"
                if k in rows[0]["coverage"]:
                    v = [r["coverage"][k] for r in rows]
                    part += f" cov {statistics.fmean(v):.3f} ± {statistics.stdev(v):.3f}"
                parts.append(part)
            print(f"mean ± std over {len(rows)} runs, T={t}: " + "; ".join(parts))
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
