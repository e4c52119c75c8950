"""Coherence across images, as the MoPoE paper measures it on PolyMNIST (Sutter et al. 2021, section 4):
with several images per example, each image has a reader of its own (the attribute classifier trained on
that image alone).

- Conditional coherence: for every non-empty proper subset S of the images, z ~ q(z | the images in S) of a
  test example, the other images decoded from it and each read by its own reader; the share of those images
  that show the example's attributes (every categorical one), averaged over the subsets of each size |S|.
- Joint coherence: z from p(z) (or a fitted sampler), every image decoded; the share of draws whose readers
  all read the same attributes.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from .classifier import AttributeClassifier, classifier_for
from .data.attributes import AttributeDataset, batches, seeded_subset
from .modalities import Categorical
from .models import MultimodalVAE
from .networks import own_stream
from .runs import fingerprint
from .samplers import LatentSampler, drawn_by

EXAMPLES = 2000  # test examples per subset: a share's 95% interval within about 2 points
RESAMPLES = 1000  # bootstrap resamples (over examples) of each |S|'s mean
MAX_SUBSETS = 10  # given subsets of each size: PolyMNIST's five images keep all 30


def applies(data: AttributeDataset) -> bool:
    return len(data.images) > 1 and any(isinstance(a, Categorical) for a in data.attributes)


def evaluate(
    model: MultimodalVAE,
    data: AttributeDataset,
    draws: int,
    samplers: dict[str, LatentSampler],
    seed: int,
) -> dict | None:
    """Every coherence across images (None when no test example observes a categorical attribute), on a
    random stream of its own: training a reader or drawing here leaves the caller's numbers as they were."""
    with own_stream(model):
        readers, reader_accuracy = image_readers(data)
        torch.manual_seed(seed)
        cond = conditional(model, data, readers, seed=seed)
        if cond is None:
            return None
        out = {
            "reader_accuracy": reader_accuracy,
            "conditional": cond,
            "joint": {"p(z)": joint(model, data, readers, draws)},
        }
        for kind, sampler in samplers.items():
            out["joint"][kind] = joint(model, data, readers, draws, sampler)
    return out


def image_readers(data: AttributeDataset) -> tuple[dict[str, AttributeClassifier], dict[str, dict]]:
    """One cached reader per image (classifier_for), and each one's accuracy on the real test images."""
    readers, accuracy, data_hash = {}, {}, fingerprint(data)
    for m in data.image_names:
        readers[m], accuracy[m] = classifier_for(data, (m,), data_hash)
    return readers, accuracy


def shows(
    reader: AttributeClassifier, image: str, drawn: torch.Tensor, truth: dict[str, torch.Tensor]
) -> torch.Tensor:
    """(B,) whether the reader reads every observed categorical attribute of `truth` (-1: not observed) in
    the images `drawn` (B, D)."""
    read = reader.predict({image: drawn})
    return torch.stack([(read[a] == t) | (t < 0) for a, t in truth.items()]).all(0)


def subsets(names: Sequence[str], seed: int = 0) -> list[tuple[str, ...]]:
    """Every non-empty proper subset of the images, smallest first; at most MAX_SUBSETS of each size (a
    seeded sample), so that many images do not make 2^n of them."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(1, len(names)):
        every = list(itertools.combinations(names, k))
        if len(every) > MAX_SUBSETS:
            every = [every[i] for i in sorted(torch.randperm(len(every), generator=g)[:MAX_SUBSETS].tolist())]
        out += every
    return out


@torch.no_grad()
def conditional(
    model: MultimodalVAE,
    data: AttributeDataset,
    readers: dict[str, AttributeClassifier],
    examples: int = EXAMPLES,
    seed: int = 0,
    chunk: int = 500,
) -> dict | None:
    """Conditional coherence by given subset and by |S| (with a 95% bootstrap interval over examples); None
    when no test example observes a categorical attribute."""
    categorical = [a.name for a in data.attributes if isinstance(a, Categorical)]
    test = data.test
    seen = torch.stack([test[a] >= 0 for a in categorical]).any(0)  # an example with something to show
    rows = seen.nonzero().flatten()[seeded_subset(int(seen.sum()), examples, seed)]
    if len(rows) == 0:
        return None
    split = {k: v[rows] for k, v in test.items()}
    names = data.image_names
    device = next(model.parameters()).device
    per_example: dict[tuple[str, ...], torch.Tensor] = {}
    for given in subsets(names, seed):
        parts = []
        for batch in batches(split, chunk, device):
            drawn = model.generate({m: batch[m] for m in given}, 1)
            truth = {a: batch[a].cpu() for a in categorical}
            right = [shows(readers[m], m, drawn[m][0].cpu(), truth) for m in names if m not in given]
            parts.append(torch.stack(right).float().mean(0))
        per_example[given] = torch.cat(parts)
    by_size, interval = {}, {}
    g = torch.Generator().manual_seed(seed)
    for k in range(1, len(names)):
        scores = torch.stack([v for s, v in per_example.items() if len(s) == k]).mean(0)  # (examples,)
        by_size[str(k)] = float(scores.mean())
        pick = torch.randint(0, len(scores), (RESAMPLES, len(scores)), generator=g)
        lo, hi = torch.quantile(scores[pick].mean(1).double(), torch.tensor([0.025, 0.975]).double())
        interval[str(k)] = [float(lo), float(hi)]
    return {
        "by_given": {",".join(s): float(v.mean()) for s, v in per_example.items()},
        "by_size": by_size,
        "by_size_interval": interval,
        "examples": len(rows),
    }


@torch.no_grad()
def joint(
    model: MultimodalVAE,
    data: AttributeDataset,
    readers: dict[str, AttributeClassifier],
    draws: int,
    sampler: LatentSampler | None = None,
) -> float:
    """Share of z ~ p(z) (or the sampler) whose decoded images the readers all read alike."""
    drawn = model.generate({}, draws, **drawn_by(sampler))
    categorical = [a.name for a in data.attributes if isinstance(a, Categorical)]
    reads = [readers[m].predict({m: drawn[m][:, 0].cpu()}) for m in data.image_names]
    agree = torch.stack([r[a] == reads[0][a] for r in reads[1:] for a in categorical]).all(0)
    return float(agree.float().mean())


def summary(metrics: dict) -> dict[str, float]:
    """Headline numbers: conditional coherence per |S| and joint coherence per sampler."""
    cc = metrics.get("cross_coherence")
    if not cc:
        return {}
    row = {f"coherence given {k} image(s)": v for k, v in cc["conditional"]["by_size"].items()}
    row |= {f"joint coherence across images, {kind}": v for kind, v in cc["joint"].items()}
    return row


def reader_text(metrics: dict) -> str:
    """ "m0 0.935, m1 0.971" (one attribute), or "top shape 0.99 colour 0.50, ..." (several)."""
    cc = metrics["cross_coherence"]
    return ", ".join(
        f"{m} " + " ".join(f"{v:.3f}" if len(acc) == 1 else f"{a} {v:.3f}" for a, v in acc.items())
        for m, acc in cc["reader_accuracy"].items()
    )
