"""Each image likelihood against torch.distributions: per example, for every pair (decoded, image), and the
mean that generation shows."""

import pytest
import torch
from torch.distributions import Bernoulli, ContinuousBernoulli, Laplace

from jmvae.modalities import IMAGE_LIKELIHOODS, LAPLACE_SCALE, Image

REFERENCE = {
    "bernoulli": lambda logits: Bernoulli(logits=logits, validate_args=False),
    "laplace": lambda logits: Laplace(logits.sigmoid(), LAPLACE_SCALE),
    "continuous-bernoulli": lambda logits: ContinuousBernoulli(logits=logits),
}


@pytest.mark.parametrize("kind", IMAGE_LIKELIHOODS)
def test_an_image_likelihood_is_its_distribution(kind):
    g = torch.Generator().manual_seed(0)
    image = Image("x", (3, 4), likelihood=kind)
    logits = torch.randn(5, 12, generator=g, dtype=torch.float64) * 4
    logits[0, :4] = torch.tensor([0.0, 1e-4, -3e-3, 12.0])  # the normaliser's 0 / 0 at 0, and far out
    x = torch.rand(7, 12, generator=g, dtype=torch.float64)
    reference = REFERENCE[kind](logits[:, None]).log_prob(x).sum(-1)  # (5 decoded, 7 images)
    torch.testing.assert_close(image.log_likelihood_pairs(logits, x), reference)
    torch.testing.assert_close(image.log_likelihood(logits, x[:5]), reference.diagonal())
    torch.testing.assert_close(image.point(logits), REFERENCE[kind](logits).mean)
    assert isinstance(image.distribution(logits), type(REFERENCE[kind](logits)))
