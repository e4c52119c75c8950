"""report.html: one self-contained page per run (figures inlined as base64), readable from disk offline."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from . import coherence
from .evaluate import (
    CORRECTNESS_TARGET,
    COVERAGE_TARGET,
    classifier_text,
    columns,
    headline,
    misses,
    percent,
    readings_text,
    size_rows,
    with_interval,
)
from .runs import write_text

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#444;margin-top:.3em}
code,pre{background:#f6f6f6;padding:.1em .3em}pre{padding:.6em;overflow-x:auto;white-space:pre-wrap}
tr.fails td{background:#fde8e8}td.status{font-weight:bold}tr.fails td.status{color:#b00020}"""


def _cell(v: Any) -> str:
    """One <td>: numbers right-aligned, a (text, css class) pair with its class, anything else as text."""
    if isinstance(v, tuple):
        return f'<td class="{v[1]}">{html.escape(str(v[0]))}</td>'
    if isinstance(v, list) and all(isinstance(x, float) for x in v):
        return f'<td class="num">[{", ".join(f"{x:.4g}" for x in v)}]</td>'
    if isinstance(v, float):
        return f'<td class="num">{v:.4g}</td>'
    if isinstance(v, int):
        return f'<td class="num">{v}</td>'
    return f"<td>{html.escape(str(v))}</td>"


def table(rows: list[tuple[str, Any]], header: tuple[str, str] = ("name", "value")) -> str:
    body = "".join(f"<tr><td>{html.escape(k)}</td>{_cell(v)}</tr>" for k, v in rows)
    return f"<table><tr><th>{header[0]}</th><th>{header[1]}</th></tr>{body}</table>"


def grid(header: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    """A table with a header row; classes[i], if given, is the class of row i (e.g. "fails")."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        (f'<tr class="{c}">' if c else "<tr>") + "".join(map(_cell, row)) + "</tr>"
        for row, c in zip(rows, classes or [""] * len(rows))
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def headline_table(metrics: dict) -> str:
    """Correctness and coverage per |O| with 95% intervals (one column per sampler evaluated), then
    the other headline numbers; likelihoods with the standard error of their subsample mean."""
    temps = list(columns(metrics))
    header = ["metric"] + [f"{t} [95% interval]" for t in temps]
    rows: list[list[Any]] = [[name, *(cells.get(t, "") for t in temps)] for name, cells in size_rows(metrics)]
    se = metrics.get("log_likelihood_standard_error", {})
    for name, value in headline(metrics).items():
        if not name.startswith(("correctness", "coverage")):
            cell = f"{value:.4g} ± {se[name]:.2g}" if name in se else value
            rows.append([name, cell, *[""] * (len(temps) - 1)])
    return grid(header, rows)


def queries_section(metrics: dict) -> str:
    """Every query: what it asked for, what the classifier read back, and whether it misses the targets."""
    rows = metrics.get("queries")
    if not rows:
        return ""
    others = {
        title: m for title, m in columns(metrics).items() if m is not metrics
    }  # beside the headline T = 1
    failing = [r for r in rows if misses(r)]
    header = [
        "status",
        "query",
        "n",
        "correctness [95%]",
        "all given shown [95%]",
        "classifier read",
        "coverage [95%]",
    ]
    header += [f"correctness, {t}" for t in others]
    table_rows, classes = [], []
    for r in rows:
        missed = misses(r)
        at_others = [
            next((q for q in m.get("queries", []) if q["label"] == r["label"]), None) for m in others.values()
        ]
        table_rows.append(
            [
                (f"fails: {', '.join(missed)}" if missed else "ok", "status"),
                r["label"],
                r["n"],
                with_interval(r["correctness"], r["correctness_interval"]),
                f"{percent(r['all_correct'])} [{percent(r['all_correct_interval'][0])}, "
                f"{percent(r['all_correct_interval'][1])}]",
                readings_text(r),
                with_interval(r["coverage"], r["coverage_interval"]) if "coverage" in r else "(none free)",
                *(with_interval(q["correctness"], q["correctness_interval"]) if q else "" for q in at_others),
            ]
        )
        classes.append("fails" if missed else "ok")
    n = sorted({r["n"] for r in rows})
    return (
        "<h2>Queries</h2>"
        f"<p><b>{len(failing)} of {len(rows)} queries miss the targets</b> (correctness &ge; "
        f"{CORRECTNESS_TARGET}, coverage &ge; {COVERAGE_TARGET}) at {' / '.join(map(str, n))} images per "
        "query (T = 1); their rows say <b>fails</b>. Each query draws its images from q(z|given) and the "
        "attribute classifier reads them: correctness is the mean share of the given attributes it reads "
        "back, with a 95% Wilson interval; &ldquo;all given shown&rdquo; is the share of images that show "
        "every given attribute; &ldquo;classifier read&rdquo; is how it read each attribute in those "
        "images; coverage (1 - JSD between the spread of the attributes not given and uniform) has a 95% "
        "bootstrap interval.</p>" + grid(header, table_rows, classes)
    )


def flatten(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested metrics -> (dotted name, value) rows; a list of rows (the queries) is named by their labels."""
    rows: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict):
            rows += flatten(v, f"{prefix}{k}.")
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for i, item in enumerate(v):
                rows += flatten(
                    {key: x for key, x in item.items() if key != "label"},
                    f"{prefix}{k}[{item.get('label', i)}].",
                )
        else:
            rows.append((f"{prefix}{k}", v))
    return rows


def time_section(metrics: dict) -> str:
    """Where this run's wall time went (the report's own writing is in metrics.json, not here)."""
    phases = metrics["run_seconds"]
    inside = ", ".join(f"{k} {v:.1f} s" for k, v in metrics.get("seconds", {}).items() if k != "total")
    rows = [
        (k + (f" ({inside})" if k == "evaluation" and inside else ""), f"{v:.1f} s")
        for k, v in phases.items()
    ]
    return "<h2>Time</h2>" + table(rows, ("phase", "wall time"))


def data_card_section(config: dict) -> str:
    """The data: image size and colour, and per attribute its kind, value counts and missing share."""
    schema, card = config.get("schema"), config.get("data_card")
    if not schema or not card:
        return ""
    images = schema.get("images") or {schema["image"]["name"]: schema["image"]}  # "image": an older run's
    rows = []
    for name, c in card.items():
        d = schema["attributes"].get(name, {})
        counts = ", ".join(f"{k}: {v:,}" for k, v in c["counts"].items())
        if c["kind"] == "continuous":
            counts = (
                (
                    f"mean {d.get('mean', 0):.4g}, std {d.get('std', 0):.4g}, range {d['range'][0]:.4g} to "
                    f"{d['range'][1]:.4g}; nearest level: {counts}"
                )
                if "range" in d
                else counts
            )
        rows.append([name, c["kind"], counts, percent(c["missing_train"]), percent(c["missing_test"])])
    return (
        f"<h2>Data</h2><p>{config['n_train']:,} training and {config['n_test']:,} test examples; "
        + "; ".join(
            f"{'images ' if len(images) == 1 else 'image ' + html.escape(name) + ' '}"
            f"{im['height']}x{im['width']}, {'grey' if im['channels'] == 1 else 'colour'} "
            f"({html.escape(im['likelihood'])} likelihood"
            f"{', ' + html.escape(im['network']) + ' networks' if 'network' in im else ''}"
            f"{', ' + html.escape(im['decoder']) + ' decoder' if im.get('decoder', 'conv') != 'conv' else ''}"
            ")"
            for name, im in images.items()
        )
        + ".</p>"
        + grid(["attribute", "kind", "training values", "missing (train)", "missing (test)"], rows)
    )


def cross_coherence_text(metrics: dict) -> str:
    """What the coherence across images means, for data with several images per example."""
    if "cross_coherence" not in metrics:
        return ""
    cc = metrics["cross_coherence"]
    return (
        "<p>Coherence across images (the MoPoE paper's): each image has a reader of its own, trained on that "
        f"image alone (accuracy on real test images: {html.escape(coherence.reader_text(metrics))}). Given "
        "k image(s): z ~ q(z | those images) of a test example, the other images decoded and each read by "
        "its own reader; the share that show the example's attributes, mean over every subset of k images "
        f"({cc['conditional']['examples']:,} test examples each; 95% bootstrap interval over examples). "
        "Joint coherence across images: the share of z ~ p(z) (or a fitted sampler) whose images all "
        "readers read alike.</p>"
        + grid(
            ["given images", "coherence [95% interval]"],
            [
                [k, with_interval(v, cc["conditional"]["by_size_interval"].get(k))]
                for k, v in cc["conditional"]["by_size"].items()
            ],
        )
    )


def write_report(run_dir: Path, config: dict, metrics: dict, figures: list, history: list[dict]) -> Path:
    """Write run_dir/report.html from the run's config, metrics, figures (FigureInfo list) and history."""
    run_dir = Path(run_dir)
    train = config["train"]
    last = history[-1] if history else {}
    losses = [(k.replace("_", " ", 1), v) for k, v in last.items() if k.startswith(("train_", "test_"))]
    parts = [
        f"<h1>jmvae run <code>{html.escape(run_dir.name)}</code></h1>",
        f"<p><b>{html.escape(train['model'].upper())}</b> on "
        f"<b>{html.escape(str(train.get('preset') or train.get('data')))}</b>, z = {train['z_dim']}, "
        f"{config['total_steps']} steps, seed {train['seed']}. Data: {html.escape(config['mnist_source'])}; "
        f"{config['n_train']} training and {config['n_test']} test images.</p>",
        f"<h2>Objective</h2><pre>{html.escape(config['objective'])}</pre>",
        data_card_section(config),
    ]
    if metrics:
        clf = classifier_text(metrics)
        settings = metrics["settings"]
        n_test = settings.get("test_examples", 0)
        used = settings.get("likelihood_examples", n_test)
        on = (
            f"on {used:,} of {n_test:,} test images (seeded subsample)"
            if used < n_test
            else f"on all {n_test:,} test images"
        )
        low = "".join(
            f" and at T = {t} (z = mean + T std eps: fewer images from the posterior's tails)"
            for t in metrics.get("at_temperature", {})
        )
        low += "".join(
            f"; completed at T = {t} (the attributes not given drawn first from p(a|z), z ~ q(z|given), "
            f"then z from q(z | given and drawn))"
            for t in metrics.get("completed", {})
        )
        parts.append(
            "<h2>Metrics</h2>"
            f"<p>Read generated images with an attribute classifier whose accuracy on real test images is "
            f"{html.escape(clf)}; no metric that uses it can be trusted beyond that. Correctness: share of "
            "the given attributes that images generated from q(z|given) show (|O| = number given), mean "
            f"over queries, {settings.get('n_per_query', '?')} images per query, at temperature T = 1{low}. "
            "Coverage: 1 - JSD between the spread of the attributes not given and uniform. Intervals are "
            "95%: Wilson for correctness (conservative for |O| > 1), bootstrap for coverage. "
            "Image -> attribute: argmax p(a|z) at the mean of q(z|x). Joint coherence: z ~ p(z) (or a fitted "
            "sampler's z: a density fitted to the training codes, `jmvae fit-sampler`) whose image "
            f"the classifier reads as p(a|z) says. Likelihoods {on}: importance sampled (K = "
            f"{settings['k']}), nats per test example, higher is better, &plusmn; the standard error of the "
            "mean over those images.</p>"
            + cross_coherence_text(metrics)
            + headline_table(metrics)
            + queries_section(metrics)
            + "<details><summary>every number in metrics.json</summary>"
            + table(flatten(metrics))
            + "</details>"
        )
    if metrics.get("run_seconds"):
        parts.append(time_section(metrics))
    if losses:
        parts.append(
            f"<h2>Final losses (epoch {last.get('epoch')}, step {last.get('step')}; nats per example)</h2>"
            + table(losses, ("term", "value"))
        )
    if (run_dir / "explore.html").exists():
        parts.append(
            '<p><a href="explore.html"><b>Explore the latent space</b></a> (explore.html: move through z '
            "and watch the image and the attributes change; ask q(z | attributes) for any values).</p>"
        )
    parts.append("<h2>Figures</h2>")
    for f in figures:
        data = base64.b64encode((run_dir / "figures" / f.file).read_bytes()).decode()
        parts.append(
            f'<figure><h3>{html.escape(f.title)}</h3><img alt="{html.escape(f.title)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{html.escape(f.caption)}</figcaption></figure>'
        )
    parts.append(f"<h2>Config</h2><pre>{html.escape(json.dumps(config, indent=2))}</pre>")
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>jmvae {html.escape(run_dir.name)}'
        f"</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n"
    )
    write_text(run_dir / "report.html", page)
    return run_dir / "report.html"
