import math

import pytest
import torch
from torch import nn
from torch.distributions import Normal

from jmvae.classifier import classifier_for
from jmvae.data.attributes import to_batch
from jmvae.evaluate import (attribute_accuracy, correctness_coverage, importance_log_means, joint_coherence, jsd,
                            queries)


@pytest.fixture(scope="session")
def classifier(founding_data):
    clf, acc = classifier_for(founding_data, {"test": "founding"})
    return clf, acc


class RealImageModel(nn.Module):
    """A "model" made of real test images: a perfect one, or one that ignores what it is given.

    posterior({x}).loc carries the image's true attributes; logits(z) reads them back; generate() returns
    real images with the given attributes (perfect) or random real images (ignores its input).
    """

    def __init__(self, data, ignore_input: bool = False):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.data, self.ignore_input = data, ignore_input
        self.names = [a.name for a in data.attributes]
        self.z_dim = len(self.names)
        self.lookup = {bytes(row.numpy()): i for i, row in enumerate(data.test["x"])}

    def posterior(self, given):
        idx = torch.tensor([self.lookup[bytes((row * 255).round().to(torch.uint8).numpy())] for row in given["x"]])
        loc = torch.stack([self.data.test[a][idx].float() for a in self.names], -1)
        return Normal(loc, torch.ones_like(loc))

    def logits(self, z, names=None):
        return {a: torch.stack([-(z[..., i] - c).abs() for c in range(2)], -1)
                for i, a in enumerate(self.names) if names is None or a in names}

    def generate(self, given, n):
        g = torch.Generator().manual_seed(0)
        b = len(next(iter(given.values())))
        out = torch.empty(n, b, self.data.test["x"].shape[1])
        for j in range(b):
            match = torch.ones(len(self.data.test["x"]), dtype=torch.bool)
            if not self.ignore_input:
                for a, v in given.items():
                    match &= self.data.test[a] == v[j]
            pool = match.nonzero().squeeze(-1)
            out[:, j] = to_batch(self.data.test, pool[torch.randint(len(pool), (n,), generator=g)])["x"]
        return {"x": out}


def test_jsd():
    p = torch.tensor([3.0, 1.0, 0.0])
    assert jsd(p, p) == pytest.approx(0.0, abs=1e-7)
    assert jsd(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])) == pytest.approx(math.log(2), rel=1e-6)
    # one-hot vs uniform over 2 classes, by hand: M = (3/4, 1/4)
    by_hand = 0.5 * math.log(4 / 3) + 0.5 * (0.5 * math.log(2 / 3) + 0.5 * math.log(2))
    assert jsd(torch.tensor([10.0, 0.0]), torch.ones(2)) == pytest.approx(by_hand, rel=1e-6)


def test_importance_sampling_matches_exact_linear_gaussian_marginal():
    # z ~ N(0, I_2), x | z ~ N(a.z + b, s^2): p(x) = N(b, |a|^2 + s^2) exactly.
    a, b, s = torch.tensor([1.5, -0.7]), 0.3, 0.8
    x = torch.tensor([-2.0, 0.0, 1.0, 3.5])
    exact = Normal(b, math.sqrt(float(a @ a) + s * s)).log_prob(x)

    def log_joint(z):  # z: (k, 4, 2)
        return {"log p(x)": Normal(z @ a + b, s).log_prob(x) + Normal(0.0, 1.0).log_prob(z).sum(-1)}

    torch.manual_seed(0)
    proposal = Normal(torch.zeros(4, 2), 1.5 * torch.ones(4, 2))
    est = importance_log_means(proposal, 20_000, log_joint)["log p(x)"]
    assert torch.allclose(est, exact, atol=0.02), (est, exact)
    # The estimate is a lower bound in expectation: a poor proposal with few samples falls below.
    few = importance_log_means(Normal(torch.full((4, 2), 3.0), 0.3 * torch.ones(4, 2)), 5, log_joint)["log p(x)"]
    assert (few < exact).all()


def test_queries_cover_every_subset_and_seen_combination(founding_data):
    qs = queries(founding_data)
    assert len(qs) == 2 + 2 + 4
    assert {tuple(q) for q in qs} == {("position",), ("digit",), ("position", "digit")}


def test_classifier_reads_real_images(classifier):
    _, acc = classifier
    assert acc["position"] > 0.99 and acc["digit"] > 0.95


def test_perfect_model_scores_one(founding_data, classifier):
    clf, _ = classifier
    model = RealImageModel(founding_data)
    cc = correctness_coverage(model, founding_data, clf, n=20)
    assert cc["correctness"]["by_size"]["2"] > 0.97 and cc["correctness"]["by_size"]["1"] > 0.97
    assert attribute_accuracy(model, founding_data, ("x",)) == {"position": 1.0, "digit": 1.0}


def test_model_ignoring_its_input_is_at_chance_with_full_coverage(founding_data, classifier):
    clf, _ = classifier
    cc = correctness_coverage(RealImageModel(founding_data, ignore_input=True), founding_data, clf, n=400)
    for size in ("1", "2"):
        assert abs(cc["correctness"]["by_size"][size] - 0.5) < 0.07
    assert cc["coverage"]["by_size"]["1"] > 0.98
    # A perfect model's single-attribute queries also cover the free attribute: real images of both kinds.
    perfect = correctness_coverage(RealImageModel(founding_data), founding_data, clf, n=400)
    assert perfect["coverage"]["by_size"]["1"] > 0.98


def test_joint_coherence_of_a_decoder_that_agrees_with_itself(founding_data, classifier):
    clf, _ = classifier

    class Decoder(RealImageModel):
        """p(a|z) from the sign of z; the image is a real test image with those attributes."""
        def logits(self, z, names=None):
            logit = {a: torch.stack([-z[..., i], z[..., i]], -1) for i, a in enumerate(self.names)}
            pos, dig = (z[..., 0] > 0).long(), (z[..., 1] > 0).long()
            images = self.generate({"position": pos, "digit": dig}, 1)["x"][0]
            return logit | {"x": torch.logit(images.clamp(1e-4, 1 - 1e-4))}

    model = Decoder(founding_data)
    assert joint_coherence(model, founding_data, clf, draws=300) > 0.97
