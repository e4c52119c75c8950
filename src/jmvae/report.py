"""report.html: one self-contained page per run (figures inlined as base64), readable from disk offline."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from .evaluate import headline
from .runs import write_text

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#444;margin-top:.3em}
code,pre{background:#f6f6f6;padding:.1em .3em}pre{padding:.6em;overflow-x:auto;white-space:pre-wrap}"""


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f'<td class="num">{v:.4g}</td>'
    if isinstance(v, int):
        return f'<td class="num">{v}</td>'
    return f"<td>{html.escape(str(v))}</td>"


def table(rows: list[tuple[str, Any]], header: tuple[str, str] = ("name", "value")) -> str:
    body = "".join(f"<tr><td>{html.escape(k)}</td>{_cell(v)}</tr>" for k, v in rows)
    return f"<table><tr><th>{header[0]}</th><th>{header[1]}</th></tr>{body}</table>"


def flatten(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested metrics -> (dotted name, value) rows."""
    rows: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict):
            rows += flatten(v, f"{prefix}{k}.")
        else:
            rows.append((f"{prefix}{k}", v))
    return rows


def write_report(run_dir: Path, config: dict, metrics: dict, figures: list, history: list[dict]) -> Path:
    """Write run_dir/report.html from the run's config, metrics, figures (FigureInfo list) and history."""
    run_dir = Path(run_dir)
    train = config["train"]
    last = history[-1] if history else {}
    losses = [(k.replace("_", " ", 1), v) for k, v in last.items() if k.startswith(("train_", "test_"))]
    parts = [f"<h1>jmvae run <code>{html.escape(run_dir.name)}</code></h1>",
             f"<p><b>{html.escape(train['model'].upper())}</b> on <b>{html.escape(train['preset'])}</b>, "
             f"z = {train['z_dim']}, {config['total_steps']} steps, seed {train['seed']}. "
             f"MNIST source: {html.escape(config['mnist_source'])}; {config['n_train']} training and "
             f"{config['n_test']} test images.</p>",
             f"<h2>Objective</h2><pre>{html.escape(config['objective'])}</pre>"]
    if metrics:
        clf = ", ".join(f"{k} {v:.3f}" for k, v in metrics["classifier_test_accuracy"].items())
        parts.append("<h2>Metrics</h2>"
                     f"<p>Read generated images with an attribute classifier whose accuracy on real test images is "
                     f"{html.escape(clf)}; no metric that uses it can be trusted beyond that. Correctness: share of "
                     f"the given attributes that images generated from q(z|given) show (|O| = number given). "
                     f"Coverage: 1 - JSD between the spread of the attributes not given and uniform. "
                     f"Image -> attribute: argmax p(a|z) at the mean of q(z|x). Joint coherence: z ~ p(z) whose image "
                     f"the classifier reads as p(a|z) says. Likelihoods: importance sampled (K = "
                     f"{metrics['settings']['k']}), nats per test example, higher is better.</p>"
                     + table(list(headline(metrics).items()), ("metric", "value"))
                     + "<details><summary>every number in metrics.json</summary>" + table(flatten(metrics)) + "</details>")
    if losses:
        parts.append(f"<h2>Final losses (epoch {last.get('epoch')}, step {last.get('step')}; nats per example)</h2>"
                     + table(losses, ("term", "value")))
    parts.append("<h2>Figures</h2>")
    for f in figures:
        data = base64.b64encode((run_dir / "figures" / f.file).read_bytes()).decode()
        parts.append(f'<figure><h3>{html.escape(f.title)}</h3><img alt="{html.escape(f.title)}" '
                     f'src="data:image/png;base64,{data}"><figcaption>{html.escape(f.caption)}</figcaption></figure>')
    parts.append(f"<h2>Config</h2><pre>{html.escape(json.dumps(config, indent=2))}</pre>")
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>jmvae {html.escape(run_dir.name)}'
            f"</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")
    write_text(run_dir / "report.html", page)
    return run_dir / "report.html"
