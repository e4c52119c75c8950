"""Metrics of a trained model, defined as in the JMVAE and TELBO papers.

- Correctness and coverage: Vedantam et al. 2018 ("Generative Models of Visually Grounded Imagination",
  section 4, the "3 C's"): for every query y_O (a non-empty subset O of attributes with values seen in the
  test set) draw images from q(z|y_O), read them with an attribute classifier; correctness = mean over
  images of the share of the given attributes read back; coverage = 1 - JSD(histogram of each unspecified
  attribute, uniform), averaged over those attributes. Every query gets enough images (500 by default) to
  see a 1% failure, a 95% interval, and the classifier's full reading, so a failing query can be named.
- Image -> attribute accuracy and joint coherence: cross-modal and joint generation read back by p(a|z)
  and by the classifier.
- Likelihoods: Suzuki et al. 2016 ("Joint Multimodal Learning with Deep Generative Models", section 4.2),
  importance sampling with K samples: log p(x,y), log p(x) and log p(x|y) with proposal q(z|x,y), and
  log p(x) with proposal q(z|x), on a seeded subsample of the test split: at ~40 ms per example on 2 idle
  cores (twice that when the cores are shared) the whole 4,334-image split would take minutes.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from . import coherence
from .classifier import AttributeClassifier, accuracy, classifier_for, value_errors
from .data.attributes import AttributeDataset, batches, parse_assignments, seeded_subset
from .modalities import Continuous
from .models import MultimodalVAE
from .networks import own_stream
from .posteriors import Posterior, standard_normal
from .samplers import LatentSampler, drawn_by

CORRECTNESS_TARGET = 0.99  # a query "fails" below these: 1 image in 100 showing a wrong attribute is visible
COVERAGE_TARGET = 0.95
MAX_QUERY_SUBSETS = (
    31  # attribute subsets queried: every one of up to 5 attributes, else a sample (query_subsets)
)
MAX_QUERIES = 700  # queries in all: MNIST-A's 659 and every preset keep all of theirs
Z95 = 1.959963984540054  # standard normal 97.5% quantile: two-sided 95% intervals


# Presets whose evaluation skips the second temperature unless --low-temperature asks for it: MNIST-A's 659
# queries x 500 images took 304 s more at T = 0.5, a third of its evaluation (docs/results-mnist-a.md).
SECOND_TEMPERATURE_OFF = ("mnist-a",)


@dataclass
class EvalConfig:
    n_per_query: int = 500  # images per correctness/coverage query: a 1% failure is 5 images
    k: int = 250  # importance samples per test example: within 0.05-0.3 nats of K = 1,000
    # (a tenth of the 400-image mean's standard error) at a quarter of the
    # time
    coherence_draws: int = 10_000  # z ~ p(z) (and from each fitted sampler) for joint coherence
    low_temperature: float = 0.5  # second temperature for correctness/coverage (1: skip it)
    complete_temperature: float = (
        0.5  # temperature of the completed sampler's column (generate complete=True; 0: skip)
    )
    likelihood_examples: int = (
        400  # test images for the likelihoods: evaluation stays < 60 s on 2 shared cores
    )
    resamples: int = 1000  # bootstrap resamples for the coverage intervals
    seed: int = 0


# -- image -> attributes ----------------------------------------------------------------------------------
@torch.no_grad()
def attribute_accuracy(
    model: MultimodalVAE, data: AttributeDataset, given: tuple[str, ...], chunk: int = 4096
) -> dict[str, float]:
    """Share of test examples whose attribute a equals argmax_a p(a|z), z the mean of q(z|given)."""
    split, device = observed_rows(data, data.test, given), next(model.parameters()).device
    correct = {a.name: 0 for a in data.attributes}
    seen = {a.name: 0 for a in data.attributes}
    for batch in batches(split, chunk, device):
        z = model.posterior({k: batch[k] for k in given}).mean
        for name, logits in model.logits(z, list(correct)).items():
            a = data.attribute(name)
            truth = a.to_levels(batch[name])
            correct[name] += int(((a.to_levels(a.point(logits)) == truth) & (truth >= 0)).sum())
            seen[name] += int((truth >= 0).sum())
    return {name: c / seen[name] if seen[name] else float("nan") for name, c in correct.items()}


def observed_rows(data: AttributeDataset, split: dict[str, torch.Tensor], names) -> dict[str, torch.Tensor]:
    """The rows of a split that observe every modality in `names` (all rows of a fully observed split)."""
    keep = torch.ones(len(split[data.images[0].name]), dtype=torch.bool)
    for a in data.attributes:
        if a.name in names:
            keep &= a.observed(split[a.name])
    return split if bool(keep.all()) else {k: v[keep] for k, v in split.items()}


# -- intervals --------------------------------------------------------------------------------------------
def wilson(p: float, n: int, z: float = Z95) -> list[float]:
    """95% Wilson score interval [lo, hi] of a proportion p observed over n trials.

    Its variance p(1 - p)/n is exact for a 0/1 score (one given attribute, or `all_correct`). For the mean
    share of |O| > 1 given attributes it is conservative: a score in [0, 1] with mean p has variance at most
    p(1 - p). Means over Q queries of n images each, taken with the pooled n = Q n, are conservative too:
    the mean of p_q(1 - p_q) is at most p(1 - p) for their mean p (concavity).
    """
    if n < 1:
        return [0.0, 1.0]
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n))
    return [max(0.0, centre - half), min(1.0, centre + half)]


def bootstrap_interval(estimate: float, replicates: torch.Tensor) -> list[float]:
    """95% percentile interval of bootstrap replicates, shifted by the bootstrap's estimate of the bias.

    Coverage is largest (1) at a uniform histogram, so resampled histograms are on average less uniform
    than the sample and their coverage lower: near uniform the plain percentile interval lies below the
    truth (it missed a true 1.0 in about half of simulated cases with 2 classes, in all with 4). Shifting
    it by mean(replicates) - estimate gave 93-100% coverage across the histograms simulated (2 and 4
    classes, from uniform to 95/5, 500 images).
    """
    bias = float(replicates.mean()) - estimate
    lo, hi = torch.quantile(replicates.double(), torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return [max(0.0, lo - bias), min(1.0, hi - bias)]


# -- correctness and coverage -----------------------------------------------------------------------------
def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence of histograms along the last dimension (any leading shape), natural log."""
    p, q = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
    m = (p + q) / 2

    def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(a > 0, a * (a / b).log(), torch.zeros_like(a)).sum(-1)

    return (kl(p, m) + kl(q, m)) / 2


def jsd(p: torch.Tensor, q: torch.Tensor) -> float:
    """Jensen-Shannon divergence of two histograms, natural log (0 <= JSD <= log 2)."""
    return float(js_divergence(p.float(), q.float()))


def coverage_of(counts: torch.Tensor) -> torch.Tensor:
    """1 - JSD(histogram, uniform) along the last dimension (float64: the bootstrap compares small
    differences)."""
    return 1 - js_divergence(counts.double(), torch.ones(counts.shape[-1], dtype=torch.float64))


def coverage_replicates(
    reads: list[tuple[torch.Tensor, int]], resamples: int, generator: torch.Generator
) -> torch.Tensor:
    """Coverage of `resamples` bootstrap resamples of one query's images, (resamples,).

    reads: the classifier's reading (n,) of each free attribute, with its number of classes; every free
    attribute is read from the same resampled images.
    """
    n = len(reads[0][0])
    idx = torch.randint(n, (resamples, n), generator=generator)
    ones = torch.ones(resamples, n, dtype=torch.float64)
    return torch.stack(
        [
            coverage_of(torch.zeros(resamples, size, dtype=torch.float64).scatter_add_(1, read[idx], ones))
            for read, size in reads
        ]
    ).mean(0)


def query_subsets(names: list[str], seed: int = 0) -> list[tuple[str, ...]]:
    """The attribute subsets queried, smallest first: all of them up to MAX_QUERY_SUBSETS; else every single
    attribute, all of them together, and a seeded sample of the sizes between (never listing 2^n subsets)."""
    n = len(names)
    if 2**n - 1 <= MAX_QUERY_SUBSETS:
        return [s for size in range(1, n + 1) for s in itertools.combinations(names, size)]
    chosen = {(i,) for i in range(n)} | {tuple(range(n))}
    g = torch.Generator().manual_seed(seed)
    for k in range(100 * MAX_QUERY_SUBSETS if n > 2 else 0):  # sizes 2 .. n-1 in turn
        if len(chosen) >= MAX_QUERY_SUBSETS:
            break
        chosen.add(tuple(sorted(torch.randperm(n, generator=g)[: 2 + k % (n - 2)].tolist())))
    return [tuple(names[i] for i in s) for s in sorted(chosen, key=lambda s: (len(s), s))]


def queries(data: AttributeDataset, seed: int = 0) -> list[dict[str, int]]:
    """Each queried subset of attributes (query_subsets) with every combination of its values seen in the test
    set; where that makes more than MAX_QUERIES, each subset's most frequent combinations, as many as fit."""
    levels = {
        a.name: a.to_levels(data.test[a.name]) for a in data.attributes
    }  # a continuous value: its level
    seen = {}
    for subset in query_subsets([a.name for a in data.attributes], seed):
        rows, counts = torch.stack([levels[a] for a in subset], -1).unique(dim=0, return_counts=True)
        keep = (rows >= 0).all(-1)
        seen[subset] = (rows[keep], counts[keep])
    per_subset = (
        None if sum(len(r) for r, _ in seen.values()) <= MAX_QUERIES else max(1, MAX_QUERIES // len(seen))
    )
    out = []
    for subset, (rows, counts) in seen.items():
        if per_subset is not None and len(rows) > per_subset:
            top = counts.argsort(descending=True, stable=True)[:per_subset]
            rows = rows[top.sort().values]
        out += [dict(zip(subset, row.tolist())) for row in rows]
    return out


def query_label(data: AttributeDataset, query: dict[str, int]) -> str:
    """name=value,...: a query's levels as the user reads them."""
    return ",".join(f"{k}={data.attribute(k).classes[v]}" for k, v in query.items())


def misses(row: dict) -> list[str]:
    """Which targets a query row misses: "correctness" below 0.99, "coverage" below 0.95."""
    out = ["correctness"] if row["correctness"] < CORRECTNESS_TARGET else []
    return out + (["coverage"] if row.get("coverage", 1.0) < COVERAGE_TARGET else [])


@torch.no_grad()
def correctness_coverage(
    model: MultimodalVAE,
    data: AttributeDataset,
    clf: AttributeClassifier,
    n: int,
    temperature: float = 1.0,
    resamples: int = 1000,
    seed: int = 0,
    complete: bool = False,
    sampler: LatentSampler | None = None,
) -> dict:
    """Correctness and coverage of every query from n images each, with 95% intervals, and their means per
    subset and per |O|; z from q(z|given), or from a fitted sampler conditioned on it (`sampler`).

    Returns {"correctness": {by_size, by_subset, by_query, by_size_interval, by_subset_interval},
    "coverage": {by_size, by_subset, by_size_interval, by_subset_interval}, "queries": [one row per query]}.
    A row holds the label, subset, n, correctness, all_correct (share of images showing every given
    attribute), coverage (if an attribute is free), each with its interval, and `readings`: the share of
    images the classifier reads as each class of every attribute. Aggregate coverage intervals resample
    every query's images jointly and average.
    """
    generator = torch.Generator().manual_seed(seed)
    rows: list[dict] = []
    replicates: dict[str, torch.Tensor] = {}
    subsets: dict[tuple[str, ...], list[dict[str, int]]] = {}
    for q in queries(data, seed):
        subsets.setdefault(tuple(q), []).append(q)
    continuous = {a.name: a for a in data.attributes if isinstance(a, Continuous)}
    for subset, qs in subsets.items():
        given = {a: data.attribute(a).level_values(torch.tensor([q[a] for q in qs])) for a in subset}
        images = model.generate(given, n, temperature=temperature, complete=complete, **drawn_by(sampler))
        if continuous:  # each (n, len(qs))
            values = {a: v.cpu() for a, v in clf.read(images).items()}
            read = {a: continuous[a].to_levels(v) if a in continuous else v for a, v in values.items()}
        else:
            read = {a: v.cpu() for a, v in clf.predict(images).items()}
        free = [a for a in data.attributes if a.name not in subset]
        for j, q in enumerate(qs):
            # a class is shown when read back; a continuous value when read within its tolerance
            shown = torch.stack(
                [
                    (values[a][:, j] - given[a][j]).abs() <= continuous[a].tolerance
                    if a in continuous
                    else read[a][:, j] == v
                    for a, v in q.items()
                ]
            )  # (|O|, n)
            correctness, all_correct = float(shown.double().mean()), float(shown.all(0).double().mean())
            row: dict[str, Any] = {
                "label": query_label(data, q),
                "subset": list(subset),
                "n": n,
                "correctness": correctness,
                "correctness_interval": wilson(correctness, n),
                "all_correct": all_correct,
                "all_correct_interval": wilson(all_correct, n),
            }
            errors = {
                a: float((values[a][:, j] - given[a][j]).abs().mean() / (c.high - c.low))
                for a, c in continuous.items()
                if a in q
            }
            if errors:  # mean |read - asked| as a share of the training range
                row["value_error"] = errors
            if free:
                row["coverage"] = float(
                    sum(
                        coverage_of(torch.bincount(read[a.name][:, j], minlength=len(a.classes)))
                        for a in free
                    )
                    / len(free)
                )
                replicates[row["label"]] = coverage_replicates(
                    [(read[a.name][:, j], len(a.classes)) for a in free], resamples, generator
                )
                row["coverage_interval"] = bootstrap_interval(row["coverage"], replicates[row["label"]])
            row["readings"] = {
                a.name: dict(
                    zip(
                        a.classes,
                        (torch.bincount(read[a.name][:, j], minlength=len(a.classes)).double() / n).tolist(),
                    )
                )
                for a in data.attributes
            }
            rows.append(row)

    def aggregate(key: Callable[[dict], str]) -> tuple[dict, dict, dict, dict]:
        groups: dict[str, list[dict]] = {}
        for row in rows:
            groups.setdefault(key(row), []).append(row)
        corr = {k: statistics.fmean(r["correctness"] for r in g) for k, g in groups.items()}
        corr_int = {k: wilson(corr[k], sum(r["n"] for r in g)) for k, g in groups.items()}
        covered = {k: [r for r in g if "coverage" in r] for k, g in groups.items()}
        cov = {k: statistics.fmean(r["coverage"] for r in g) for k, g in covered.items() if g}
        cov_int = {
            k: bootstrap_interval(cov[k], torch.stack([replicates[r["label"]] for r in covered[k]]).mean(0))
            for k in cov
        }
        return corr, corr_int, cov, cov_int

    by_size, by_subset = (lambda r: str(len(r["subset"]))), (lambda r: "{" + ",".join(r["subset"]) + "}")
    size_c, size_ci, size_v, size_vi = aggregate(by_size)
    subset_c, subset_ci, subset_v, subset_vi = aggregate(by_subset)
    return {
        "correctness": {
            "by_size": size_c,
            "by_subset": subset_c,
            "by_query": {r["label"]: r["correctness"] for r in rows},
            "by_size_interval": size_ci,
            "by_subset_interval": subset_ci,
        },
        "coverage": {
            "by_size": size_v,
            "by_subset": subset_v,
            "by_size_interval": size_vi,
            "by_subset_interval": subset_vi,
        },
        "queries": rows,
        "subsets_queried": [len(subsets), 2 ** len(data.attributes) - 1],
        "value_error": {
            a: statistics.fmean(r["value_error"][a] for r in rows if a in r.get("value_error", {}))
            for a in continuous
            if any(a in r.get("value_error", {}) for r in rows)
        },
    }


@torch.no_grad()
def joint_coherence(
    model: MultimodalVAE,
    data: AttributeDataset,
    clf: AttributeClassifier,
    draws: int,
    sampler: LatentSampler | None = None,
) -> float:
    """Share of z ~ p(z) (or a fitted sampler) whose decoded image the classifier reads as argmax p(a|z),
    for every attribute."""
    drawn = model.generate({}, draws, **drawn_by(sampler))  # (draws, 1, ...): decoded in bounded chunks
    reads = clf.predict(drawn)
    agree = torch.stack([reads[a.name] == a.to_levels(drawn[a.name]) for a in data.attributes]).all(0)
    return float(agree.float().mean())


# -- likelihoods ------------------------------------------------------------------------------------------
def importance_log_means(
    proposal: Posterior, k: int, log_targets: Callable[[torch.Tensor], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """For each named unnormalised log-density f: log (1/K) sum_k exp(f(z_k) - log q(z_k)), z_k ~ q."""
    z = proposal.sample((k,))
    log_q = proposal.log_prob(z)
    return {name: torch.logsumexp(f - log_q, 0) - math.log(k) for name, f in log_targets(z).items()}


@torch.no_grad()
def log_likelihood_examples(
    model: MultimodalVAE,
    data: AttributeDataset,
    k: int,
    rows_per_chunk: int = 2048,
    examples: int | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Importance-sampled log-likelihoods of each test example used (see `seeded_subset`), in nats.

    Chunks of about `rows_per_chunk` decoded draws keep memory flat; 2048 rows keep a chunk's image logits
    (13 MB) near the cache and were the fastest here (benchmarks/eval_speed.py).
    """
    device = next(model.parameters()).device
    xs, attrs = data.image_names, [a.name for a in data.attributes]
    test = observed_rows(data, data.test, attrs)  # log p(x,y) needs every y
    idx = seeded_subset(len(test[xs[0]]), examples, seed)
    split = {name: v[idx] for name, v in test.items()}
    per_chunk, done = max(1, rows_per_chunk // k), 0
    values: dict[str, torch.Tensor] = {}  # filled in place: small tensors kept per chunk fragment the heap
    for batch in batches(split, per_chunk, device):
        q_y = model.posterior({a: batch[a] for a in attrs})

        def via_joint(
            z: torch.Tensor, batch: dict[str, torch.Tensor] = batch, q_y: Posterior = q_y
        ) -> dict[str, torch.Tensor]:
            lp = model.log_likelihood(z, batch, [*xs, *attrs])  # z: (k, b, d); observations broadcast
            lx, ly, lz = (
                model.images_log_likelihood(lp),
                sum(lp[a] for a in attrs),
                standard_normal(z).log_prob(z),
            )
            return {"log p(x,y)": lx + ly + lz, "log p(x)": lx + lz, "log p(x|y)": lx + q_y.log_prob(z)}

        def via_image(z: torch.Tensor, batch: dict[str, torch.Tensor] = batch) -> dict[str, torch.Tensor]:
            return {
                "log p(x) [proposal q(z|x)]": model.images_log_likelihood(model.log_likelihood(z, batch, xs))
                + standard_normal(z).log_prob(z)
            }

        est = importance_log_means(model.posterior(batch), k, via_joint)
        est |= importance_log_means(model.posterior({x: batch[x] for x in xs}), k, via_image)
        for name, v in est.items():
            values.setdefault(name, torch.empty(len(idx), dtype=torch.float64))[done : done + len(v)] = (
                v.cpu()
            )
        done += len(batch[xs[0]])
    return values


def log_likelihoods(
    model: MultimodalVAE,
    data: AttributeDataset,
    k: int,
    rows_per_chunk: int = 2048,
    examples: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Importance-sampled log-likelihoods in nats per test example (mean over the examples used)."""
    per_example = log_likelihood_examples(model, data, k, rows_per_chunk, examples, seed)
    return {name: float(v.double().mean()) for name, v in per_example.items()}


# -- all of it --------------------------------------------------------------------------------------------
def evaluate(
    model: MultimodalVAE,
    data: AttributeDataset,
    cfg,
    eval_cfg: EvalConfig | None = None,
    log=lambda *a: None,
    samplers: dict[str, LatentSampler] | None = None,
) -> dict:
    """Every metric of a trained run, as one JSON-able dict (what metrics.json holds); joint coherence also
    from each fitted sampler given (samplers.py), beside p(z).

    metrics["seconds"] records how long each part took, so the cost of a setting is visible in the run.
    """
    eval_cfg = eval_cfg or EvalConfig()
    model.eval()
    torch.manual_seed(eval_cfg.seed)
    start, seconds = time.perf_counter(), {}

    def timed(part: str, fn: Callable, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        seconds[part] = time.perf_counter() - t0
        return out

    clf, clf_accuracy = timed("classifier", classifier_for, data)
    names = tuple(m.name for m in data.modalities)
    metrics = {
        "classifier_test_accuracy": clf_accuracy,
        "classifier_degraded_accuracy": accuracy(clf, data, data.test, degraded=True),
    }
    if errors := value_errors(clf, data.test):
        metrics["classifier_value_error"] = errors  # mean |read - true| on real test images, share of range
    queries_cfg = {"n": eval_cfg.n_per_query, "resamples": eval_cfg.resamples, "seed": eval_cfg.seed}
    metrics |= timed("correctness_coverage", correctness_coverage, model, data, clf, **queries_cfg)
    if eval_cfg.low_temperature != 1:
        t = f"{eval_cfg.low_temperature:g}"
        metrics["at_temperature"] = {
            t: timed(
                f"correctness_coverage T={t}",
                correctness_coverage,
                model,
                data,
                clf,
                temperature=eval_cfg.low_temperature,
                **queries_cfg,
            )
        }
    if eval_cfg.complete_temperature and len(data.attributes) > 1:  # one attribute: nothing left to complete
        t = f"{eval_cfg.complete_temperature:g}"
        metrics["completed"] = {
            t: timed(
                f"correctness_coverage completed T={t}",
                correctness_coverage,
                model,
                data,
                clf,
                temperature=eval_cfg.complete_temperature,
                complete=True,
                **queries_cfg,
            )
        }
    metrics["image_to_attribute_accuracy"] = timed(
        "image_to_attribute_accuracy",
        lambda: {
            "q(z|x)": attribute_accuracy(model, data, tuple(data.image_names)),
            "q(z|x,y)": attribute_accuracy(model, data, names),
        },
    )
    metrics["joint_coherence"] = timed(
        "joint_coherence", joint_coherence, model, data, clf, eval_cfg.coherence_draws
    )
    for kind, sampler in (samplers or {}).items():  # on a stream of their own: the numbers after stay put
        with own_stream(model, eval_cfg.seed):
            by_sampler = metrics.setdefault(
                "joint_coherence_by_sampler", {"p(z)": metrics["joint_coherence"]}
            )
            by_sampler[kind] = timed(
                f"joint_coherence {kind}",
                joint_coherence,
                model,
                data,
                clf,
                eval_cfg.coherence_draws,
                sampler,
            )
            metrics.setdefault("conditioned", {})[kind] = timed(
                f"correctness_coverage {kind}",
                correctness_coverage,
                model,
                data,
                clf,
                sampler=sampler,
                **queries_cfg,
            )
    if coherence.applies(data):  # several images: each read by its own reader, as the MoPoE paper does
        cross = timed(
            "cross_coherence",
            coherence.evaluate,
            model,
            data,
            eval_cfg.coherence_draws,
            samplers or {},
            eval_cfg.seed,
        )
        if cross is not None:
            metrics["cross_coherence"] = cross
    per_example = timed(
        "log_likelihood",
        log_likelihood_examples,
        model,
        data,
        eval_cfg.k,
        examples=eval_cfg.likelihood_examples,
        seed=eval_cfg.seed,
    )
    metrics["log_likelihood"] = {name: float(v.double().mean()) for name, v in per_example.items()}
    used = len(next(iter(per_example.values())))
    # Spread of the subsample mean over which test images were drawn (importance-sampling noise aside).
    metrics["log_likelihood_standard_error"] = {
        name: float(v.double().std() / math.sqrt(used)) if used > 1 else 0.0
        for name, v in per_example.items()
    }
    if cfg.hold_out:
        held = [
            query_label(
                data,
                {a.name: int(a.to_levels(torch.tensor(v[a.name]))) for a in data.attributes if a.name in v},
            )
            for v in (parse_assignments(data, [h]) for h in cfg.hold_out)
        ]
        metrics["held_out_correctness"] = {h: metrics["correctness"]["by_query"].get(h) for h in held}
    metrics["settings"] = asdict(eval_cfg) | {
        "test_examples": data.n_test,
        "likelihood_examples": used,
    }
    metrics["seconds"] = seconds | {"total": time.perf_counter() - start}
    log(
        f"evaluation: {metrics['seconds']['total']:.1f} s ("
        + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())
        + ")"
    )
    return metrics


def headline(metrics: dict) -> dict[str, float]:
    """The numbers a results table shows, flat: correctness and coverage per |O|, accuracy, coherence,
    nats."""
    row = {f"correctness |O|={k}": v for k, v in metrics["correctness"]["by_size"].items()}
    row |= {f"coverage |O|={k}": v for k, v in metrics["coverage"]["by_size"].items()}
    for t, m in metrics.get("completed", {}).items():
        row |= {f"correctness |O|={k}, completed T={t}": v for k, v in m["correctness"]["by_size"].items()}
        row |= {f"coverage |O|={k}, completed T={t}": v for k, v in m["coverage"]["by_size"].items()}
    for kind, m in metrics.get("conditioned", {}).items():
        row |= {f"correctness |O|={k}, {kind} sampler": v for k, v in m["correctness"]["by_size"].items()}
        row |= {f"coverage |O|={k}, {kind} sampler": v for k, v in m["coverage"]["by_size"].items()}
    acc = metrics["image_to_attribute_accuracy"]["q(z|x)"]
    row["image->attribute accuracy"] = sum(acc.values()) / len(acc)
    row["joint coherence"] = metrics["joint_coherence"]
    row |= {
        f"joint coherence, {kind} sampler": v
        for kind, v in metrics.get("joint_coherence_by_sampler", {}).items()
        if kind != "p(z)"
    }
    row |= coherence.summary(metrics)
    row |= metrics["log_likelihood"]
    return row


# -- text shared by the terminal and the report -----------------------------------------------------------
SHOWN_FAILING = 10  # failing queries named on the terminal: four attributes make hundreds of queries


def with_interval(value: float, interval: list[float] | None) -> str:
    """0.9213 [0.9103, 0.9311]; the bare value where no interval was stored (runs from before them)."""
    return f"{value:.4f}" + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "")


def percent(share: float) -> str:
    """A share as a whole percentage that never rounds a rare class away: <1%, >99%."""
    if 0 < share < 0.005:
        return "<1%"
    if 0.995 <= share < 1:
        return ">99%"
    return f"{100 * share:.0f}%"


def readings_text(row: dict) -> str:
    """What the classifier read, e.g. "position: left 100%; digit: 1 56%, 2 44%" (classes never read left
    out)."""
    return "; ".join(
        f"{a}: " + ", ".join(f"{c} {percent(s)}" for c, s in shares.items() if s > 0)
        for a, shares in row["readings"].items()
    )


def columns(metrics: dict) -> dict[str, dict]:
    """Every sampler evaluated, by its title: "T = 1" (the headline), "T = 0.5", "completed, T = 0.5",
    "gmm sampler" (a fitted sampler conditioned on the query)."""
    return (
        {"T = 1": metrics}
        | {f"T = {t}": m for t, m in metrics.get("at_temperature", {}).items()}
        | {f"completed, T = {t}": m for t, m in metrics.get("completed", {}).items()}
        | {f"{kind} sampler": m for kind, m in metrics.get("conditioned", {}).items()}
    )


def size_rows(metrics: dict) -> list[tuple[str, dict[str, str]]]:
    """("correctness |O|=1", {"T = 1": "0.92 [..]", "T = 0.5": ...}) per metric and |O|, for every sampler
    evaluated."""
    runs = columns(metrics)
    out = []
    for metric in ("correctness", "coverage"):
        for size in metrics[metric]["by_size"]:
            cells = {
                t: with_interval(m[metric]["by_size"][size], m[metric].get("by_size_interval", {}).get(size))
                for t, m in runs.items()
                if size in m[metric]["by_size"]
            }
            out.append((f"{metric} |O|={size}", cells))
    return out


def classifier_text(metrics: dict) -> str:
    """ "position 1.000, digit 0.998 (blurred and dimmed: position 1.000, digit 0.996)"."""
    text = ", ".join(f"{k} {v:.3f}" for k, v in metrics["classifier_test_accuracy"].items())
    if "classifier_degraded_accuracy" in metrics:
        text += (
            " (blurred and dimmed: "
            + ", ".join(f"{k} {v:.3f}" for k, v in metrics["classifier_degraded_accuracy"].items())
            + ")"
        )
    return text


def format_headline(metrics: dict) -> str:
    lines = [f"attribute classifier on real test images: {classifier_text(metrics)}"]
    if "cross_coherence" in metrics:
        lines.append(f"each image's own reader on real test images: {coherence.reader_text(metrics)}")
    settings, rows = metrics.get("settings", {}), metrics.get("queries", [])
    if "n_per_query" in settings:
        lines.append(f"correctness and coverage: {settings['n_per_query']} images per query, 95% intervals")
    queried, every = metrics.get("subsets_queried", (0, 0))
    if queried < every:
        lines.append(
            f"(queries of {queried} of the {every:,} attribute subsets, a seeded sample: every single "
            f"attribute, all together, and others between; at most {MAX_QUERIES} queries)"
        )
    for name, cells in size_rows(metrics):
        lines.append(
            f"{name:>32}: " + "   ".join(v if t == "T = 1" else f"{t}: {v}" for t, v in cells.items())
        )
    if rows:
        worst = min(rows, key=lambda r: (r["correctness"], r["all_correct"]))
        lines.append(
            f"{'worst query':>32}: {worst['label']}: correctness "
            f"{with_interval(worst['correctness'], worst.get('correctness_interval'))}; read "
            f"{readings_text(worst)}"
        )
        failing = sorted((r for r in rows if misses(r)), key=lambda r: r["correctness"])
        shown = ", ".join(
            r["label"] for r in failing[:SHOWN_FAILING]
        )  # the worst first; the report lists them all
        more = (
            f" and {len(failing) - SHOWN_FAILING} more (report.html lists every query)"
            if len(failing) > SHOWN_FAILING
            else ""
        )
        lines.append(
            f"{'queries missing the targets':>32}: {len(failing)} of {len(rows)} "
            f"(correctness >= {CORRECTNESS_TARGET}, coverage >= {COVERAGE_TARGET})"
            + (f": {shown}{more}" if failing else "")
        )
    lines += [
        f"{k:>32}: {v:.4g}"
        for k, v in headline(metrics).items()
        if not k.startswith(("correctness", "coverage"))
    ]
    if "likelihood_examples" in settings and settings["likelihood_examples"] < settings["test_examples"]:
        lines.append(
            f"(likelihoods on {settings['likelihood_examples']:,} of {settings['test_examples']:,} test "
            "images, seeded subsample)"
        )
    return "\n".join(lines)
