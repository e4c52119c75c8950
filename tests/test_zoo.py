"""MVAE, MMVAE and MoPoE against hand computations, and every model on partly labelled batches.

Noise is fixed: Gaussian.rsample returns loc + scale * eps with eps a deterministic function of the draw's
shape, so a hand computation can use the very same draws. Hand computations write every density out
(Bernoulli and softmax log-likelihoods, Gaussian log-densities and KLs) instead of calling the library.
"""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from jmvae.modalities import Categorical, Image
from jmvae.models import MODELS, build_model
from jmvae.models.mmvaeplus import PrivateDecoder
from jmvae.networks import ConvDecoder, PlacedDecoder
from jmvae.posteriors import Gaussian, Mixture
from jmvae.subsets import OBSERVED, mark_observed, nonempty_subsets

MODS = [Image("x", (4, 4)), Categorical("position", ("left", "right")), Categorical("digit", ("1", "2", "3"))]
NAMES = ["x", "position", "digit"]


def eps(shape) -> torch.Tensor:
    n = math.prod(shape)
    return torch.sin(torch.arange(n, dtype=torch.float32) * 1.7 + 0.3).reshape(shape) * 1.3


@pytest.fixture
def fixed_noise(monkeypatch):
    def rsample(self, shape=()):
        full = torch.Size(shape) + self.loc.shape
        return self.loc + self.scale * eps(full)

    monkeypatch.setattr(Gaussian, "rsample", rsample)


def batch_of(b=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "x": torch.rand(b, 16, generator=g),
        "position": torch.randint(2, (b,), generator=g),
        "digit": torch.randint(3, (b,), generator=g),
    }


def model(name, **kw):
    """A tiny model in float64; attribute weight 1 unless given (the hand computations weigh by it)."""
    torch.manual_seed(1)
    kw.setdefault("attribute_weight", 1.0)
    return build_model(name, MODS, z_dim=2, hidden=8, **kw).double()


def dbl(batch):
    return {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}


# -- densities written out --------------------------------------------------------------------------------
def log_lik(m, name, z, batch, net=None):
    logits = (net or m.decoders[name])(z)
    if name == "x":
        x = batch["x"]
        return (x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)).sum(-1)
    y = batch[name]
    return logits.log_softmax(-1).gather(-1, y.expand(logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)


def expert(m, name, batch):
    q = m.encoders[name](batch[name])
    return q.loc, q.scale


def poe(params):
    """p(z) prod of (mu, sigma) experts, by hand."""
    precision = 1 + sum(s**-2 for _, s in params)
    mean = sum(mu * s**-2 for mu, s in params) / precision
    return mean, precision**-0.5


def kl_std(mu, s):
    return 0.5 * (s**2 + mu**2 - 1 - 2 * s.log()).sum(-1)


def log_normal(z, mu, s):
    return (-0.5 * ((z - mu) / s) ** 2 - s.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


# -- MVAE --------------------------------------------------------------------------------------------------
def test_mvae_matches_hand_computation(fixed_noise):
    m, b = model("mvae", random_subsets=0, attribute_weight=3.0), dbl(batch_of())
    loss, terms = m.loss(b)
    subsets = [tuple(NAMES), ("x",), ("position",), ("digit",)]
    noise = eps((len(subsets), 5, 2)).double()
    total = 0
    for i, s in enumerate(subsets):
        mu, sd = poe([expert(m, n, b) for n in s])
        z = mu + sd * noise[i]
        recon = sum((1.0 if n == "x" else 3.0) * log_lik(m, n, z, b) for n in s)
        elbo = -recon + kl_std(mu, sd)
        assert torch.allclose(terms[f"elbo_{'joint' if len(s) == 3 else s[0]}"], elbo.mean(), rtol=1e-6)
        total = total + elbo
    assert torch.allclose(loss, total.mean(), rtol=1e-6)
    assert "MVAE" in m.describe() and "ELBO(x,position,digit)" in m.describe()


def test_mvae_random_subsets_are_pairs_and_counted(fixed_noise):
    m, b = model("mvae", random_subsets=3), dbl(batch_of())
    torch.manual_seed(5)
    loss, terms = m.loss(b)
    torch.manual_seed(5)
    picks = torch.randint(3, (3,)).tolist()
    pairs = [s for s in nonempty_subsets(NAMES) if len(s) == 2]
    noise = eps((7, 5, 2)).double()
    extra = 0
    for j, i in enumerate(picks):
        s = pairs[i]
        mu, sd = poe([expert(m, n, b) for n in s])
        z = mu + sd * noise[4 + j]
        extra = extra + (-sum(log_lik(m, n, z, b) for n in s) + kl_std(mu, sd))
    assert torch.allclose(terms["elbo_random"], extra.mean(), rtol=1e-6)


# -- MoPoE -------------------------------------------------------------------------------------------------
def test_mopoe_matches_hand_computation(fixed_noise):
    m, b = model("mopoe", attribute_weight=2.0), dbl(batch_of())
    loss, _ = m.loss(b)
    subsets = nonempty_subsets(NAMES)
    noise = eps((7, 5, 2)).double()
    total = 0
    for i, s in enumerate(subsets):
        mu, sd = poe([expert(m, n, b) for n in s])
        z = mu + sd * noise[i]
        recon = sum((1.0 if n == "x" else 2.0) * log_lik(m, n, z, b) for n in NAMES)  # every modality
        total = total + (-recon + kl_std(mu, sd)) / 7
    assert torch.allclose(loss, total.mean(), rtol=1e-6)


@pytest.mark.parametrize("observed", [NAMES, ["x", "position"]])
def test_sampled_mopoe_decodes_one_observed_subset_each_drawn_uniformly(fixed_noise, observed):
    """One example: each loss is one subset's -log p(X|z_S) plus the KLs' exact mean, S ranging over exactly
    the subsets the example observes, each about equally often (so the expectation is MoPoE's L)."""
    m, b = model("mopoe", attribute_weight=2.0, sample_subsets=True), dbl(batch_of(b=1))
    hidden = {n: torch.full((1,), -1) for n in NAMES if n not in observed}
    batch = mark_observed(dict(b, **hidden), MODS)
    subsets = [s for s in nonempty_subsets(NAMES) if set(s) <= set(observed)]
    kls, recons = [], []
    for s in subsets:
        mu, sd = poe([expert(m, n, b) for n in s])
        z = mu + sd * eps((1, 1, 2)).double()[0]
        recons.append(sum((1.0 if n == "x" else 2.0) * log_lik(m, n, z, b) for n in observed))
        kls.append(kl_std(mu, sd))
    by_hand = [float(-r + torch.stack(kls).mean(0).detach()) for r in torch.stack(recons).detach()]
    counts = [0] * len(subsets)
    torch.manual_seed(0)
    for _ in range(40 * len(subsets)):
        loss = float(m.loss(batch)[0].detach())
        hit = [i for i, v in enumerate(by_hand) if abs(v - loss) < 1e-8 * max(1.0, abs(v))]
        assert len(hit) == 1, (loss, by_hand)
        counts[hit[0]] += 1
    assert min(counts) >= 15 and max(counts) <= 70, counts  # 40 expected each; binomial sd about 6


def test_mopoe_samples_subsets_where_there_are_more_than_seven():
    assert model("mopoe").sample_subsets is False  # three modalities: 7 subsets, all decoded
    four = [*MODS, Categorical("scale", ("big", "small"))]
    assert build_model("mopoe", four, z_dim=2, hidden=8).sample_subsets is True  # 15 subsets
    assert build_model("mopoe", four, z_dim=2, hidden=8, sample_subsets=False).sample_subsets is False
    big = build_model("mopoe", four, z_dim=2, hidden=8)
    b = dict(batch_of(b=6), scale=torch.randint(2, (6,)))
    loss, named = big.loss(b)
    loss.backward()
    assert torch.isfinite(loss) and set(named) == {
        "nll_x",
        "nll_position",
        "nll_digit",
        "nll_scale",
        "kl_prior",
    }
    assert all(
        p.grad is not None for p in big.encoders.parameters()
    )  # every expert gets a gradient (KLs, draws)


def test_mopoe_posterior_is_the_mixture_of_subset_products_given_all_else_the_subsets_product():
    m, b = model("mopoe"), dbl(batch_of())
    q = m.posterior(b)
    assert isinstance(q, Mixture) and q.loc.shape == (5, 7, 2)
    z = torch.randn(5, 2, dtype=torch.float64)
    subsets = [s for r in (1, 2, 3) for s in itertools.combinations(NAMES, r)]
    comps = [poe([expert(m, n, b) for n in s]) for s in subsets]
    by_hand = torch.logsumexp(torch.stack([log_normal(z, mu, s) for mu, s in comps]), 0) - math.log(7)
    assert torch.allclose(q.log_prob(z), by_hand, atol=1e-10)
    q = m.posterior({"x": b["x"], "digit": b["digit"]})  # a strict subset: its own product, with the prior
    mu, s = poe([expert(m, n, b) for n in ("x", "digit")])
    assert not isinstance(q, Mixture)
    assert torch.allclose(q.log_prob(z), log_normal(z, mu, s), atol=1e-10)


# -- MMVAE -------------------------------------------------------------------------------------------------
def mmvae_by_hand(m, b, k, lam=1.0):
    params = [expert(m, n, b) for n in NAMES]
    noise = eps((k, 3, 5, 2)).double()
    bounds = []
    for j, (mu, sd) in enumerate(params):
        log_w = []
        for i in range(k):
            z = mu + sd * noise[i, j]
            log_q = torch.logsumexp(
                torch.stack([log_normal(z, mu2, s2) for mu2, s2 in params]), 0
            ) - math.log(3)
            log_pz = log_normal(z, torch.zeros_like(z), torch.ones_like(z))
            log_px = sum((1.0 if n == "x" else lam) * log_lik(m, n, z, b) for n in NAMES)
            log_w.append(log_pz + log_px - log_q)
        bounds.append(torch.logsumexp(torch.stack(log_w), 0) - math.log(k))
    return -torch.stack(bounds).mean(0).mean()


@pytest.mark.parametrize("k", [1, 3])
def test_mmvae_matches_hand_computation(fixed_noise, k):
    m, b = model("mmvae", samples=k, attribute_weight=2.0), dbl(batch_of())
    loss, _ = m.loss(b)
    assert torch.allclose(loss, mmvae_by_hand(m, b, k, 2.0), rtol=1e-6)


def test_mmvae_dreg_keeps_the_bound_and_the_decoder_gradient(fixed_noise):
    b = dbl(batch_of())
    plain, dreg = model("mmvae", samples=3), model("mmvae", samples=3, dreg=True)
    lp, _ = plain.loss(b)
    ld, _ = dreg.loss(b)
    assert torch.allclose(lp, ld, rtol=1e-10)
    lp.backward()
    ld.backward()
    for (name, p1), p2 in zip(plain.named_parameters(), dreg.parameters()):
        if name.startswith("decoders"):
            assert torch.allclose(p1.grad, p2.grad, atol=1e-10), name
    enc = [
        (n, p1.grad, p2.grad)
        for (n, p1), p2 in zip(plain.named_parameters(), dreg.parameters())
        if n.startswith("encoders")
    ]
    assert any(not torch.allclose(g1, g2) for _, g1, g2 in enc)  # DReG changes the encoders' gradient


def test_mmvae_dreg_with_one_sample_is_the_path_gradient(fixed_noise):
    """K = 1: w = 1, so DReG is the gradient through z alone, log q(z|X) with the experts held fixed."""
    m, b = model("mmvae", dreg=True), dbl(batch_of())
    m.loss(b)[0].backward()
    got = {n: p.grad.clone() for n, p in m.named_parameters() if n.startswith("encoders")}
    m.zero_grad()
    params = [expert(m, n, b) for n in NAMES]
    fixed = [(mu.detach(), s.detach()) for mu, s in params]
    noise = eps((1, 3, 5, 2)).double()
    total = 0
    for j, (mu, sd) in enumerate(params):
        z = mu + sd * noise[0, j]
        log_q = torch.logsumexp(torch.stack([log_normal(z, a, s) for a, s in fixed]), 0) - math.log(3)
        total = (
            total
            + log_normal(z, torch.zeros_like(z), torch.ones_like(z))
            + sum(log_lik(m, n, z, b) for n in NAMES)
            - log_q
        )
    (-(total / 3).mean()).backward()
    for n, p in m.named_parameters():
        if n.startswith("encoders"):
            assert torch.allclose(got[n], p.grad, atol=1e-9), n


def test_mmvae_posterior_is_the_uniform_mixture_of_experts():
    m, b = model("mmvae"), dbl(batch_of())
    q = m.posterior({"position": b["position"], "digit": b["digit"]})
    z = torch.randn(5, 2, dtype=torch.float64)
    parts = [expert(m, n, b) for n in ("position", "digit")]
    by_hand = torch.logsumexp(torch.stack([log_normal(z, mu, s) for mu, s in parts]), 0) - math.log(2)
    assert torch.allclose(q.log_prob(z), by_hand, atol=1e-10)


# -- MMVAE+ ------------------------------------------------------------------------------------------------
def mmvaeplus_by_hand(m, b, k, lam, beta, p):
    """The MMVAE+ bound written out: expert j's (z, w_j), every other modality's w from its r."""
    full = [m.encoders[n](b[n]) for n in NAMES]
    shared = [(q.loc[..., :2], q.scale[..., :2]) for q in full]
    private = [(q.loc[..., 2:], q.scale[..., 2:]) for q in full]
    nz, nw, nr = eps((k, 3, 5, 2)).double(), eps((k, 3, 5, p)).double(), eps((k, 3, 5, p)).double()
    bounds = []
    for j in range(3):
        log_w = []
        for i in range(k):
            z = shared[j][0] + shared[j][1] * nz[i, j]
            w = private[j][0] + private[j][1] * nw[i, j]
            log_q = torch.logsumexp(torch.stack([log_normal(z, mu, s) for mu, s in shared]), 0) - math.log(3)
            log_px = 0
            for n_i, n in enumerate(NAMES):
                w_n = w if n_i == j else m.decoders[n].log_scale.exp() * nr[i, j]
                zw = torch.cat([z, w_n], -1)
                log_px = log_px + (1.0 if n == "x" else lam) * log_lik(m, n, zw, b, m.decoders[n].net)
            prior = log_normal(z, 0 * z, 1 + 0 * z) + log_normal(w, 0 * w, 1 + 0 * w)
            log_w.append(log_px + beta * (prior - log_q - log_normal(w, *private[j])))
        bounds.append(torch.logsumexp(torch.stack(log_w), 0) - math.log(k))
    return -torch.stack(bounds).mean(0).mean()


@pytest.mark.parametrize("k", [1, 3])
def test_mmvaeplus_matches_hand_computation(fixed_noise, k):
    m, b = model("mmvaeplus", samples=k, attribute_weight=2.0, beta=1.5, private_dim=3), dbl(batch_of())
    with torch.no_grad():  # each r_n a different width, so a mix-up of whose w is whose shows
        for i, n in enumerate(NAMES):
            m.decoders[n].log_scale.copy_(torch.tensor([0.3, -0.2, 0.5]) * (i - 1))
    loss, terms = m.loss(b)
    assert torch.allclose(loss, mmvaeplus_by_hand(m, b, k, 2.0, 1.5, 3), rtol=1e-6)
    assert set(terms) == {f"nll_{n}" for n in NAMES} | {f"iwae_{n}" for n in NAMES}


def test_mmvaeplus_dreg_keeps_the_bound_and_the_decoder_gradient(fixed_noise):
    b = dbl(batch_of())
    plain, dreg = model("mmvaeplus", samples=3), model("mmvaeplus", samples=3, dreg=True)
    lp, ld = plain.loss(b)[0], dreg.loss(b)[0]
    assert torch.allclose(lp, ld, rtol=1e-10)
    lp.backward()
    ld.backward()
    grads = [(n, p1.grad, p2.grad) for (n, p1), p2 in zip(plain.named_parameters(), dreg.parameters())]
    for name, g1, g2 in grads:
        if name.startswith("decoders"):
            assert torch.allclose(g1, g2, atol=1e-10), name
    assert any(not torch.allclose(g1, g2) for n, g1, g2 in grads if n.startswith("encoders"))


@pytest.mark.parametrize("kind", ["conv", "placed", "posed", "user"])
def test_mmvaeplus_decoder_at_w_zero_is_the_network_at_w_zero_for_every_decoder(kind):
    torch.manual_seed(0)
    net = {
        "conv": lambda: ConvDecoder(5, (32, 32), 16),
        "placed": lambda: PlacedDecoder(5, (32, 32), 16),
        "posed": lambda: PlacedDecoder(5, (32, 32), 16, posed=True),
        "user": lambda: torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4)),
    }[kind]()
    decoder, z = PrivateDecoder(net, 2, 3), torch.randn(4, 2)
    with torch.no_grad():
        if kind == "posed":  # its pose starts at zero, reading nothing
            net.pose[-1].weight.normal_(0.0, 0.3)
        at_zero = net(torch.cat([z, torch.zeros(4, 3)], -1))
        assert torch.allclose(decoder.at_prior_mean()(z), at_zero, atol=1e-6)
        assert not torch.allclose(net(torch.cat([z, torch.ones(4, 3)], -1)), at_zero)  # w is read


def test_mmvaeplus_infers_z_from_the_shared_experts_and_decodes_with_w_from_r():
    m, b = model("mmvaeplus", private_dim=3), dbl(batch_of())
    q = m.posterior({"position": b["position"], "digit": b["digit"]})
    z = torch.randn(5, 2, dtype=torch.float64)
    parts = [m.encoders[n](b[n]) for n in ("position", "digit")]
    by_hand = torch.logsumexp(
        torch.stack([log_normal(z, p.loc[..., :2], p.scale[..., :2]) for p in parts]), 0
    ) - math.log(2)
    assert torch.allclose(q.log_prob(z), by_hand, atol=1e-10)
    decoder = m.decoders["x"]
    with torch.no_grad():
        decoder.log_scale.fill_(-30.0)  # r_x a point at 0: decoding z alone is the network at w = 0
        at_zero = decoder.net(torch.cat([z, torch.zeros(5, 3, dtype=torch.float64)], -1))
        assert torch.allclose(decoder(z), at_zero) and torch.allclose(decoder.at_prior_mean()(z), at_zero)
        decoder.log_scale.fill_(1.0)
        assert not torch.allclose(decoder(z), at_zero)  # else w from a wide r


# -- MVTCAE ------------------------------------------------------------------------------------------------
def kl_normal(mu1, s1, mu2, s2):
    return (s2.log() - s1.log() + (s1**2 + (mu1 - mu2) ** 2) / (2 * s2**2) - 0.5).sum(-1)


def test_mvtcae_matches_hand_computation(fixed_noise):
    m, b = model("mvtcae", attribute_weight=2.0, tc_alpha=0.3, beta=1.7), dbl(batch_of())
    loss, terms = m.loss(b)
    params = [expert(m, n, b) for n in NAMES]
    precision = sum(s**-2 for _, s in params)  # no prior expert
    mu, sd = sum(mu * s**-2 for mu, s in params) / precision, precision**-0.5
    z = mu + sd * eps((5, 2)).double()
    recon = sum((1.0 if n == "x" else 2.0) * log_lik(m, n, z, b) for n in NAMES)
    conditional = sum(kl_normal(mu, sd, e_mu, e_sd) for e_mu, e_sd in params)
    by_hand = (3 - 0.3) / 3 * -recon + 1.7 * ((1 - 0.3) * kl_std(mu, sd) + 0.3 / 3 * conditional)
    assert torch.allclose(loss, by_hand.mean(), rtol=1e-6)
    assert torch.allclose(terms["kl_digit"], kl_normal(mu, sd, *params[2]).mean(), rtol=1e-6)

    q = m.posterior({"position": b["position"], "digit": b["digit"]})  # the product of the two experts
    p_pos, p_dig = params[1], params[2]
    precision = p_pos[1] ** -2 + p_dig[1] ** -2
    assert torch.allclose(q.loc, (p_pos[0] * p_pos[1] ** -2 + p_dig[0] * p_dig[1] ** -2) / precision)
    assert torch.allclose(q.scale, precision**-0.5)
    assert "MVTCAE" in m.describe() and "KL(q(z|x,position,digit) || q(z|m))" in m.describe()


# -- every model: partly labelled batches -----------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_a_fully_observed_mask_changes_nothing(fixed_noise, name):
    m, b = model(name), dbl(batch_of())
    torch.manual_seed(0)
    plain, _ = m.loss(b)
    torch.manual_seed(0)
    masked, _ = m.loss(mark_observed(b, MODS))
    assert torch.allclose(plain, masked, rtol=1e-10)


@pytest.mark.parametrize("name", list(MODELS))
def test_unobserved_attributes_neither_count_nor_train_their_experts(fixed_noise, name):
    """Rows 0-2 have no attributes: their hidden values must not change the loss, and the attribute experts
    (and joint encoder's attribute weights) get no gradient when no row observes them."""
    m, b = model(name), dbl(batch_of())
    partial = dict(b, position=b["position"].clone(), digit=b["digit"].clone())
    partial["position"][:3] = -1
    partial["digit"][:3] = -1
    partial = mark_observed(partial, MODS)
    other = dict(partial, position=partial["position"].clone(), digit=partial["digit"].clone())
    torch.manual_seed(0)
    l1, _ = m.loss(partial)
    # a different filling of the hidden values cannot matter: -1 is what the model sees, so compare against
    # the loss with those rows' true labels observed but masked out
    other[OBSERVED] = partial[OBSERVED]
    other["position"][:3] = b["position"][:3]
    other["digit"][:3] = b["digit"][:3]
    torch.manual_seed(0)
    l2, _ = m.loss(other)
    assert torch.isfinite(l1) and torch.allclose(l1, l2, rtol=1e-10)
    none = dict(b, position=torch.full((5,), -1), digit=torch.full((5,), -1))
    torch.manual_seed(0)
    m.zero_grad()
    m.loss(mark_observed(none, MODS))[0].backward()
    for n in ("position", "digit"):
        grads = [p.grad for p in m.encoders[n].parameters() if p.grad is not None]
        assert all(float(g.abs().max()) == 0 for g in grads), (name, n)
        grads = [p.grad for p in m.decoders[n].parameters() if p.grad is not None]
        assert all(float(g.abs().max()) == 0 for g in grads), (name, n)


def test_jmvae_and_telbo_train_an_unlabelled_image_on_its_own_elbo(fixed_noise):
    b = dbl(batch_of())
    none = mark_observed(dict(b, position=torch.full((5,), -1), digit=torch.full((5,), -1)), MODS)
    # JMVAE's beta weighs that ELBO's KL to p(z) too
    for name, beta in (("jmvae", 1.0), ("telbo", 1.0), ("jmvae", 0.3)):
        m = model(name, **({"beta": beta} if beta != 1 else {}))
        loss, _ = m.loss(none)
        mu, sd = expert(m, "x", b)
        z = mu + sd * eps((5, 2)).double()
        expected = (-log_lik(m, "x", z, b) + beta * kl_std(mu, sd)).mean()
        assert torch.allclose(loss, expected, rtol=1e-6), (name, beta)


# -- networks: replaceable by name, conv for large images ------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_large_images_get_conv_networks_and_any_network_can_be_passed_in(name):
    from torch import nn

    from jmvae.models.mmvaeplus import PrivateDecoder
    from jmvae.networks import ConvDecoder, ConvTrunk, GaussianEncoder

    big = [Image("x", (32, 32)), Categorical("digit", ("a", "b", "c"))]
    torch.manual_seed(0)
    m = build_model(name, big, z_dim=3, hidden=16)
    private = isinstance(m.decoders["x"], PrivateDecoder)  # MMVAE+: networks on [z, w_x], w_x of 2 dims
    width = 3 + 2 * private
    assert isinstance(m.encoders["x"].body, ConvTrunk)
    assert isinstance(m.decoders["x"].net if private else m.decoders["x"], ConvDecoder)
    b = {"x": torch.rand(4, 32 * 32), "digit": torch.tensor([0, 1, 2, 0])}
    loss, _ = m.loss(b)
    loss.backward()
    assert torch.isfinite(loss) and m.generate({"digit": torch.tensor([1])}, 2)["x"].shape == (2, 1, 1024)
    mine = GaussianEncoder(32 * 32, width, 8)
    decoder = nn.Sequential(nn.Linear(width, 1024))
    m = build_model(name, big, z_dim=3, hidden=16, encoders={"x": mine}, decoders={"x": decoder})
    assert m.encoders["x"] is mine and (m.decoders["x"].net if private else m.decoders["x"]) is decoder
    assert torch.isfinite(m.loss(b)[0])
    with pytest.raises(ValueError, match="networks for colour"):
        build_model(name, big, encoders={"colour": mine})


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_trains_and_completes_on_mnist_a_shapes(name):
    """`--preset mnist-a` with any model: conv networks on a 64x64 canvas, four attributes (15 subsets, 240
    label combinations); a step lowers the loss on its batch, and a completed draw keeps the given value."""
    from jmvae.data.mnist_a import ATTRIBUTES
    from jmvae.train import make_optimizer

    mods = [Image("x", (64, 64)), *[Categorical(k, v) for k, v in ATTRIBUTES.items()]]
    torch.manual_seed(0)
    m = build_model(name, mods, z_dim=4, hidden=8)
    b = {
        "x": torch.rand(8, 64 * 64).bernoulli(),
        **{a.name: torch.randint(len(a.classes), (8,)) for a in mods[1:]},
    }
    opt = make_optimizer(m, 1e-3)
    losses = []
    for _ in range(5):
        torch.manual_seed(1)  # the same noise each step: the change is the weights'
        loss, terms = m.loss(b)
        assert torch.isfinite(loss) and all(torch.isfinite(v) for v in terms.values()), name
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0], (name, losses)
    m.eval()
    out = m.generate({"digit": torch.tensor([3, 7]), "location": torch.tensor([0, 2])}, 5, complete=True)
    assert out["x"].shape == (5, 2, 64 * 64) and out["z"].shape == (5, 2, 4)
    assert all(out[a].shape == (5, 2) for a in ATTRIBUTES)


def test_paper_settings_per_model():
    from jmvae.config import TrainConfig

    assert TrainConfig(model="mmvae", paper=True).resolved().samples == 30
    assert TrainConfig(model="mmvae", paper=True).resolved().dreg is True
    assert TrainConfig(model="mvae", paper=True).resolved().attribute_weight == 50
    assert TrainConfig(model="mopoe").resolved().attribute_weight == 50
    assert TrainConfig(model="mopoe", paper=True).resolved().attribute_weight == 1
    mvtcae = TrainConfig(model="mvtcae", paper=True).resolved()
    assert (mvtcae.attribute_weight, mvtcae.tc_alpha, mvtcae.beta) == (1, 0.1, 2.5)
    assert TrainConfig(model="mvtcae").resolved().beta == 1
    plus = TrainConfig(model="mmvaeplus", paper=True).resolved()
    assert (plus.attribute_weight, plus.samples, plus.beta, plus.private_dim) == (1, 1, 2.5, 2)
    assert TrainConfig(model="mmvaeplus", private_dim=8).resolved().model_options()["private_dim"] == 8


def test_only_the_examples_missing_an_attribute_are_decoded_for_their_image_elbo(monkeypatch):
    """The same loss as decoding every row and keeping those examples' ELBOs, with the image decoder run on
    those rows alone."""
    from jmvae.models.jmvae import JMVAE

    m, b = model("jmvae"), dbl(batch_of())
    partial = dict(b, position=b["position"].clone())
    partial["position"][[1, 3]] = -1
    partial = mark_observed(partial, MODS)
    sizes: list[int] = []
    m.decoders["x"].register_forward_hook(lambda mod, i, o: sizes.append(len(i[0])))
    torch.manual_seed(0)
    fast, _ = m.loss(partial)
    assert sizes[-1] == 2
    every_row = JMVAE.image_elbo
    monkeypatch.setattr(
        JMVAE, "image_elbo", lambda self, batch, q_x, rows: every_row(self, batch, q_x, rows | True)
    )
    torch.manual_seed(0)
    slow, _ = m.loss(partial)
    assert sizes[-1] == 5 and torch.allclose(fast, slow, rtol=1e-12)
