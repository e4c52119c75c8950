"""Metrics of a trained model, as the JMVAE and TELBO papers define them."""
from __future__ import annotations

import torch

from .data.attributes import AttributeDataset, to_batch
from .models import MultimodalVAE


@torch.no_grad()
def attribute_accuracy(model: MultimodalVAE, data: AttributeDataset, given: tuple[str, ...], chunk: int = 4096) -> dict[str, float]:
    """Share of test examples whose attribute a equals argmax_a p(a|z), z the mean of q(z|given)."""
    split, device = data.test, next(model.parameters()).device
    n = len(split["x"])
    correct = {a.name: 0 for a in data.attributes}
    for start in range(0, n, chunk):
        batch = to_batch(split, slice(start, start + chunk), device)
        z = model.posterior({k: batch[k] for k in given}).loc
        for name, logits in model.logits(z, list(correct)).items():
            correct[name] += int((logits.argmax(-1) == batch[name]).sum())
    return {name: c / n for name, c in correct.items()}


def evaluate(model: MultimodalVAE, data: AttributeDataset) -> dict:
    model.eval()
    all_names = tuple(m.name for m in data.modalities)
    return {
        "image_to_attribute_accuracy": {
            "q(z|x)": attribute_accuracy(model, data, (data.image.name,)),
            "q(z|x,y)": attribute_accuracy(model, data, all_names),
        },
    }
