import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal

from jmvae.modalities import Categorical, Image
from jmvae.models import JMVAE, PAPER, TELBO, build_model, options
from jmvae.networks import CONV_WIDTHS, FALLBACK, JointEncoder, conv_recipe
from jmvae.posteriors import Gaussian, Mixture, divergences, kl, product_of_experts, standard_normal
from jmvae.subsets import OBSERVED

MODALITIES = [
    Image("x", (4, 6)),
    Categorical("position", ("left", "right")),
    Categorical("digit", ("1", "2", "3")),
]


def batch(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "x": torch.rand(n, 24, generator=g),
        "position": torch.randint(0, 2, (n,), generator=g),
        "digit": torch.randint(0, 3, (n,), generator=g),
    }


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
    return Gaussian(loc, F.softplus(s))


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


def test_joint_encoder_draws_from_the_seed_only_what_the_single_linear_would():
    """Its parts (overwritten at once) are built without moving the random stream, so every later network,
    and so every seeded run, starts from the weights it had before the split."""
    torch.manual_seed(5)
    JointEncoder(24, [2, 3], z_dim=2, hidden=16)
    after_split = torch.rand(4)
    torch.manual_seed(5)
    torch.nn.Linear(24 + 5, 16), torch.nn.Linear(16, 16), torch.nn.Linear(16, 4)  # first layer, body, head
    assert torch.equal(after_split, torch.rand(4))


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
    assert same(
        m.posterior({"position": b["position"], "digit": b["digit"]}),
        product_of_experts([q_pos, q_dig], prior=True),
    )
    assert same(
        m.posterior({"x": b["x"], "digit": b["digit"]}), product_of_experts([q_x, q_dig], prior=False)
    )
    assert m.posterior(b).loc.shape == (5, z_dim)
    with pytest.raises(ValueError, match="allowed"):
        m.posterior({})
    with pytest.raises(ValueError, match="colour"):
        m.posterior({"colour": b["digit"]})


def test_jmvae_loss_is_the_founding_equation():
    torch.manual_seed(0)
    m = JMVAE(MODALITIES, z_dim=2, hidden=16, **PAPER | {"alpha": 0.5})
    b = batch()
    torch.manual_seed(5)
    loss, terms = m.loss(b)
    # By hand, with the same reparameterisation noise.
    torch.manual_seed(5)
    q = m.posterior(b)
    z = q.rsample()
    logits = m.logits(z)
    nll = (
        torch.nn.functional.binary_cross_entropy_with_logits(logits["x"], b["x"], reduction="none").sum(-1)
        + torch.nn.functional.cross_entropy(logits["position"], b["position"], reduction="none")
        + torch.nn.functional.cross_entropy(logits["digit"], b["digit"], reduction="none")
    )
    q_y = m.posterior({"position": b["position"], "digit": b["digit"]})
    expected = nll + kl(q, standard_normal(q.loc)) + 0.5 * (kl(q, m.posterior({"x": b["x"]})) + kl(q, q_y))
    assert torch.allclose(loss, expected.mean(), atol=1e-5)
    assert set(terms) == {"nll_x", "nll_position", "nll_digit", "kl_prior", "kl_x", "kl_y"}
    assert "0.5" in m.describe() and "q(z|x)" in m.describe()


def test_jmvae_zero_leaves_unimodal_encoders_untrained():
    torch.manual_seed(0)
    m = build_model("jmvae", MODALITIES, z_dim=2, hidden=16, **PAPER | {"alpha": 0.0})
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
        nll = sum(
            F.binary_cross_entropy_with_logits(logits[n], b[n], reduction="none").sum(-1)
            if n == "x"
            else F.cross_entropy(logits[n], b[n], reduction="none")
            for n in v
        )
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


def nll_by_hand(logits, b, names, weights=None):
    """-log p(m|z) written out: BCE-with-logits for the image, cross-entropy for attributes, each weighted."""
    weights = weights or {}
    return sum(
        weights.get(n, 1.0)
        * (
            F.binary_cross_entropy_with_logits(logits[n], b[n], reduction="none").sum(-1)
            if n == "x"
            else F.cross_entropy(logits[n], b[n], reduction="none")
        )
        for n in names
    )


def test_jmvae_options_are_their_equation_by_hand():
    """lambda, beta, every attribute subset, the two cross reconstructions and the prior term, against the
    equation written out with the same reparameterisation noise (the draws happen in the same order)."""
    torch.manual_seed(0)
    m = JMVAE(
        MODALITIES,
        z_dim=2,
        hidden=16,
        alpha=0.7,
        attribute_weight=5.0,
        beta=0.6,
        every_subset=True,
        attribute_recon=2.0,
        image_recon=0.3,
        image_target="paired",
        prior_recon=0.4,
    )
    b = batch(n=6)
    torch.manual_seed(5)
    loss, terms = m.loss(b)
    torch.manual_seed(5)
    q = m.posterior(b)
    z = q.rsample()
    lam = {"position": 5.0, "digit": 5.0}
    expected = nll_by_hand(m.logits(z), b, ["x", "position", "digit"], lam) + 0.6 * kl(
        q, standard_normal(q.loc)
    )
    z_p = torch.randn_like(z)  # the prior term: every draw i against every example j
    s_ij = torch.stack([Normal(q.loc[j], q.scale[j]).log_prob(z_p).sum(-1) for j in range(6)], -1).softmax(-1)
    at_p = m.logits(z_p)
    for i in range(6):
        for j in range(6):
            lp = (
                F.logsigmoid(at_p["x"][i]) * b["x"][j] + F.logsigmoid(-at_p["x"][i]) * (1 - b["x"][j])
            ).sum()
            lp = lp + 5.0 * sum(at_p[a][i].log_softmax(-1)[b[a][j]] for a in ("position", "digit"))
            expected[i] = expected[i] - 0.4 * s_ij[i, j] * lp
    subsets = [("position",), ("digit",), ("position", "digit")]
    q_s = [m.posterior({a: b[a] for a in s}) for s in subsets]
    expected = expected + 0.7 * (kl(q, m.posterior({"x": b["x"]})) + sum(kl(q, qs) for qs in q_s))
    for s, qs in zip(subsets, q_s):
        zs = qs.rsample()
        names = list(s) + (["x"] if len(s) == 2 else [])
        expected = expected + nll_by_hand(m.logits(zs), b, names, {a: 2.0 * 5.0 for a in s} | {"x": 0.3})
    assert torch.allclose(loss, expected.mean(), atol=1e-4)
    assert {"kl_position", "kl_digit", "kl_y", "nll_x|y", "nll_position|position", "nll_position|y"} <= set(
        terms
    )
    text = m.describe()
    assert (
        "5 log p(position,digit|z)" in text
        and "+ 0.6 KL(q(z|x,position,digit) || p(z))" in text
        and "q(z|position)) +" in text
        and "0.3 E_q(z|position,digit)[log p(x|z)]" in text
    )
    assert "0.4 E_p(z)[sum_j s_j(z) (log p(x_j|z) + 5 log p(position_j,digit_j|z))]" in text


def test_jmvae_defaults_that_match_the_paper_give_the_founding_loss():
    """With the published options, the loss is the founding equation (the same value as before the
    options)."""
    torch.manual_seed(0)
    m = build_model("jmvae", MODALITIES, z_dim=2, hidden=16, **PAPER)
    b = batch()
    torch.manual_seed(2)
    loss, terms = m.loss(b)
    torch.manual_seed(2)
    q = m.posterior(b)
    z = q.rsample()
    expected = (
        nll_by_hand(m.logits(z), b, ["x", "position", "digit"])
        + kl(q, standard_normal(q.loc))
        + kl(q, m.posterior({"x": b["x"]}))
        + kl(q, m.posterior({"position": b["position"], "digit": b["digit"]}))
    )
    assert torch.allclose(loss, expected.mean(), atol=1e-5)
    assert set(terms) == {"nll_x", "nll_position", "nll_digit", "kl_prior", "kl_x", "kl_y"}


def test_mixture_experts_posterior_and_monte_carlo_kl():
    """With mixture attribute experts, q(z|y) is their product with the prior (a mixture), and the KL to it is
    log q(z) - log q_y(z) at the objective's own draw: unbiased against a large Monte-Carlo average."""
    torch.manual_seed(0)
    m = JMVAE(MODALITIES, z_dim=2, hidden=16, components=3)
    b = batch(n=4)
    q_y = m.posterior({"position": b["position"], "digit": b["digit"]})
    assert isinstance(q_y, Mixture) and q_y.loc.shape == (4, 9, 2)
    experts = [m.encoders[a](b[a]) for a in ("position", "digit")]
    z = torch.randn(50, 4, 2)
    direct = product_of_experts(experts, prior=True)
    assert torch.allclose(q_y.log_prob(z), direct.log_prob(z), atol=1e-5)
    q = m.posterior(b)
    draws = q.sample((100_000,))
    mc = (q.log_prob(draws) - q_y.log_prob(draws)).mean(0)
    one = torch.stack([divergences(q, q.rsample(), [q_y])[0] for _ in range(2000)]).mean(0)
    assert torch.allclose(one, mc, rtol=0.05, atol=0.05)
    loss, _ = m.loss(b)
    loss.backward()
    assert m.encoders["digit"].head.weight.grad.abs().max() > 0
    images = m.generate({"digit": torch.tensor([0, 2])}, 5, temperature=0.5)["x"]
    assert images.shape == (5, 2, 24)


def test_telbo_options_are_their_elbos_by_hand():
    """lambda on every attribute term, an ELBO per attribute subset, and gamma_x log p(x|z) in ELBO(y)."""
    torch.manual_seed(0)
    m = TELBO(MODALITIES, z_dim=2, hidden=16, attribute_weight=3.0, every_subset=True, image_recon=0.5)
    b = batch(n=6)
    torch.manual_seed(4)
    loss, terms = m.loss(b)
    torch.manual_seed(4)
    views = [
        (("x", "position", "digit"), {"x": 1.0, "position": 3.0, "digit": 3.0}),
        (("x",), {"x": 1.0}),
        (("position",), {"position": 3.0}),
        (("digit",), {"digit": 3.0}),
        (("position", "digit"), {"position": 3.0, "digit": 3.0, "x": 0.5}),
    ]
    qs = [m.posterior({n: b[n] for n in given}) for given, _ in views]
    expected = 0
    for q, (_, weights) in zip(qs, views):
        z = q.rsample()
        expected = (
            expected + nll_by_hand(m.logits(z), b, list(weights), weights) + kl(q, standard_normal(q.loc))
        )
    assert torch.allclose(loss, expected.mean(), atol=1e-4)
    assert {"elbo_position", "elbo_digit", "elbo_y", "nll_x|y"} <= set(terms)
    assert "ELBO(position | q(z|position))" in m.describe()


def test_build_model_names_options_the_model_does_not_take():
    with pytest.raises(ValueError, match="components for model telbo"):
        build_model("telbo", MODALITIES, components=2)
    assert "alpha" in options("jmvae") and "alpha" not in options("telbo")


def test_matched_image_target_weights_the_batch_images_of_the_class_by_the_joint_posterior():
    """At a draw z of q(z|y), the matched target scores every batch image with the same attributes, weighted
    by q(z|x_j,y) normalised over them; an image alone in its class is its own target (as paired)."""
    torch.manual_seed(0)
    m = JMVAE(MODALITIES, z_dim=2, hidden=16, image_recon=1.0, image_target="matched")
    b = batch(n=9, seed=3)
    b["position"][:4], b["digit"][:4] = 1, 2  # rows 0-3 share their attributes; row 8 is alone
    b["position"][8], b["digit"][8] = 0, 0
    b["position"][4:8] = 1
    b["digit"][4:8] = torch.tensor([0, 0, 1, 1])
    q = m.posterior(b)
    z = torch.randn(2, 9, 2)  # two draws per example (as for two mixture components)
    got = m._image_from_attributes("x", z, b, q)
    logits = m.decoders["x"](z)
    for k in range(2):
        for i in range(9):
            same = [
                j for j in range(9) if b["position"][j] == b["position"][i] and b["digit"][j] == b["digit"][i]
            ]
            log_q = torch.stack([Normal(q.loc[j], q.scale[j]).log_prob(z[k, i]).sum() for j in same])
            r = log_q.softmax(0)
            lp = torch.stack([m.modalities["x"].log_likelihood(logits[k, i], b["x"][j]) for j in same])
            assert torch.allclose(got[k, i], (r * lp).sum(), atol=1e-3), (k, i)
    assert torch.allclose(got[:, 8], m.modalities["x"].log_likelihood(logits[:, 8], b["x"][8]), atol=1e-3)
    assert "r_j(z)" in m.describe()


def test_recon_draws_average_the_gamma_terms_over_the_first_n_examples_draws():
    """recon_draws = n: the prior term and the reconstructions from q(z|y_S) are averaged over n draws (of
    p(z), and of q(z|y_S) for the batch's first n examples, each scored against every image of the batch), the
    rest of the loss over all B examples; written out by hand with the same noise, drawn in the same order."""
    torch.manual_seed(0)
    n = 3
    m = JMVAE(
        MODALITIES, z_dim=2, hidden=16, attribute_recon=2.0, image_recon=0.3, prior_recon=0.4, recon_draws=n
    )
    b = batch(n=8, seed=6)
    b["position"][:4], b["digit"][:4] = (
        1,
        2,
    )  # rows 0-3 share their attributes: the matched image has 4 targets
    torch.manual_seed(5)
    loss, terms = m.loss(b)
    torch.manual_seed(5)
    q = m.posterior(b)
    z = q.rsample()
    subsets = [("position",), ("digit",), ("position", "digit")]
    q_s = [m.posterior({a: b[a] for a in s}) for s in subsets]
    main = nll_by_hand(m.logits(z), b, ["x", "position", "digit"]) + kl(q, standard_normal(q.loc))
    main = main + kl(q, m.posterior({"x": b["x"]})) + sum(kl(q, qs) for qs in q_s)

    def log_q(j, z_i):  # log q(z_i | x_j, y_j)
        return Normal(q.loc[j], q.scale[j]).log_prob(z_i).sum()

    def log_px(logits_i, j):
        return (F.logsigmoid(logits_i) * b["x"][j] + F.logsigmoid(-logits_i) * (1 - b["x"][j])).sum()

    gamma = torch.zeros(n)
    z_p = torch.randn(n, 2)
    at_p = m.logits(z_p)
    for i in range(n):
        s_i = torch.stack([log_q(j, z_p[i]) for j in range(8)]).softmax(0)
        for j in range(8):
            lp = log_px(at_p["x"][i], j) + sum(
                at_p[a][i].log_softmax(-1)[b[a][j]] for a in ("position", "digit")
            )
            gamma[i] = gamma[i] + 0.4 * s_i[j] * lp
    for s, qs in zip(subsets, q_s):
        zs = Gaussian(qs.loc[:n], qs.scale[:n]).rsample()
        at_s = m.logits(zs)
        for i in range(n):
            gamma[i] = gamma[i] + sum(2.0 * at_s[a][i].log_softmax(-1)[b[a][i]] for a in s)
            if len(s) == 2:
                same = [
                    j
                    for j in range(8)
                    if b["position"][j] == b["position"][i] and b["digit"][j] == b["digit"][i]
                ]
                r = torch.stack([log_q(j, zs[i]) for j in same]).softmax(0)
                gamma[i] = gamma[i] + 0.3 * sum(r_j * log_px(at_s["x"][i], j) for r_j, j in zip(r, same))
    assert torch.allclose(loss, main.mean() - gamma.mean(), atol=1e-4)
    assert {"nll_x|y", "nll_x|p(z)", "nll_position|position", "kl_y"} <= set(terms)
    # n at least the batch: every example's draw, as recon_draws = 0 does
    every = [JMVAE(MODALITIES, z_dim=2, hidden=16, prior_recon=0.4, recon_draws=k) for k in (0, 8, 50)]
    for other in every[1:]:
        other.load_state_dict(every[0].state_dict())
    losses = []
    for other in every:
        torch.manual_seed(7)
        losses.append(other.loss(b)[0])
    assert torch.allclose(losses[0], losses[1]) and torch.allclose(losses[0], losses[2])


def test_matched_image_target_of_the_first_n_examples_is_their_rows_of_the_whole_batchs():
    """Draws for only the first n examples still match against every labelled image of the batch: the same
    values as the whole batch's first n rows, with and without unlabelled examples."""
    torch.manual_seed(0)
    m = JMVAE(MODALITIES, z_dim=2, hidden=16)
    b = batch(n=10, seed=8)
    b["position"][:6], b["digit"][:6] = 0, 1
    q = m.posterior(b)
    z = torch.randn(1, 10, 2)
    labelled = torch.tensor([True, False] * 5)
    for mask in (None, labelled):
        whole = m._image_from_attributes("x", z, b, q, mask)
        assert torch.allclose(m._image_from_attributes("x", z[:, :4], b, q, mask), whole[:, :4], atol=1e-5)


def test_generate_decodes_in_chunks_with_the_same_draws(monkeypatch):
    """`generate` decodes GENERATE_ROWS latents at a time (a conv decoder on MNIST-A's 120,000 draws took the
    machine's 24 GB at once): the same images, whatever the chunk size."""
    from jmvae.models import base

    m = JMVAE(MODALITIES, z_dim=2, hidden=16)
    given = {"position": torch.tensor([0, 1, 1]), "digit": torch.tensor([1, 0, 1])}
    torch.manual_seed(0)
    whole = m.generate(given, 7)
    monkeypatch.setattr(base, "GENERATE_ROWS", 4)
    torch.manual_seed(0)
    chunked = m.generate(given, 7)
    assert whole["x"].shape == (7, 3, MODALITIES[0].size) and torch.equal(whole["z"], chunked["z"])
    assert torch.allclose(whole["x"], chunked["x"], atol=1e-6)
    assert torch.equal(whole["digit"], chunked["digit"]) and torch.equal(
        whole["position"], chunked["position"]
    )


def test_prior_term_teaches_both_decoders_the_nearest_code_at_draws_of_the_prior():
    """gamma_p: at draws z_i of p(z), image and attributes are scored against the batch's examples weighted by
    q(z_i|x_j,y_j) normalised over the batch; with tight, well-separated codes that is the nearest example.
    A batch with an unlabelled example has no term."""
    m = JMVAE(MODALITIES, z_dim=2, hidden=16, attribute_weight=3.0, prior_recon=0.5)
    b = batch(n=6, seed=4)
    loc = torch.tensor([[-2.0, -2.0], [2.0, 2.0], [-2.0, 2.0], [2.0, -2.0], [0.0, 0.0], [0.5, 0.0]])
    q = Gaussian(loc, torch.full_like(loc, 0.05))
    z = 2 * torch.randn(6, 2, generator=torch.Generator().manual_seed(1))  # wide draws reach every code
    logits = m.logits(z)
    got = m.prior_reconstruction(b, q, z, logits)
    nearest = torch.cdist(z, loc).argmin(-1)
    want_x = 0.5 * m.modalities["x"].log_likelihood(logits["x"], b["x"][nearest])
    want_digit = 0.5 * 3.0 * m.modalities["digit"].log_likelihood(logits["digit"], b["digit"][nearest])
    assert set(got) == {"nll_x|p(z)", "nll_position|p(z)", "nll_digit|p(z)"}
    assert len(set(nearest.tolist())) > 2  # the draws find several codes
    assert torch.allclose(got["nll_x|p(z)"], want_x, atol=1e-3)
    assert torch.allclose(got["nll_digit|p(z)"], want_digit, atol=1e-3)
    partly = dict(b, **{OBSERVED: torch.tensor([[1, 1, 1]] * 5 + [[1, 0, 1]], dtype=torch.bool)})
    partly["position"] = torch.where(partly[OBSERVED][:, 1], partly["position"], -1)
    _, named = m.loss(partly)
    assert (
        float(named["nll_x|p(z)"]) == 0 and float(m.loss(b)[1]["nll_x|p(z)"]) != 0
    )  # only fully labelled batches
    # a batch of a partly labelled split that happens to be fully labelled logs the same terms as the others
    full = dict(b, **{OBSERVED: torch.ones(6, 3, dtype=torch.bool)})
    assert list(m.loss(full)[1]) == list(named)


def test_prior_term_enters_the_loss_at_its_weight():
    """The loss with gamma_p is the loss without it minus gamma_p times the (gamma_p = 1) term, on the same
    noise (no image term here: its draws come after the prior's); the terms are logged, and the objective says
    it."""
    b = batch(n=8, seed=5)
    torch.manual_seed(0)
    m = JMVAE(MODALITIES, z_dim=2, hidden=16, image_recon=0.0, prior_recon=1.0)
    torch.manual_seed(2)
    with_term, named = m.loss(b)
    m.prior_recon = 0.0
    torch.manual_seed(2)
    without, _ = m.loss(b)
    prior = named["nll_x|p(z)"] + named["nll_position|p(z)"] + named["nll_digit|p(z)"]
    assert torch.allclose(with_term, without + prior, atol=1e-3)
    assert prior > 0 and "E_p(z)" in JMVAE(MODALITIES, prior_recon=0.3).describe()
    assert "E_p(z)" not in JMVAE(MODALITIES, prior_recon=0.0).describe()


def test_completed_generation_draws_the_missing_attributes_from_the_model_and_keeps_the_given_ones():
    """generate(complete=True): each image's missing attribute is drawn from p(a|z) at z ~ q(z|given), and z
    comes from q(z | given and drawn). A posterior whose mean spells out the attributes it was given shows
    which values reached it, so a mixed-up row (query j's value given to query k) or an argmax instead of a
    draw would show."""
    from torch import nn

    from jmvae.modalities import Categorical, Image
    from jmvae.models.base import MultimodalVAE
    from jmvae.posteriors import Gaussian

    class Spelled(MultimodalVAE):
        def posterior(self, given):
            rows = next(iter(given.values())).shape[0]
            loc = torch.stack(
                [given[a].float() if a in given else torch.full((rows,), -1.0) for a in ("colour", "shape")],
                -1,
            )
            return Gaussian(loc, torch.full_like(loc, 1e-4))

    class Fixed(nn.Module):  # p(shape|z) = (0.2, 0.5, 0.3) wherever z is
        def forward(self, z):
            return torch.tensor([0.2, 0.5, 0.3]).log().expand(*z.shape[:-1], 3)

    torch.manual_seed(0)
    mods = [
        Image("x", (4, 4)),
        Categorical("colour", ("r", "g", "b", "k")),
        Categorical("shape", ("o", "x", "v")),
    ]
    model = Spelled(mods, z_dim=2, hidden=8, decoders={"shape": Fixed()})
    colours = torch.tensor([3, 0, 2])
    n = 4000
    plain = model.generate({"colour": colours}, n)["z"]
    assert torch.allclose(plain[..., 1], torch.tensor(-1.0), atol=0.01)  # q(z|colour) alone: nothing drawn
    out = model.generate({"colour": colours}, n, temperature=0.5, complete=True)
    z = out["z"]
    assert z.shape == (n, 3, 2) and out["x"].shape == (n, 3, 16)
    assert torch.equal(z[..., 0].round(), colours.float().expand(n, 3))  # every image kept its query's colour
    shapes = z[..., 1].round().long()
    for j in range(3):
        share = torch.bincount(shapes[:, j], minlength=3).double() / n
        assert torch.allclose(share, torch.tensor([0.2, 0.5, 0.3], dtype=torch.double), atol=0.03), share
    everything = model.generate({"colour": colours, "shape": torch.tensor([1, 1, 2])}, 8, complete=True)["z"]
    assert torch.equal(
        everything[..., 1].round(), torch.tensor([1.0, 1.0, 2.0]).expand(8, 3)
    )  # nothing missing


@pytest.mark.parametrize(
    "shape, network, recipe",
    [
        ((64, 64), "conv4", "conv4"),
        ((32, 32), "conv4", "conv4"),  # a 2x2 grid at the end
        ((40, 40), "conv4", "conv3"),  # divides by 8, not by 16: the next smaller recipe
        ((64, 64), "conv3", "conv3"),
        ((28, 56), "conv4", None),  # the founding experiment's canvas: the MLP
        ((24, 24), "conv3", None),
        ((64, 64), "mlp", None),
        ((28, 28), "conv2", "conv2"),  # PolyMNIST's size: a 7x7 grid
        ((28, 28), "conv3", None),  # conv2 only where asked for: 28x28 MNIST keeps its MLP
        ((30, 30), "conv2", None),
        ((64, 64), "conv3-light", "conv3-light"),
        ((32, 48), "conv3-light", "conv3-light"),
        ((48, 48), "conv3-light", "conv3-light"),
        ((36, 36), "conv3-light", None),  # not divisible by 8: the MLP, as conv3
        ((24, 24), "conv3-light", None),
    ],
)
def test_image_network_recipe_falls_back_to_what_the_image_size_allows(shape, network, recipe):
    assert conv_recipe(Image("x", shape, network=network)) == recipe
    assert set(FALLBACK) == set(CONV_WIDTHS)  # every recipe says where it falls back to


@pytest.mark.parametrize("network, layers", [("conv3", 3), ("conv3-light", 3), ("conv4", 4), ("mlp", 0)])
def test_image_network_builds_every_image_network_of_a_model_and_trains(network, layers):
    image = Image("x", (64, 64), channels=3, network=network)
    model = build_model("jmvae", [image, Categorical("y", ("a", "b", "c"))], z_dim=4, hidden=32)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    deconvs = [m for m in model.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convs) == 2 * layers and len(deconvs) == layers  # joint and image encoders, the decoder
    if layers:  # each encoder through the recipe's channels, the decoder through its own
        encoder, dec = CONV_WIDTHS[network]
        assert sorted(c.out_channels for c in convs) == sorted(2 * encoder)
        assert [d.in_channels for d in deconvs] == list(dec)
    batch = {"x": torch.rand(5, 3 * 64 * 64), "y": torch.tensor([0, 1, 2, 0, 1])}
    loss, _ = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and model.logits(torch.zeros(2, 4))["x"].shape == (2, 3 * 64 * 64)


@pytest.mark.parametrize("shape, channels, stride", [((64, 64), 1, 4), ((32, 48), 3, 2), ((32, 32), 1, 1)])
def test_a_placed_glyph_lands_where_z_places_it_over_the_background(shape, channels, stride):
    """PlacedDecoder: with all weight on one offset the glyph sits there, every other pixel at the background
    logit; with the weight split between two offsets the canvas is their weighted sum (by hand), for offsets
    every 4, 2 and 1 pixels (laid by FFT: nothing wraps round the canvas's edges)."""
    from jmvae.networks import PlacedDecoder, low_precision

    torch.manual_seed(0)
    dec = PlacedDecoder(3, shape, hidden=32, channels=channels, stride=stride)
    rows, cols = dec.offsets
    assert (rows, cols) == ((shape[0] // 2) // stride + 1, (shape[1] // 2) // stride + 1)
    gh, gw = shape[0] // 2, shape[1] // 2
    z = torch.randn(2, 5, 3)  # leading sample dimension too
    with torch.no_grad():
        dec.background.copy_(torch.linspace(-3, -1, channels))
        head = dec.where[-1]
        head.weight.zero_()
        glyph = dec.glyph(z).reshape(2, 5, channels, gh, gw)
        bg = dec.background[:, None, None]

        def at(k):  # the canvas of the glyph laid at offset k alone
            i, j = divmod(k, cols)
            canvas = bg.expand(2, 5, channels, *shape).clone()
            canvas[..., stride * i : stride * i + gh, stride * j : stride * j + gw] = glyph
            return canvas

        k1, k2 = cols + 1, rows * cols - 1  # one step in each way; the far corner
        head.bias.fill_(-1e4)
        head.bias[k1] = 0.0
        assert torch.allclose(dec(z).reshape(2, 5, channels, *shape), at(k1), atol=1e-5)
        head.bias[k2] = math.log(3.0)  # weights 1/4 and 3/4
        mixed = 0.25 * (at(k1) - bg) + 0.75 * (at(k2) - bg) + bg
        assert torch.allclose(dec(z).reshape(2, 5, channels, *shape), mixed, atol=1e-5)
        assert dec(torch.zeros(0, 3)).shape == (0, channels * shape[0] * shape[1])
        with low_precision(torch.bfloat16):
            low = dec(z)
            ink, where = dec.ink(z.reshape(10, 3)), dec.placement(z.reshape(10, 3))
        assert low.dtype == torch.float32 and torch.allclose(low, dec(z), atol=0.1)
        # laid in float32 under autocast too (by FFT, which has no bfloat16): the canvas is the float32
        # weighted sum of the bfloat16 glyphs, not a bfloat16 one (off by up to ~1e-2)
        weights = where.float().reshape(10, 1, rows, cols).expand(10, channels, rows, cols)
        laid = torch.nn.functional.conv_transpose2d(
            weights.reshape(1, 10 * channels, rows, cols),
            ink.float().reshape(10 * channels, 1, gh, gw),
            stride=stride,
            groups=10 * channels,
        )
        assert torch.allclose(low, (laid.reshape(10, channels, *shape) + bg).reshape(low.shape), atol=1e-5)


def test_posed_turns_scales_and_shifts_a_glyph_rigidly_in_pixels():
    """networks.posed on a 32x48 glyph with one lit pixel (8.5 right of the centre, 0.5 above): a quarter turn
    carries it to 8.5 below (rigid: a turn in [-1, 1] coordinates would squeeze it to 5.7), a shift of
    2/48 one pixel right (turned with the glyph: one pixel down after a quarter turn), a doubled scale to a
    2x2 patch (its mass times 4) twice as far out; under bfloat16 autocast it places as in float32 (a
    bfloat16 grid moved a 16x24 glyph left as it was by up to 0.2), and an empty batch passes through."""
    from jmvae.networks import low_precision, posed

    ink = torch.zeros(1, 1, 32, 48)
    ink[0, 0, 15, 32] = 1.0

    def lit(pose, at=0.5):
        out = posed(ink, torch.tensor([pose]))
        return [tuple(p) for p in (out[0, 0] > at).nonzero().tolist()], float(out.sum())

    assert lit([math.pi / 2, 0.0, 0.0, 0.0]) == ([(24, 24)], pytest.approx(1.0, abs=1e-5))
    assert lit([0.0, 0.0, 2 / 48, 0.0]) == ([(15, 33)], pytest.approx(1.0, abs=1e-5))
    assert lit([0.0, 0.0, 0.0, 0.0]) == ([(15, 32)], pytest.approx(1.0, abs=1e-5))
    assert lit([math.pi / 2, 0.0, 2 / 48, 0.0]) == ([(25, 24)], pytest.approx(1.0, abs=1e-5))
    patch, mass = lit([0.0, math.log(2.0), 0.0, 0.0], at=0.2)
    assert sorted(patch) == [(14, 40), (14, 41), (15, 40), (15, 41)] and mass == pytest.approx(4.0, abs=1e-4)
    glyphs, still = torch.randn(2, 3, 16, 24), torch.zeros(2, 4)
    with low_precision(torch.bfloat16):
        low = posed(glyphs, still.bfloat16())
    assert low.dtype == torch.float32 and torch.equal(low, posed(glyphs, still))
    assert torch.allclose(low, glyphs, atol=1e-5)
    assert posed(torch.zeros(0, 3, 16, 24), torch.zeros(0, 4)).shape == (0, 3, 16, 24)


def test_a_posed_decoder_starts_as_the_placed_one_and_its_pose_is_read_from_z():
    """--image-decoder posed: from the same seed its first image is the placed decoder's exactly (the pose
    starts as the identity); once the pose's head is trained the image moves with z."""
    from jmvae.networks import PlacedDecoder

    torch.manual_seed(0)
    placed = PlacedDecoder(3, (64, 64), hidden=32)
    torch.manual_seed(0)
    posed = PlacedDecoder(3, (64, 64), hidden=32, posed=True)
    z = torch.randn(4, 3)
    assert torch.equal(placed(z), posed(z))
    assert len(posed.z_readers()) == 3 and all(r.in_features == 3 for r in posed.z_readers())
    with torch.no_grad():
        posed.pose[-1].weight.normal_()
    assert not torch.allclose(placed(z), posed(z), atol=1e-3)
    loss = posed(z).sum()
    loss.backward()
    assert posed.pose[0].weight.grad.abs().sum() > 0
