"""Where joint coherence fails: draws z ~ p(z) whose decoded image the attribute classifier reads otherwise
than argmax p(y|z), split by attribute and by who is sure (docs/results-queries.md used it to find that the
failures lie between the clusters, the image read with confidence while p(y|z) hesitates).

    R=runs/sweep/bundled
    JMVAE_OFFLINE=1 python benchmarks/coherence_failures.py $R/noprior-seed0 $R/default-seed0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import torch  # noqa: E402

from jmvae.classifier import classifier_for  # noqa: E402
from jmvae.train import load_run  # noqa: E402


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--draws", type=int, default=10_000)
    p.add_argument("--sure", type=float, default=0.9, help="a reading counts as sure above this probability")
    args = p.parse_args()
    for run in args.runs:
        _, data, model = load_run(run)
        clf, _ = classifier_for(data)
        torch.manual_seed(0)
        z = torch.randn(args.draws, model.z_dim)
        logits = model.logits(z)
        read = clf([logits[data.images[0].name].sigmoid()])
        incoherent = torch.zeros(args.draws, dtype=torch.bool)
        parts = []
        for a in data.attributes:
            by_image, by_model = read[a.name].softmax(-1), logits[a.name].softmax(-1)
            differ = by_image.argmax(-1) != by_model.argmax(-1)
            incoherent |= differ
            parts.append(
                f"{a.name}: {differ.float().mean():.3f} (image read sure in "
                f"{(by_image.max(-1).values[differ] > args.sure).float().mean():.0%}, p(y|z) sure in "
                f"{(by_model.max(-1).values[differ] > args.sure).float().mean():.0%})"
            )
        print(f"{run}: incoherent {incoherent.float().mean():.3f} of {args.draws} draws; " + "; ".join(parts))


if __name__ == "__main__":
    main()
