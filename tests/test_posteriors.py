import math

import torch
from torch.distributions import Normal

from jmvae.posteriors import Gaussian, Mixture, as_mixture, kl, product_of_experts, stack, standard_normal


def test_analytic_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    q = Gaussian(torch.randn(3, 4, generator=g), torch.rand(3, 4, generator=g) + 0.3)
    p = Gaussian(torch.randn(3, 4, generator=g), torch.rand(3, 4, generator=g) + 0.5)
    torch.manual_seed(1)
    z = q.sample((200_000,))
    mc = (q.log_prob(z) - p.log_prob(z)).mean(0)
    assert torch.allclose(kl(q, p), mc, atol=0.03, rtol=0.01)
    assert kl(q, q).abs().max() < 1e-6
    assert (kl(q, standard_normal(q.loc)) > 0).all()


def test_product_of_experts_equals_normalised_product_of_densities():
    # 1-D experts with the prior: compare with the product of densities normalised on a fine grid.
    a = Normal(torch.tensor([1.5]), torch.tensor([0.7]))
    b = Normal(torch.tensor([-0.5]), torch.tensor([1.3]))
    poe = product_of_experts([a, b], prior=True)
    grid = torch.linspace(-8, 8, 200_001).unsqueeze(-1)
    log_prod = a.log_prob(grid) + b.log_prob(grid) + Normal(0.0, 1.0).log_prob(grid)
    dens = torch.softmax(log_prod.squeeze(-1).double(), 0)
    mean = (dens * grid.squeeze(-1)).sum()
    var = (dens * (grid.squeeze(-1) - mean) ** 2).sum()
    assert math.isclose(poe.loc.item(), mean.item(), abs_tol=1e-4)
    assert math.isclose(poe.scale.item() ** 2, var.item(), rel_tol=1e-4)


def test_product_of_experts_is_exact_gaussian_product_in_many_dims():
    g = torch.Generator().manual_seed(3)
    experts = [
        Gaussian(torch.randn(5, 3, generator=g), torch.rand(5, 3, generator=g) + 0.2) for _ in range(3)
    ]
    poe = product_of_experts(experts, prior=False)
    # The log of a product of Gaussians is the PoE log-density up to a constant independent of z.
    z = torch.randn(7, 5, 3, generator=g)
    diff = sum(e.log_prob(z) for e in experts) - poe.log_prob(z)
    assert torch.allclose(diff, diff[0:1].expand_as(diff), atol=1e-4)
    # A single expert without the prior is itself; with the prior, variances shrink below both.
    one = product_of_experts(experts[:1], prior=False)
    assert torch.allclose(one.loc, experts[0].loc) and torch.allclose(one.scale, experts[0].scale)
    with_prior = product_of_experts(experts[:1], prior=True)
    assert (with_prior.scale < experts[0].scale).all() and (with_prior.scale < 1).all()


def test_kl_against_a_stack_is_each_kl_in_turn():
    g = torch.Generator().manual_seed(4)
    q = Gaussian(torch.randn(6, 3, generator=g), torch.rand(6, 3, generator=g) + 0.1)
    others = [standard_normal(q.loc)] + [
        Gaussian(torch.randn(6, 3, generator=g), torch.rand(6, 3, generator=g) + 0.1) for _ in range(2)
    ]
    together = kl(q, stack(others))
    assert together.shape == (3, 6)
    for row, p in zip(together, others):
        assert torch.allclose(row, kl(q, p), atol=1e-6)


def grid_log_product(factors, prior: bool, limit: float = 7.0, n: int = 561):
    """log of the normalised product of 2-D densities on a grid (the reference for closed forms)."""
    g = torch.linspace(-limit, limit, n, dtype=torch.float64)
    z = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    log_prod = sum(f.log_prob(z.float()).double() for f in factors)
    if prior:
        log_prod = log_prod + Normal(0.0, 1.0).log_prob(z).sum(-1)
    cell = (2 * limit / (n - 1)) ** 2
    return z, log_prod - torch.logsumexp(log_prod, 0) - math.log(cell)


def test_product_of_mixtures_is_the_normalised_product_of_densities():
    """A product of mixture experts (and a Gaussian, and the prior) is a mixture in closed form: its density
    equals the product of the experts' densities, normalised, everywhere on a fine grid."""
    g = torch.Generator().manual_seed(5)
    a = Mixture(
        torch.randn(3, generator=g), torch.randn(3, 2, generator=g), torch.rand(3, 2, generator=g) + 0.3
    )
    b = Mixture(
        torch.randn(2, generator=g), torch.randn(2, 2, generator=g), torch.rand(2, 2, generator=g) + 0.3
    )
    c = Gaussian(torch.randn(2, generator=g), torch.rand(2, generator=g) + 0.5)
    for prior in (True, False):
        product = product_of_experts([a, b, c], prior=prior)
        assert isinstance(product, Mixture) and product.loc.shape == (6, 2)
        z, exact = grid_log_product([a, b, c], prior)
        assert torch.allclose(product.log_prob(z).double().exp(), exact.exp(), atol=2e-5)
        torch.manual_seed(0)
        draws = product.sample((200_000,))
        mean = (exact.exp() * z.T).sum(-1) * (14 / 560) ** 2
        assert torch.allclose(draws.mean(0).double(), mean, atol=0.01)
        assert torch.allclose(product.mean.double(), mean, atol=1e-3)


def test_one_component_mixture_is_the_gaussian():
    g = torch.Generator().manual_seed(6)
    experts = [
        Gaussian(torch.randn(4, 3, generator=g), torch.rand(4, 3, generator=g) + 0.2) for _ in range(2)
    ]
    gaussian = product_of_experts(experts, prior=True)
    mixture = product_of_experts([as_mixture(experts[0]), experts[1]], prior=True)
    z = torch.randn(9, 4, 3, generator=g)
    assert torch.allclose(mixture.log_prob(z), gaussian.log_prob(z), atol=1e-4)
    assert torch.allclose(mixture.mean, gaussian.loc, atol=1e-5)
    assert torch.allclose(mixture.tempered(0.5).scale.squeeze(-2), 0.5 * gaussian.scale, atol=1e-6)
