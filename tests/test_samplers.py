"""Post-hoc latent samplers (samplers.py): fits against known densities, storage, the commands using them."""

import json
import math

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from jmvae.cli import main
from jmvae.samplers import SamplerConfig, load_sampler, save_sampler

TINY = ["--steps", "30", "--hidden", "32", "--k", "10", "--n-per-query", "5", "--coherence-draws", "300"]


def known_mixture() -> MixtureSameFamily:
    """Three well separated Gaussians, one of them elongated and tilted."""
    means = torch.tensor([[-3.0, 0.0], [2.0, 2.0], [2.0, -2.5]])
    cov = torch.stack(
        [torch.eye(2) * 0.3, torch.tensor([[1.0, 0.8], [0.8, 1.0]]), torch.tensor([[0.2, 0.0], [0.0, 0.05]])]
    )
    return MixtureSameFamily(
        Categorical(probs=torch.tensor([0.5, 0.3, 0.2])), MultivariateNormal(means, covariance_matrix=cov)
    )


def test_gmm_recovers_a_known_mixture_and_beats_the_prior():
    truth = known_mixture()
    torch.manual_seed(0)
    train, test = truth.sample((4000,)), truth.sample((2000,))
    from jmvae.samplers import GaussianMixtureSampler

    gmm = GaussianMixtureSampler(SamplerConfig(components=3), 2)
    gmm.fit(train)
    fitted, true = gmm.log_prob(test).mean(), truth.log_prob(test).mean()
    assert abs(float(fitted - true)) < 0.03  # as good as the density that drew the data
    assert sorted(gmm.weights.tolist()) == pytest.approx([0.2, 0.3, 0.5], abs=0.03)
    drawn = gmm.sample(20000)  # its draws follow the data's density: their log-likelihood under the truth
    reference = truth.sample((20000,))  # is that of the truth's own draws
    assert float(truth.log_prob(drawn).mean()) == pytest.approx(
        float(truth.log_prob(reference).mean()), abs=0.05
    )


def test_maf_learns_a_curved_density_a_gaussian_cannot():
    """A banana: u ~ N(0, 1), v = u^2 / 2 + 0.2 N(0, 1). The flow's held-out log density must beat the best
    single Gaussian's (the maximum likelihood fit, computed here by hand) by a clear margin."""
    from jmvae.samplers import FlowSampler

    def banana(n: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        u = torch.randn(n, generator=g)
        return torch.stack([u, u * u / 2 + 0.2 * torch.randn(n, generator=g)], 1)

    train, test = banana(4000, 0), banana(2000, 1)
    gaussian = MultivariateNormal(train.mean(0), covariance_matrix=torch.cov(train.T))
    flow = FlowSampler(SamplerConfig(kind="maf", steps=800, hidden=32), 2)
    flow.fit(train)
    assert float(flow.log_prob(test).mean()) > float(gaussian.log_prob(test).mean()) + 0.3
    drawn = flow.sample(4000)  # its draws lie on the curve, as the data's do
    assert float((drawn[:, 1] - drawn[:, 0] ** 2 / 2).abs().median()) < 0.3


@pytest.mark.parametrize("kind", ["gmm", "maf"])
def test_a_stored_sampler_loads_back_the_same(tmp_path, kind):
    from jmvae.samplers import SAMPLERS

    cfg = SamplerConfig(kind=kind, components=3, steps=50, seed=4)
    sampler = SAMPLERS[kind](cfg, 2)
    sampler.fit(known_mixture().sample((500,)))
    save_sampler(tmp_path, sampler, {"codes": 500})
    loaded = load_sampler(tmp_path, kind, 2)
    z = torch.randn(100, 2)
    assert torch.equal(loaded.log_prob(z), sampler.log_prob(z))
    torch.manual_seed(1)
    a = sampler.sample(10)
    torch.manual_seed(1)
    assert torch.equal(loaded.sample(10), a)
    from jmvae.errors import UserError

    with pytest.raises(UserError, match="3-dimensional"):
        load_sampler(tmp_path, kind, 3)


def bad(capsys, *argv, expect: str):
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("jmvae: error: ") and expect in err[0], err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("samplers") / "run"
    assert main(["train", "--out", str(out), "--sampler", "gmm", *TINY]) == 0
    return out


@pytest.mark.slow
def test_train_with_a_sampler_reports_its_joint_coherence_beside_the_prior(run_dir):
    assert (run_dir / "sampler-gmm.pt").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    by = metrics["joint_coherence_by_sampler"]
    assert set(by) == {"p(z)", "gmm"} and by["p(z)"] == metrics["joint_coherence"]
    assert 0 <= by["gmm"] <= 1
    assert set(metrics["conditioned"]["gmm"]["correctness"]["by_size"]) == {"1", "2"}
    report = (run_dir / "report.html").read_text()
    assert "joint coherence, gmm sampler" in report and "gmm sampler [95% interval]" in report
    page = (run_dir / "explore.html").read_text()
    assert '"kinds":{"gmm":[' in page


@pytest.mark.slow
def test_samplers_change_no_other_metric(run_dir, tmp_path):
    """Evaluating with a fitted sampler leaves every other number as it was (the sampler draws on a stream of
    its own)."""
    from jmvae.evaluate import EvalConfig, evaluate
    from jmvae.samplers import load_samplers
    from jmvae.train import load_run

    cfg, data, model = load_run(run_dir)
    eval_cfg = EvalConfig(n_per_query=5, k=10, coherence_draws=300)
    plain = evaluate(model, data, cfg, eval_cfg)
    with_gmm = evaluate(model, data, cfg, eval_cfg, samplers=load_samplers(run_dir, model.z_dim))
    for key in (
        "correctness",
        "coverage",
        "joint_coherence",
        "log_likelihood",
        "image_to_attribute_accuracy",
    ):
        assert with_gmm[key] == plain[key], key


@pytest.mark.slow
def test_fit_sampler_generate_and_refusals(run_dir, capsys, tmp_path):
    before = sorted(p.name for p in run_dir.iterdir())
    bad(capsys, "fit-sampler", str(run_dir), "--sampler", "gmm", "--components", "0", expect="--components 0")
    bad(capsys, "fit-sampler", str(run_dir), "--sampler", "maf", "--steps", "-3", expect="--steps -3")
    bad(
        capsys,
        "generate",
        str(run_dir),
        "--sampler",
        "maf",
        "--out",
        str(tmp_path / "a.png"),
        expect="no fitted maf",
    )
    bad(
        capsys,
        "generate",
        str(run_dir),
        "--sampler",
        "gmm",
        "--temperature",
        "0.5",
        "--out",
        str(tmp_path / "a.png"),
        expect="--sampler gmm with --complete or --temperature",
    )
    assert sorted(p.name for p in run_dir.iterdir()) == before and not list(tmp_path.iterdir())

    assert main(["fit-sampler", str(run_dir), "--sampler", "maf", "--steps", "50"]) == 0
    out = capsys.readouterr().out
    assert "joint coherence, 10,000 draws: p(z)" in out and (run_dir / "sampler-maf.pt").is_file()
    assert (
        main(["generate", str(run_dir), "--sampler", "maf", "--n", "7", "--out", str(tmp_path / "m.npz")])
        == 0
    )
    arrays = np.load(tmp_path / "m.npz")
    assert arrays["images"].shape == (7, 28, 56) and str(arrays["sampler"]) == "maf"
    given = ["--given", "digit=2", "--n", "5", "--out", str(tmp_path / "c.npz")]
    assert main(["generate", str(run_dir), "--sampler", "maf", *given]) == 0
    assert int(np.load(tmp_path / "c.npz")["given_digit"]) == 1  # the class index of "2"

    (run_dir / "sampler-maf.pt").write_bytes(b"not a sampler")
    bad(
        capsys,
        "generate",
        str(run_dir),
        "--sampler",
        "maf",
        "--out",
        str(tmp_path / "b.png"),
        expect="cannot be read",
    )
    (run_dir / "sampler-maf.pt").unlink()


@pytest.mark.slow
def test_overwriting_a_run_removes_its_old_samplers(tmp_path):
    out = tmp_path / "run"
    assert (
        main(["train", "--out", str(out), "--sampler", "gmm", "maf", *TINY, "--coherence-draws", "50"]) == 0
    )
    assert (out / "sampler-maf.pt").is_file()
    assert main(["train", "--out", str(out), "--overwrite", *TINY, "--coherence-draws", "50"]) == 0
    assert not (out / "sampler-maf.pt").exists() and not (out / "sampler-gmm.pt").exists()
    assert "joint_coherence_by_sampler" not in json.loads((out / "metrics.json").read_text())


def test_density_on_the_explorer_plane_peaks_where_the_sampler_does():
    from jmvae.explore import DENSITY_GRID, densities
    from jmvae.samplers import GaussianMixtureSampler

    gmm = GaussianMixtureSampler(SamplerConfig(components=1), 2)
    gmm.fit(torch.randn(3000, 2) * 0.3 + torch.tensor([1.5, -1.0]))
    plane = {"origin": [0.0, 0.0], "basis": [[1.0, 0.0], [0.0, 1.0]]}
    grid = torch.tensor(densities({"gmm": gmm}, plane, 3.0)["gmm"]).reshape(DENSITY_GRID, DENSITY_GRID)
    row, col = divmod(int(grid.argmax()), DENSITY_GRID)
    cell = 6.0 / DENSITY_GRID
    u, v = -3 + (col + 0.5) * cell, 3 - (row + 0.5) * cell  # rows from the top
    assert math.hypot(u - 1.5, v + 1.0) < 2 * cell and float(grid.max()) == 1.0


def test_conditioned_draws_follow_the_fitted_density_times_the_decoder():
    """Two clusters, an attribute decoder that says class 1 right of z0 = 0: conditioned on class 1 the draws
    are the right cluster's, on class 0 the left one's, each spread as the fitted density says."""
    from torch import nn

    from jmvae.modalities import Categorical as CategoricalModality
    from jmvae.samplers import GaussianMixtureSampler

    torch.manual_seed(0)
    centres = torch.tensor([[-3.0, 0.0], [3.0, 0.0]])
    codes = centres[torch.randint(2, (4000,))] + 0.5 * torch.randn(4000, 2)
    gmm = GaussianMixtureSampler(SamplerConfig(components=2), 2)
    gmm.fit(codes)

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.decoders = nn.ModuleDict({"side": nn.Linear(2, 2)})
            with torch.no_grad():  # logits (0, 10 z0): class 1 where z0 > 0
                self.decoders["side"].weight.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0]]))
                self.decoders["side"].bias.zero_()
            self.modalities = {"side": CategoricalModality("side", ("left", "right"))}

    z = gmm.conditioned(Toy(), {"side": torch.tensor([1, 0])}, 3000, pool=20_000)
    assert z.shape == (3000, 2, 2)
    assert float((z[:, 0, 0] > 0).float().mean()) > 0.99 and float((z[:, 1, 0] < 0).float().mean()) > 0.99
    assert z[:, 0].mean(0).tolist() == pytest.approx([3.0, 0.0], abs=0.1)
    assert float(z[:, 0, 1].std()) == pytest.approx(0.5, abs=0.05)


def test_auto_codes_are_the_joint_means_unless_the_joint_posterior_is_a_mixture():
    """auto: q(z|x,y) means for the product-of-experts and joint-encoder models (MVAE's q(z|x) may carry no
    attribute), q(z|x) means for the mixtures (their joint mean lies between components), and q(z|x) where
    no training example has every attribute."""
    from jmvae.data.own import from_arrays
    from jmvae.models import MODELS, build_model
    from jmvae.samplers import auto_codes, fit_sampler

    g = torch.Generator().manual_seed(0)
    images = torch.rand(60, 8, 8, generator=g).numpy()
    colour = np.array(["red", "blue", "green"] * 20, dtype=object)
    data = from_arrays({"image": images, "colour": colour, "size": np.linspace(0.0, 1.0, 60)})
    mixtures = {"mmvae", "mopoe", "mmvaeplus"}
    for name in MODELS:
        torch.manual_seed(0)
        model = build_model(name, data.modalities, hidden=8)
        assert auto_codes(model, data) == ("image-mean" if name in mixtures else "joint-mean"), name
    model = build_model("mvae", data.modalities, hidden=8)
    sampler, scores = fit_sampler(model, data, SamplerConfig(seed=1))
    assert sampler.cfg.codes == "joint-mean" and scores["codes"] == len(data.train["image"])
    size = np.where(np.arange(60) % 2 == 0, np.nan, np.linspace(0.0, 1.0, 60))  # never both observed
    colour = np.where(np.arange(60) % 2 == 1, None, colour)
    disjoint = from_arrays({"image": images, "colour": colour, "size": size}, kinds={"size": "continuous"})
    torch.manual_seed(0)
    assert auto_codes(build_model("mvae", disjoint.modalities, hidden=8), disjoint) == "image-mean"
