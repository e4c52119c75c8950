"""The attribute classifier that reads generated images for the coherence metrics.

A small CNN trained on the run's real training images to predict every attribute; its accuracy on the
real test images bounds every metric that relies on it, so it is reported first. Trained once per
dataset config and cached under the jmvae cache directory.
"""
from __future__ import annotations

import hashlib
import json

import torch
import torch.nn.functional as F
from torch import nn

from .data.attributes import AttributeDataset, to_batch
from .data.mnist import cache_dir
from .runs import save_torch


class AttributeClassifier(nn.Module):
    def __init__(self, shape: tuple[int, int], classes: dict[str, int]):
        super().__init__()
        self.shape, self.classes = shape, classes
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten())
        h, w = (shape[0] + 3) // 4, (shape[1] + 3) // 4
        self.hidden = nn.Sequential(nn.Linear(32 * h * w, 128), nn.ReLU())
        self.head = nn.Linear(128, sum(classes.values()))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flattened images in [0, 1] -> logits per attribute."""
        h = self.head(self.hidden(self.features(x.reshape(-1, 1, *self.shape))))
        return dict(zip(self.classes, h.split(list(self.classes.values()), dim=-1)))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, chunk: int = 4096) -> dict[str, torch.Tensor]:
        """Most probable class of every attribute, for images of any leading shape (..., H*W)."""
        flat = x.reshape(-1, x.shape[-1])
        parts = [{k: v.argmax(-1) for k, v in self(flat[i:i + chunk]).items()} for i in range(0, len(flat), chunk)]
        return {k: torch.cat([p[k] for p in parts]).reshape(x.shape[:-1]) for k in self.classes}


@torch.no_grad()
def accuracy(clf: AttributeClassifier, split: dict[str, torch.Tensor]) -> dict[str, float]:
    pred = clf.predict(to_batch(split, slice(None))["x"])
    return {k: float((pred[k] == split[k]).float().mean()) for k in clf.classes}


def train_classifier(data: AttributeDataset, steps: int = 600, batch_size: int = 128, seed: int = 0) -> AttributeClassifier:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    clf = AttributeClassifier(data.image.shape, {a.name: a.size for a in data.attributes})
    opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
    n = len(data.train["x"])
    for step in range(steps):
        batch = to_batch(data.train, torch.randint(0, n, (batch_size,), generator=g))
        logits = clf(batch["x"])
        loss = sum(F.cross_entropy(logits[a], batch[a]) for a in clf.classes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return clf.eval()


def classifier_for(data: AttributeDataset, dataset_key: dict) -> tuple[AttributeClassifier, dict[str, float]]:
    """The cached classifier of this dataset config (trained on first use) and its real test accuracy."""
    key = hashlib.sha1(json.dumps(dataset_key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "classifiers" / f"{data.name}-{key}.pt"
    clf = AttributeClassifier(data.image.shape, {a.name: a.size for a in data.attributes})
    if path.exists():
        clf.load_state_dict(torch.load(path, weights_only=True))
        clf.eval()
    else:
        clf = train_classifier(data)
        save_torch(path, clf.state_dict())
    return clf, accuracy(clf, data.test)
