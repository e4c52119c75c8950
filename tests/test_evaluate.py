import copy
import math

import pytest
import torch
from torch import nn
from torch.distributions import Normal

from jmvae.classifier import accuracy, blur, classifier_for
from jmvae.data.attributes import seeded_subset, to_batch
from jmvae.evaluate import (
    attribute_accuracy,
    correctness_coverage,
    coverage_of,
    format_headline,
    importance_log_means,
    joint_coherence,
    jsd,
    log_likelihood_examples,
    queries,
    wilson,
)
from jmvae.posteriors import Gaussian
from jmvae.report import write_report


@pytest.fixture(scope="session")
def classifier(founding_data):
    clf, acc = classifier_for(founding_data)
    return clf, acc


@pytest.mark.slow
def test_the_classifier_is_trained_once_per_dataset_whatever_the_run(classifier, founding_data, monkeypatch):
    """Runs of other seeds or models on the same data load the cached instrument; other data trains its
    own."""
    import jmvae.classifier as module

    trained = []

    def train(data, steps, images=None):
        trained.append(data)
        return module.AttributeClassifier(data.images, {a.name: a.size for a in data.attributes})

    monkeypatch.setattr(module, "train_classifier", train)
    same = copy.copy(founding_data)
    same.train, same.test = {k: v.clone() for k, v in founding_data.train.items()}, dict(founding_data.test)
    clf, acc = classifier_for(same)
    assert trained == [] and acc == classifier[1]
    same.train["x"][0, 0] += 1  # one pixel of one training image differs
    classifier_for(same)
    assert trained == [same]


class RealImageModel(nn.Module):
    """A "model" made of real test images: a perfect one, one that ignores what it is given, or one that
    draws the wrong digit with probability `wrong_digit`.

    posterior({x}).loc carries the image's true attributes; logits(z) reads them back; generate() returns
    real images with the given attributes (perfect) or random real images (ignores its input).
    """

    def __init__(self, data, ignore_input: bool = False, wrong_digit: float = 0.0):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.data, self.ignore_input, self.wrong_digit = data, ignore_input, wrong_digit
        self.names = [a.name for a in data.attributes]
        self.z_dim = len(self.names)
        self.lookup = {bytes(row.numpy()): i for i, row in enumerate(data.test["x"])}

    def posterior(self, given):
        idx = torch.tensor(
            [self.lookup[bytes((row * 255).round().to(torch.uint8).numpy())] for row in given["x"]]
        )
        loc = torch.stack([self.data.test[a][idx].float() for a in self.names], -1)
        return Gaussian(loc, torch.ones_like(loc))

    def logits(self, z, names=None):
        return {
            a: torch.stack([-(z[..., i] - c).abs() for c in range(2)], -1)
            for i, a in enumerate(self.names)
            if names is None or a in names
        }

    def pool(self, query: dict[str, int]) -> torch.Tensor:
        """Indices of the test images that show every attribute of `query`."""
        match = torch.ones(len(self.data.test["x"]), dtype=torch.bool)
        for a, v in query.items():
            match &= self.data.test[a] == int(v)
        return match.nonzero().squeeze(-1)

    def generate(self, given, n, temperature=1.0, complete=False):
        g = torch.Generator().manual_seed(0)
        b = len(next(iter(given.values())))
        out = torch.empty(n, b, self.data.test["x"].shape[1])
        for j in range(b):
            query = {} if self.ignore_input else {a: int(v[j]) for a, v in given.items()}
            pool = self.pool(query)
            out[:, j] = to_batch(self.data.test, pool[torch.randint(len(pool), (n,), generator=g)])["x"]
            if "digit" in query and self.wrong_digit:
                wrong = self.pool(query | {"digit": 1 - query["digit"]})
                flip = torch.rand(n, generator=g) < self.wrong_digit
                out[flip, j] = to_batch(
                    self.data.test, wrong[torch.randint(len(wrong), (int(flip.sum()),), generator=g)]
                )["x"]
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
    proposal = Gaussian(torch.zeros(4, 2), 1.5 * torch.ones(4, 2))
    est = importance_log_means(proposal, 20_000, log_joint)["log p(x)"]
    assert torch.allclose(est, exact, atol=0.02), (est, exact)
    # The estimate is a lower bound in expectation: a poor proposal with few samples falls below.
    few = importance_log_means(Gaussian(torch.full((4, 2), 3.0), 0.3 * torch.ones(4, 2)), 5, log_joint)[
        "log p(x)"
    ]
    assert (few < exact).all()


def test_queries_cover_every_subset_and_seen_combination(founding_data):
    qs = queries(founding_data)
    assert len(qs) == 2 + 2 + 4
    assert {tuple(q) for q in qs} == {("position",), ("digit",), ("position", "digit")}


@pytest.mark.slow
def test_classifier_reads_real_images(classifier):
    _, acc = classifier
    assert acc["position"] > 0.99 and acc["digit"] > 0.95


@pytest.mark.slow
def test_classifier_reads_blurred_dimmed_digits_like_crisp_ones(founding_data, classifier):
    """Generated images are grey, blurred means: the classifier must read a dim, blurred 2 as a 2 (one trained
    on crisp digits only read 15% of such real test digits wrong), or faithful images count as failures."""
    clf, acc = classifier
    degraded = accuracy(clf, founding_data, founding_data.test, degraded=True)
    assert degraded["position"] > 0.99 and degraded["digit"] > acc["digit"] - 0.02
    x = to_batch(founding_data.test, slice(0, 8))["x"]
    blurred = blur(x, founding_data.images[0].shape, 1.1)
    assert torch.allclose(blurred.sum(-1), x.sum(-1), rtol=0.05)  # blurring moves ink, keeps most of it
    assert (blurred - x).abs().max() > 0.2 and blurred.max() < x.max()  # ... and spreads it out


@pytest.mark.slow
def test_perfect_model_scores_one(founding_data, classifier):
    clf, _ = classifier
    model = RealImageModel(founding_data)
    cc = correctness_coverage(model, founding_data, clf, n=20)
    assert cc["correctness"]["by_size"]["2"] > 0.97 and cc["correctness"]["by_size"]["1"] > 0.97
    assert attribute_accuracy(model, founding_data, ("x",)) == {"position": 1.0, "digit": 1.0}


@pytest.mark.slow
def test_model_ignoring_its_input_is_at_chance_with_full_coverage(founding_data, classifier):
    clf, _ = classifier
    cc = correctness_coverage(RealImageModel(founding_data, ignore_input=True), founding_data, clf, n=400)
    for size in ("1", "2"):
        assert abs(cc["correctness"]["by_size"][size] - 0.5) < 0.07
    assert cc["coverage"]["by_size"]["1"] > 0.98
    # A perfect model's single-attribute queries also cover the free attribute: real images of both kinds.
    perfect = correctness_coverage(RealImageModel(founding_data), founding_data, clf, n=400)
    assert perfect["coverage"]["by_size"]["1"] > 0.98


@pytest.mark.slow
def test_joint_coherence_of_a_decoder_that_agrees_with_itself(founding_data, classifier):
    clf, _ = classifier

    class Decoder(RealImageModel):
        """z ~ p(z); p(a|z) from the sign of z; the image a real test image with those attributes (or with the
        other digit: then the image and p(digit|z) disagree)."""

        flip = 0

        def generate(self, given, n, temperature=1.0, complete=False):
            if given:
                return super().generate(given, n, temperature)
            z = torch.randn(n, 1, 2)
            pos, dig = (z[..., 0] > 0).long(), (z[..., 1] > 0).long()
            images = super().generate({"position": pos[:, 0], "digit": dig[:, 0] ^ self.flip}, 1)["x"][0]
            return {"z": z, "x": images.unsqueeze(1), "position": pos, "digit": dig}

    model = Decoder(founding_data)
    assert joint_coherence(model, founding_data, clf, draws=300) > 0.97
    model.flip = 1
    assert joint_coherence(model, founding_data, clf, draws=300) < 0.05


# -- intervals, per-query rows, report ----------------------------------------------------------------------
def test_wilson_interval_matches_reference_values():
    # Newcombe (1998, Stat. Med. 17:857), Table I, method 3 (score interval, no continuity correction);
    # 0/n and n/n by the closed form z^2/(n + z^2); 5/10 by inverting the score test numerically.
    reference = {
        (81, 263): (0.2553, 0.3662),
        (15, 148): (0.0624, 0.1605),
        (0, 20): (0.0, 0.1611),
        (1, 29): (0.0061, 0.1718),
        (0, 10): (0.0, 0.2775),
        (10, 10): (0.7225, 1.0),
        (5, 10): (0.2366, 0.7634),
    }
    for (s, n), interval in reference.items():
        assert wilson(s / n, n) == pytest.approx(list(interval), abs=6e-5), (s, n)


class CodedModel(nn.Module):
    """A model whose "images" are the codes of their attributes, read exactly by `CodeReader`: every rate is
    known. A given position is drawn wrong with probability wrong["position"], a given digit with
    wrong["digit"]; a free position is left with probability `left`, a free digit is uniform."""

    def __init__(self, wrong: dict[str, float], left: float = 0.7):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.wrong, self.left = wrong, left

    def generate(self, given, n, temperature=1.0, complete=False):
        b = len(next(iter(given.values())))
        codes = {"position": (torch.rand(n, b) > self.left).long(), "digit": torch.randint(2, (n, b))}
        for a, v in given.items():
            codes[a] = torch.where(torch.rand(n, b) < self.wrong[a], 1 - v, v).expand(n, b)
        return {"x": torch.stack([codes["position"], codes["digit"]], -1).float()}


class CodeReader:
    classes = {"position": 2, "digit": 2}

    def predict(self, drawn):
        x = drawn["x"]
        return {"position": x[..., 0].long(), "digit": x[..., 1].long()}


def coded_truth(query: dict[str, int], wrong: dict[str, float], left: float) -> dict[str, float]:
    right = [1 - wrong[a] for a in query]
    truth = {"correctness": sum(right) / len(right), "all_correct": math.prod(right)}
    if len(query) == 1:
        truth["coverage"] = 1 - jsd(
            torch.tensor([left, 1 - left]) if "digit" in query else torch.ones(2), torch.ones(2)
        )
    return truth


def test_intervals_cover_known_rates_in_repeated_runs(founding_data):
    # Over 40 seeded runs of 500 images per query, each 95% interval should hold the true rate about 95% of
    # the time (Wilson is conservative for |O| = 2). Uniform free digits put coverage at its upper bound of 1,
    # where an uncorrected percentile bootstrap misses about half the time.
    wrong, left = {"position": 0.02, "digit": 0.05}, 0.7
    hits: dict[str, list[bool]] = {"correctness": [], "all_correct": [], "coverage": [], "by_size": []}
    for seed in range(40):
        torch.manual_seed(seed)
        cc = correctness_coverage(
            CodedModel(wrong, left), founding_data, CodeReader(), n=500, resamples=500, seed=seed
        )
        for row in cc["queries"]:
            query = {
                a: founding_data.attribute(a).index(v)
                for a, v in (p.split("=") for p in row["label"].split(","))
            }
            truth = coded_truth(query, wrong, left)
            for metric in truth:
                lo, hi = row[f"{metric}_interval"]
                hits[metric].append(lo <= truth[metric] <= hi)
                assert lo <= row[metric] <= hi
        lo, hi = cc["correctness"]["by_size_interval"]["2"]
        hits["by_size"].append(lo <= (0.98 + 0.95) / 2 <= hi)
    share = {k: sum(v) / len(v) for k, v in hits.items()}
    assert min(share.values()) >= 0.88, share


@pytest.mark.slow
def test_rows_of_a_model_that_draws_the_wrong_digit(founding_data, classifier):
    # The real classifier reads the real images drawn: each query's true rates follow exactly from what it
    # reads on the pools the fake model draws from.
    clf, _ = classifier
    model, p_wrong = RealImageModel(founding_data, wrong_digit=0.05), 0.05
    cc = correctness_coverage(model, founding_data, clf, n=500)
    read = clf.predict(to_batch(founding_data.test, slice(None)))
    rows = {r["label"]: r for r in cc["queries"]}
    assert set(rows) == {
        "position=left",
        "position=right",
        "digit=1",
        "digit=2",
        "position=left,digit=1",
        "position=left,digit=2",
        "position=right,digit=1",
        "position=right,digit=2",
    }
    for q in queries(founding_data):
        row = rows[",".join(f"{a}={founding_data.attribute(a).classes[v]}" for a, v in q.items())]
        draws = (
            [(1.0, q)] if "digit" not in q else [(1 - p_wrong, q), (p_wrong, q | {"digit": 1 - q["digit"]})]
        )
        truth = sum(
            w * torch.stack([read[a][model.pool(pool)] == v for a, v in q.items()]).float().mean()
            for w, pool in draws
        )
        lo, hi = row["correctness_interval"]
        assert lo <= float(truth) <= hi and lo <= row["correctness"] <= hi, (row["label"], float(truth), row)
        assert (
            row["n"] == 500 and row["subset"] == list(q) and row["all_correct"] <= row["correctness"] + 1e-9
        )
        if list(q) == ["digit"]:  # 95% right digits, read by a classifier that is right ~99% of the time
            assert abs(float(truth) - 0.95) < 0.02
        for a in founding_data.attributes:
            assert sum(row["readings"][a.name].values()) == pytest.approx(1.0)
            assert list(row["readings"][a.name]) == list(a.classes)
        if len(q) == 1:  # coverage of the free attribute, exactly, from the classifier's reading of the pool
            free = "digit" if "position" in q else "position"
            hist = torch.bincount(read[free][model.pool(q)], minlength=2)
            lo, hi = row["coverage_interval"]
            assert lo <= float(coverage_of(hist)) <= hi, (row["label"], float(coverage_of(hist)), row)
        else:
            assert "coverage" not in row and "coverage_interval" not in row
    assert rows["position=left"]["readings"]["position"]["left"] > 0.99
    assert cc["correctness"]["by_query"] == {k: r["correctness"] for k, r in rows.items()}
    lo, hi = cc["correctness"]["by_size_interval"]["1"]
    assert lo <= cc["correctness"]["by_size"]["1"] <= hi
    lo, hi = cc["coverage"]["by_size_interval"]["1"]
    assert lo <= cc["coverage"]["by_size"]["1"] <= hi


def fake_metrics(cc: dict, low: dict | None = None) -> dict:
    """What evaluate() returns around correctness_coverage's part, for the report."""
    return (
        cc
        | ({"at_temperature": {"0.5": low}} if low else {})
        | {
            "classifier_test_accuracy": {"position": 1.0, "digit": 0.99},
            "image_to_attribute_accuracy": {"q(z|x)": {"position": 1.0, "digit": 0.9}},
            "joint_coherence": 0.9,
            "log_likelihood": {"log p(x)": -100.0},
            "log_likelihood_standard_error": {"log p(x)": 0.8},
            "settings": {"k": 1000, "n_per_query": 500, "test_examples": 4334, "likelihood_examples": 500},
        }
    )


def report_page(tmp_path, metrics: dict) -> str:
    config = {
        "train": {"model": "jmvae", "preset": "position-digit", "z_dim": 2, "seed": 0},
        "total_steps": 1,
        "mnist_source": "test",
        "n_train": 1,
        "n_test": 1,
        "objective": "L",
    }
    return write_report(tmp_path, config, metrics, [], []).read_text()


def test_report_marks_the_failing_queries(founding_data, tmp_path):
    # Digits are drawn wrong 5% of the time: every query that gives the digit misses correctness >= 0.99;
    # position queries (never wrong, digit free and uniform) meet both targets.
    torch.manual_seed(0)
    model = CodedModel({"position": 0.0, "digit": 0.05})
    cc = correctness_coverage(model, founding_data, CodeReader(), n=500)
    low = correctness_coverage(model, founding_data, CodeReader(), n=500, temperature=0.5)
    page = report_page(tmp_path, fake_metrics(cc, low) | {"completed": {"0.25": low}})
    assert (
        "<h2>Queries</h2>" in page
        and "6 of 8 queries miss the targets" in page
        and "at 500 images per query" in page
    )
    for label in ("position=left", "position=right"):
        assert f'<tr class="ok"><td class="status">ok</td><td>{label}</td>' in page
    for label in ("digit=1", "position=right,digit=2"):
        assert f'<tr class="fails"><td class="status">fails: correctness</td><td>{label}</td>' in page
    assert page.count('<tr class="fails">') == 6 and "tr.fails td{background" in page
    assert "position: left 100%; digit: 1 " in page  # what the classifier read
    assert "T = 0.5 [95% interval]" in page and "correctness, T = 0.5" in page
    assert "completed, T = 0.25 [95% interval]" in page and "correctness, completed, T = 0.25" in page
    assert "likelihoods on 500 of 4,334 test images (seeded subsample)" in page.lower()
    lo, hi = cc["correctness"]["by_size_interval"]["1"]
    assert (
        f"{cc['correctness']['by_size']['1']:.4f} [{lo:.4f}, {hi:.4f}]" in page
    )  # headline with its interval
    text = format_headline(fake_metrics(cc, low) | {"completed": {"0.25": low}})
    assert "worst query" in text and "6 of 8" in text and "T = 0.5:" in text and "more" not in text
    assert "completed, T = 0.25:" in text


def test_terminal_names_the_ten_worst_failing_queries_of_many(founding_data):
    torch.manual_seed(0)
    cc = correctness_coverage(
        CodedModel({"position": 0.0, "digit": 0.05}), founding_data, CodeReader(), n=100
    )
    rows = [
        dict(cc["queries"][-1], label=f"q{i}", correctness=0.5 + i / 100) for i in range(30)
    ]  # 30 failing queries
    line = next(
        l
        for l in format_headline(fake_metrics(cc | {"queries": rows})).splitlines()
        if "missing the targets" in l
    )
    assert (
        "30 of 30" in line
        and "q0, q1" in line
        and "q9," not in line
        and "q9 and 20 more" in line
        and "q10" not in line
    )


@pytest.mark.slow
def test_report_of_a_model_ignoring_its_input(founding_data, classifier, tmp_path):
    clf, _ = classifier
    cc = correctness_coverage(RealImageModel(founding_data, ignore_input=True), founding_data, clf, n=100)
    page = report_page(tmp_path, fake_metrics(cc))
    assert "8 of 8 queries miss the targets" in page and page.count('<tr class="fails">') == 8
    assert "fails: correctness" in page and "at 100 images per query" in page


def test_likelihood_subsample_is_seeded_and_used(founding_data):
    n = len(founding_data.test["x"])
    a, b = seeded_subset(n, 50, seed=0), seeded_subset(n, 50, seed=1)
    assert torch.equal(a, seeded_subset(n, 50, seed=0)) and not torch.equal(a, b)
    assert (
        len(a.unique()) == 50 and torch.equal(a, a.sort().values) and 0 <= int(a.min()) and int(a.max()) < n
    )
    assert torch.equal(seeded_subset(n, n + 1, seed=0), torch.arange(n))
    # The estimates are those of exactly the subsampled images.
    from jmvae.config import TrainConfig
    from jmvae.train import build

    _, model = build(TrainConfig(hidden=16), quiet=True)
    torch.manual_seed(0)
    sub = log_likelihood_examples(model, founding_data, k=4, examples=50, seed=0)
    picked = copy.copy(founding_data)
    picked.test = {k: v[a] for k, v in founding_data.test.items()}
    torch.manual_seed(0)
    assert all(torch.equal(sub[k], v) for k, v in log_likelihood_examples(model, picked, k=4).items())
