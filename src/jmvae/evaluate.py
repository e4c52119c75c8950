"""Metrics of a trained model, defined as in the JMVAE and TELBO papers.

- Correctness and coverage: Vedantam et al. 2018 ("Generative Models of Visually Grounded Imagination",
  section 4, the "3 C's"): for every query y_O (a non-empty subset O of attributes with values seen in the
  test set) draw images from q(z|y_O), read them with an attribute classifier; correctness = 1 - mean share
  of wrong given attributes; coverage = 1 - JSD(histogram of each unspecified attribute, uniform).
- Image -> attribute accuracy and joint coherence: cross-modal and joint generation read back by p(a|z)
  and by the classifier.
- Likelihoods: Suzuki et al. 2016 ("Joint Multimodal Learning with Deep Generative Models", section 4.2),
  importance sampling with K samples: log p(x,y), log p(x) and log p(x|y) with proposal q(z|x,y), and
  log p(x) with proposal q(z|x).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch.distributions import Normal

from .classifier import AttributeClassifier, classifier_for
from .data.attributes import AttributeDataset, batches, parse_assignments
from .gaussian import log_density, standard_normal
from .models import MultimodalVAE


@dataclass
class EvalConfig:
    n_per_query: int = 10          # images drawn per correctness/coverage query
    k: int = 1000                  # importance samples per test example
    coherence_draws: int = 10_000  # z ~ p(z) for joint coherence
    seed: int = 0


# -- image -> attributes ----------------------------------------------------------------------------------
@torch.no_grad()
def attribute_accuracy(model: MultimodalVAE, data: AttributeDataset, given: tuple[str, ...], chunk: int = 4096) -> dict[str, float]:
    """Share of test examples whose attribute a equals argmax_a p(a|z), z the mean of q(z|given)."""
    split, device = data.test, next(model.parameters()).device
    n = len(split["x"])
    correct = {a.name: 0 for a in data.attributes}
    for batch in batches(split, chunk, device):
        z = model.posterior({k: batch[k] for k in given}).loc
        for name, logits in model.logits(z, list(correct)).items():
            correct[name] += int((logits.argmax(-1) == batch[name]).sum())
    return {name: c / n for name, c in correct.items()}


# -- correctness and coverage -----------------------------------------------------------------------------
def jsd(p: torch.Tensor, q: torch.Tensor) -> float:
    """Jensen-Shannon divergence of two histograms, natural log (0 <= JSD <= log 2)."""
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        mask = a > 0
        return (a[mask] * (a[mask] / b[mask]).log()).sum()
    return float((kl(p, m) + kl(q, m)) / 2)


def queries(data: AttributeDataset) -> list[dict[str, int]]:
    """Every non-empty subset of attributes with every combination of its values seen in the test set."""
    names = [a.name for a in data.attributes]
    out = []
    for size in range(1, len(names) + 1):
        for subset in itertools.combinations(names, size):
            seen = torch.stack([data.test[a] for a in subset], -1).unique(dim=0)
            out += [dict(zip(subset, row.tolist())) for row in seen]
    return out


def query_label(data: AttributeDataset, query: dict[str, int]) -> str:
    return ",".join(f"{k}={data.attribute(k).classes[v]}" for k, v in query.items())


@torch.no_grad()
def correctness_coverage(model: MultimodalVAE, data: AttributeDataset, clf: AttributeClassifier, n: int) -> dict:
    """Correctness and coverage of every query, and their means per subset and per |O|."""
    per_query: dict[str, dict] = {}
    subsets: dict[tuple[str, ...], list[dict[str, int]]] = {}
    for q in queries(data):
        subsets.setdefault(tuple(q), []).append(q)
    for subset, qs in subsets.items():
        given = {a: torch.tensor([q[a] for q in qs]) for a in subset}
        pred = clf.predict(model.generate(given, n)[data.image.name])  # each (n, len(qs))
        wrong = sum((pred[a] != given[a]).float() for a in subset) / len(subset)
        correct = 1 - wrong.mean(0)
        free = [a for a in data.attributes if a.name not in subset]
        for j, q in enumerate(qs):
            row = {"subset": subset, "correctness": float(correct[j])}
            if free:
                row["coverage"] = sum(1 - jsd(torch.bincount(pred[a.name][:, j], minlength=a.size).float(),
                                              torch.ones(a.size)) for a in free) / len(free)
            per_query[query_label(data, q)] = row

    def means(metric: str, key: Callable[[dict], str]) -> dict[str, float]:
        groups: dict[str, list[float]] = {}
        for row in per_query.values():
            if metric in row:
                groups.setdefault(key(row), []).append(row[metric])
        return {k: sum(v) / len(v) for k, v in groups.items()}

    by_size, by_subset = (lambda r: str(len(r["subset"]))), (lambda r: "{" + ",".join(r["subset"]) + "}")
    return {"correctness": {"by_size": means("correctness", by_size), "by_subset": means("correctness", by_subset),
                            "by_query": {k: r["correctness"] for k, r in per_query.items()}},
            "coverage": {"by_size": means("coverage", by_size), "by_subset": means("coverage", by_subset)}}


@torch.no_grad()
def joint_coherence(model: MultimodalVAE, data: AttributeDataset, clf: AttributeClassifier, draws: int) -> float:
    """Share of z ~ p(z) whose decoded image the classifier reads as argmax p(a|z), for every attribute."""
    z = torch.randn(draws, model.z_dim, device=next(model.parameters()).device)
    logits = model.logits(z)
    read = clf.predict(logits[data.image.name].sigmoid())
    agree = torch.stack([read[a.name] == logits[a.name].argmax(-1) for a in data.attributes]).all(0)
    return float(agree.float().mean())


# -- likelihoods ------------------------------------------------------------------------------------------
def importance_log_means(proposal: Normal, k: int, log_targets: Callable[[torch.Tensor], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """For each named unnormalised log-density f: log (1/K) sum_k exp(f(z_k) - log q(z_k)), z_k ~ q."""
    z = proposal.sample((k,))
    log_q = log_density(proposal, z)
    return {name: torch.logsumexp(f - log_q, 0) - math.log(k) for name, f in log_targets(z).items()}


@torch.no_grad()
def log_likelihoods(model: MultimodalVAE, data: AttributeDataset, k: int, rows_per_chunk: int = 2048) -> dict[str, float]:
    """Importance-sampled log-likelihoods in nats per test example (the whole test split).

    Chunks of about `rows_per_chunk` decoded draws keep memory flat; 2048 rows keep a chunk's image logits
    (13 MB) near the cache and were the fastest here (benchmarks/eval_speed.py).
    """
    device = next(model.parameters()).device
    x, attrs = data.image.name, [a.name for a in data.attributes]
    n, per_chunk = len(data.test[x]), max(1, rows_per_chunk // k)
    totals: dict[str, float] = {}
    for batch in batches(data.test, per_chunk, device):
        q_y = model.posterior({a: batch[a] for a in attrs})

        def via_joint(z: torch.Tensor) -> dict[str, torch.Tensor]:
            lp = model.log_likelihood(z, batch, [x, *attrs])   # z: (k, b, d); observations broadcast
            lx, ly, lz = lp[x], sum(lp[a] for a in attrs), log_density(standard_normal(z), z)
            return {"log p(x,y)": lx + ly + lz, "log p(x)": lx + lz, "log p(x|y)": lx + log_density(q_y, z)}

        def via_image(z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"log p(x) [proposal q(z|x)]": model.log_likelihood(z, batch, [x])[x] + log_density(standard_normal(z), z)}

        est = importance_log_means(model.posterior(batch), k, via_joint)
        est |= importance_log_means(model.posterior({x: batch[x]}), k, via_image)
        for name, v in est.items():
            totals[name] = totals.get(name, 0.0) + float(v.sum())
    return {name: v / n for name, v in totals.items()}


# -- all of it --------------------------------------------------------------------------------------------
def dataset_key(cfg) -> dict:
    """What decides the dataset (and so the classifier): everything but the model."""
    return {"preset": cfg.preset, "mnist_dir": cfg.mnist_dir, "seed": cfg.seed, "test_fraction": cfg.test_fraction,
            "hold_out": sorted(cfg.hold_out)}


def evaluate(model: MultimodalVAE, data: AttributeDataset, cfg, eval_cfg: EvalConfig | None = None,
             log=lambda *a: None) -> dict:
    """Every metric of a trained run, as one JSON-able dict (what metrics.json holds)."""
    eval_cfg = eval_cfg or EvalConfig()
    model.eval()
    torch.manual_seed(eval_cfg.seed)
    clf, clf_accuracy = classifier_for(data, dataset_key(cfg) | {"source": data.source})
    names = tuple(m.name for m in data.modalities)
    metrics = {"classifier_test_accuracy": clf_accuracy}
    metrics |= correctness_coverage(model, data, clf, eval_cfg.n_per_query)
    metrics["image_to_attribute_accuracy"] = {"q(z|x)": attribute_accuracy(model, data, (data.image.name,)),
                                              "q(z|x,y)": attribute_accuracy(model, data, names)}
    metrics["joint_coherence"] = joint_coherence(model, data, clf, eval_cfg.coherence_draws)
    metrics["log_likelihood"] = log_likelihoods(model, data, eval_cfg.k)
    if cfg.hold_out:
        held = [query_label(data, {a.name: v[a.name] for a in data.attributes if a.name in v})
                for v in (parse_assignments(data, [h]) for h in cfg.hold_out)]
        metrics["held_out_correctness"] = {h: metrics["correctness"]["by_query"].get(h) for h in held}
    metrics["settings"] = asdict(eval_cfg) | {"test_examples": len(data.test[data.image.name])}
    return metrics


def headline(metrics: dict) -> dict[str, float]:
    """The numbers a results table shows, flat: correctness and coverage per |O|, accuracy, coherence, nats."""
    row = {f"correctness |O|={k}": v for k, v in metrics["correctness"]["by_size"].items()}
    row |= {f"coverage |O|={k}": v for k, v in metrics["coverage"]["by_size"].items()}
    acc = metrics["image_to_attribute_accuracy"]["q(z|x)"]
    row["image->attribute accuracy"] = sum(acc.values()) / len(acc)
    row["joint coherence"] = metrics["joint_coherence"]
    row |= metrics["log_likelihood"]
    return row


def format_headline(metrics: dict) -> str:
    clf = ", ".join(f"{k} {v:.3f}" for k, v in metrics["classifier_test_accuracy"].items())
    lines = [f"attribute classifier on real test images: {clf}"]
    lines += [f"{k:>32}: {v:.4g}" for k, v in headline(metrics).items()]
    return "\n".join(lines)
