"""Subsets of modalities, and which modalities an example observes.

Objectives say which subsets of modalities they condition on (JMVAE: the image, and the attributes; MVAE:
the joint, each modality and k random subsets; MoPoE: every non-empty subset), so they share one helper.
A cell that is not observed (-1 for a class, NaN for a number): a partly labelled batch carries `OBSERVED`, a
(B, M) bool mask over the modalities in the model's order, and objectives train each example on what it has. A
batch without the mask is fully observed and pays nothing for the possibility.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from .errors import UserError

OBSERVED = "observed"  # the batch key of the (B, M) mask; absent = every modality observed in every example
MAX_LISTED = 12  # modalities up to which every subset is listed (4,095); beyond, they are sampled


def nonempty_subsets(names: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of `names`, smallest first, each in the order of `names`."""
    if len(names) > MAX_LISTED:
        raise UserError(
            f"{len(names)} modalities have {2 ** len(names) - 1:,} subsets, too many to list (allowed: "
            f"at most {MAX_LISTED} modalities where every subset has a term, as in MoPoE and with "
            "--every-subset: train another model or setting, or drop columns)"
        )
    return [s for r in range(1, len(names) + 1) for s in itertools.combinations(names, r)]


def random_subsets(
    names: Sequence[str], k: int, generator: torch.Generator | None = None, sizes: range | None = None
) -> list[tuple[str, ...]]:
    """k subsets drawn uniformly from those whose size lies in `sizes` (default: 2 .. len-1, the ones that
    are neither a single modality nor all of them: MVAE's sub-sampled terms)."""
    sizes = sizes if sizes is not None else range(2, len(names))
    if len(names) > MAX_LISTED:  # too many to list: each name in or out with probability 1/2, until one fits
        return [sampled_subset(names, sizes, generator) for _ in range(k)] if k > 0 and len(sizes) else []
    pool = [s for s in nonempty_subsets(names) if len(s) in sizes]
    if not pool or k <= 0:
        return []
    picks = torch.randint(len(pool), (k,), generator=generator)
    return [pool[i] for i in picks.tolist()]


def sampled_subset(names: Sequence[str], sizes: range, generator: torch.Generator | None) -> tuple[str, ...]:
    """One subset drawn uniformly from those whose size lies in `sizes`, without listing them (rejection)."""
    while True:
        keep = torch.rand(len(names), generator=generator) < 0.5
        if int(keep.sum()) in sizes:
            return tuple(n for n, k in zip(names, keep.tolist()) if k)


def mark_observed(batch: dict[str, torch.Tensor], modalities: Sequence) -> dict[str, torch.Tensor]:
    """`batch` with its OBSERVED mask, each modality's cells as its kind says (an image: always), and the
    values that are not observed filled with ones its encoder can read (the terms that read them are
    masked)."""
    cols, out = [], dict(batch)
    for m in modalities:
        v = batch[m.name]
        if hasattr(m, "observed"):
            cols.append(m.observed(v))
            out[m.name] = m.filled(v)
        else:
            cols.append(torch.ones(len(v), dtype=torch.bool, device=v.device))
    return out | {OBSERVED: torch.stack(cols, -1)}


def missing(split: dict[str, torch.Tensor], modalities: Sequence) -> bool:
    """Whether any cell of the split is not observed."""
    return any(not bool(m.observed(split[m.name]).all()) for m in modalities if hasattr(m, "observed"))


def observed(
    batch: dict[str, torch.Tensor], names: Sequence[str], subset: Sequence[str]
) -> torch.Tensor | None:
    """(B,) bool: the examples that observe every modality of `subset`; None when the batch is fully
    observed."""
    mask = batch.get(OBSERVED)
    if mask is None:
        return None
    return mask[:, [names.index(n) for n in subset]].all(-1)


def filled(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch with unobserved attribute values (-1) replaced by 0, so encoders can look them up; the terms
    that read them are masked out by the objective."""
    if OBSERVED not in batch:
        return batch
    return {
        k: (v.clamp_min(0) if v.dtype == torch.long else v.nan_to_num(0.0) if v.dim() == 1 else v)
        for k, v in batch.items()
    }


def membership(subsets: Sequence[Sequence[str]], names: Sequence[str]) -> torch.Tensor:
    """(S, M) 0/1: which of the M modalities `names` each subset holds (for posteriors.subset_products)."""
    return torch.tensor([[float(n in s) for n in names] for s in subsets])
