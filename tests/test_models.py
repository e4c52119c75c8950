import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal

from jmvae.gaussian import kl, product_of_experts, standard_normal
from jmvae.modalities import Categorical, Image
from jmvae.models import JMVAE, TELBO, build_model

MODALITIES = [Image("x", (4, 6)), Categorical("position", ("left", "right")), Categorical("digit", ("1", "2", "3"))]


def batch(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.rand(n, 24, generator=g), "position": torch.randint(0, 2, (n,), generator=g),
            "digit": torch.randint(0, 3, (n,), generator=g)}


def same(a: Normal, b: Normal):
    return torch.allclose(a.loc, b.loc, atol=1e-6) and torch.allclose(a.scale, b.scale, atol=1e-6)


def plain_mlp_posterior(m, name: str, b) -> Normal:
    """The founding experiment's encoder written out: an MLP on the one-hot (joint: on [x, one-hots])."""
    one_hot = {a: F.one_hot(b[a], m.modalities[a].size).float() for a in ("position", "digit")}
    if name == "joint":
        enc = m.joint_encoder
        weight, bias = enc.first_layer()
        h = F.linear(torch.cat([b["x"], one_hot["position"], one_hot["digit"]], -1), weight, bias)
        out = enc.head(enc.body(h))
    else:
        enc = m.encoders[name]
        out = enc.head(F.relu(enc.body(one_hot[name])))
    loc, s = out.chunk(2, -1)
    return Normal(loc, F.softplus(s))


def test_attribute_encoders_match_the_plain_mlp_in_value_and_gradient():
    """JointEncoder's split first layer and ClassEncoder's per-class table are only a cheaper way to run
    the MLP on one-hot inputs: same posteriors, same gradients for every weight."""
    torch.manual_seed(0)
    m = JMVAE(MODALITIES, z_dim=3, hidden=16)
    b = batch(n=40, seed=2)
    for name, fast in (("joint", lambda: m.posterior(b)), ("digit", lambda: m.encoders["digit"](b["digit"]))):
        enc = m.joint_encoder if name == "joint" else m.encoders[name]
        grads = []
        for q in (fast(), plain_mlp_posterior(m, name, b)):
            m.zero_grad()
            (q.loc.square().sum() + q.scale.log().sum() * 0.3).backward()
            grads.append([p.grad.clone() for p in enc.parameters()])
        assert same(fast(), plain_mlp_posterior(m, name, b))
        assert all(torch.allclose(g1, g2, atol=1e-5) for g1, g2 in zip(*grads))
        assert all(g.abs().max() > 0 for g in grads[0])


def test_joint_encoder_starts_as_the_single_linear_it_stands_for():
    """Same weights as nn.Linear(image + classes, hidden) drawn from the same seed, W and b round-trip."""
    torch.manual_seed(3)
    m = JMVAE(MODALITIES, z_dim=2, hidden=16)
    torch.manual_seed(3)
    first = torch.nn.Linear(24 + 2 + 3, 16)
    weight, bias = m.joint_encoder.first_layer()
    assert torch.equal(weight, first.weight) and torch.equal(bias, first.bias)
    m.joint_encoder.set_first_layer(2 * weight, bias + 1)
    assert torch.equal(m.joint_encoder.first_layer()[0], 2 * weight)


@pytest.mark.parametrize("z_dim", [1, 2, 7])
def test_posterior_rules(z_dim):
    torch.manual_seed(0)
    m = JMVAE(MODALITIES, z_dim=z_dim, hidden=16)
    b = batch()
    q_pos, q_dig, q_joint = (plain_mlp_posterior(m, name, b) for name in ("position", "digit", "joint"))
    q_x = m.encoders["x"](b["x"])
    assert same(m.posterior(b), q_joint)
    assert same(m.posterior({"x": b["x"]}), q_x)
    assert same(m.posterior({"position": b["position"]}), product_of_experts([q_pos], prior=True))
    assert same(m.posterior({"position": b["position"], "digit": b["digit"]}), product_of_experts([q_pos, q_dig], prior=True))
    assert same(m.posterior({"x": b["x"], "digit": b["digit"]}), product_of_experts([q_x, q_dig], prior=False))
    assert m.posterior(b).loc.shape == (5, z_dim)
    with pytest.raises(ValueError, match="allowed"):
        m.posterior({})
    with pytest.raises(ValueError, match="colour"):
        m.posterior({"colour": b["digit"]})


def test_jmvae_loss_is_the_founding_equation():
    torch.manual_seed(0)
    m = JMVAE(MODALITIES, z_dim=2, hidden=16, alpha=0.5)
    b = batch()
    torch.manual_seed(5)
    loss, terms = m.loss(b)
    # By hand, with the same reparameterisation noise.
    torch.manual_seed(5)
    q = m.posterior(b)
    z = q.rsample()
    logits = m.logits(z)
    nll = (torch.nn.functional.binary_cross_entropy_with_logits(logits["x"], b["x"], reduction="none").sum(-1)
           + torch.nn.functional.cross_entropy(logits["position"], b["position"], reduction="none")
           + torch.nn.functional.cross_entropy(logits["digit"], b["digit"], reduction="none"))
    q_y = m.posterior({"position": b["position"], "digit": b["digit"]})
    expected = nll + kl(q, standard_normal(q.loc)) + 0.5 * (kl(q, m.posterior({"x": b["x"]})) + kl(q, q_y))
    assert torch.allclose(loss, expected.mean(), atol=1e-5)
    assert set(terms) == {"nll_x", "nll_position", "nll_digit", "kl_prior", "kl_x", "kl_y"}
    assert "0.5" in m.describe() and "q(z|x)" in m.describe()


def test_jmvae_zero_leaves_unimodal_encoders_untrained():
    torch.manual_seed(0)
    m = build_model("jmvae", MODALITIES, z_dim=2, hidden=16, alpha=0.0)
    m.loss(batch())[0].backward()
    for name in ("x", "position", "digit"):
        assert all(p.grad is None or p.grad.abs().max() == 0 for p in m.encoders[name].parameters())
    assert m.joint_encoder.head.weight.grad.abs().max() > 0


def test_telbo_is_three_elbos():
    torch.manual_seed(0)
    m = TELBO(MODALITIES, z_dim=3, hidden=16)
    b = batch()
    torch.manual_seed(9)
    loss, terms = m.loss(b)
    assert torch.allclose(loss, (terms["elbo_xy"] + terms["elbo_x"] + terms["elbo_y"]), atol=1e-5)
    # The y-ELBO scores only the attributes, the x-ELBO only the image.
    assert "nll_x|y" not in terms and "nll_position|x" not in terms
    assert {"nll_x|x", "nll_position|y", "nll_digit|y"} <= set(terms)
    loss.backward()
    for name in ("x", "position", "digit"):  # every encoder is trained by some ELBO
        assert m.encoders[name].head.weight.grad.abs().max() > 0


def test_telbo_loss_is_three_elbos_by_hand():
    """The batched TELBO (each decoder run once over the ELBOs that score it) against the three ELBOs
    written out one by one, with the same reparameterisation noise."""
    torch.manual_seed(0)
    m = TELBO(MODALITIES, z_dim=2, hidden=16)
    b = batch(n=7)
    torch.manual_seed(5)
    loss, terms = m.loss(b)
    torch.manual_seed(5)
    views = [("x", "position", "digit"), ("x",), ("position", "digit")]
    qs = [m.posterior({n: b[n] for n in v}) for v in views]
    expected = 0
    for q, v in zip(qs, views):
        z = q.rsample()
        logits = m.logits(z, list(v))
        nll = sum(F.binary_cross_entropy_with_logits(logits[n], b[n], reduction="none").sum(-1) if n == "x"
                  else F.cross_entropy(logits[n], b[n], reduction="none") for n in v)
        expected = expected + nll + kl(q, standard_normal(q.loc))
    assert torch.allclose(loss, expected.mean(), atol=1e-4)
    assert torch.allclose(loss, terms["elbo_xy"] + terms["elbo_x"] + terms["elbo_y"], atol=1e-4)


def test_generate_shapes_and_prior():
    torch.manual_seed(0)
    m = JMVAE(MODALITIES, z_dim=2, hidden=16)
    out = m.generate({"position": torch.tensor([0, 1, 1])}, n=4)
    assert out["x"].shape == (4, 3, 24) and out["position"].shape == (4, 3) and out["z"].shape == (4, 3, 2)
    assert 0 <= out["x"].min() and out["x"].max() <= 1
    prior = m.generate({}, n=6)
    assert prior["x"].shape == (6, 1, 24)
    dists = m.decode(out["z"])
    assert dists["digit"].probs.shape == (4, 3, 3)


def test_build_model_rejects_unknown():
    with pytest.raises(ValueError, match="allowed: jmvae, telbo"):
        build_model("vae", MODALITIES)


def test_log_likelihoods_are_bce_and_cross_entropy_and_broadcast_over_draws():
    """Image: minus BCE-with-logits per example; Categorical: minus cross-entropy. With K draws of logits per
    example (importance sampling) each draw scores the same observation."""
    g = torch.Generator().manual_seed(1)
    image, digit = MODALITIES[0], MODALITIES[2]
    x, y = torch.rand(5, 24, generator=g), torch.randint(0, 3, (5,), generator=g)
    lx, ly = 8 * torch.randn(4, 5, 24, generator=g), 3 * torch.randn(4, 5, 3, generator=g)
    for k in range(4):
        bce = F.binary_cross_entropy_with_logits(lx[k], x, reduction="none").sum(-1)
        assert torch.allclose(image.log_likelihood(lx[k], x), -bce, atol=1e-4)
        assert torch.allclose(image.log_likelihood(lx, x)[k], -bce, atol=1e-4)
        ce = F.cross_entropy(ly[k], y, reduction="none")
        assert torch.allclose(digit.log_likelihood(ly[k], y), -ce, atol=1e-5)
        assert torch.allclose(digit.log_likelihood(ly, y)[k], -ce, atol=1e-5)
