"""The MNIST-A generator (the TELBO paper's four-attribute benchmark) on a small set of real digits."""

import numpy as np
import pytest
import torch

from jmvae.data.mnist import load_bundled
from jmvae.data.mnist_a import ATTRIBUTES, CANVAS, combinations, generate, render, transform


@pytest.fixture(scope="module")
def digits():
    mnist = load_bundled()
    pick = np.concatenate([np.flatnonzero(mnist.labels == d)[:6] for d in range(10)])
    return mnist.images[pick], mnist.labels[pick]


@pytest.fixture(scope="module")
def iid(digits):
    return generate(*digits, renders=4, seed=0, split="iid")


def test_labels_lie_in_their_ranges_and_every_value_occurs(iid, digits):
    assert iid.images.shape == (240, CANVAS, CANVAS) and iid.images.dtype == np.uint8
    for name, values in ATTRIBUTES.items():
        assert set(np.unique(iid.labels[name])) == set(range(len(values))), (
            name
        )  # 240 draws reach every value
    assert np.array_equal(iid.labels["digit"], np.repeat(digits[1], 4))  # the digit is the MNIST label


def test_same_seed_same_set_other_seed_other_set(digits, iid):
    again = generate(*digits, renders=4, seed=0, split="iid")
    other = generate(*digits, renders=4, seed=1, split="iid")
    assert np.array_equal(again.images, iid.images) and all(
        np.array_equal(again.labels[k], iid.labels[k]) for k in ATTRIBUTES
    )
    assert not np.array_equal(other.images, iid.images)


@pytest.mark.slow
def test_iid_split_is_a_partition_85_5_10(iid):
    rows = [iid.split[k] for k in ("train", "val", "test")]
    assert [len(r) for r in rows] == [204, 12, 24]
    assert np.array_equal(np.sort(np.concatenate(rows)), np.arange(240))


@pytest.mark.slow
def test_compositional_split_keeps_test_combinations_out_of_training(digits):
    data = generate(*digits, renders=8, seed=0, split="compositional")
    code = lambda rows: {tuple(data.labels[k][i] for k in ATTRIBUTES) for i in rows}  # noqa: E731
    train, val, test = (code(data.split[k]) for k in ("train", "val", "test"))
    assert train and test and not (train & test) and not (train & val) and not (val & test)
    assert sum(len(data.split[k]) for k in data.split) == 480
    assert len(combinations()) == 240


def test_a_rendered_digit_lies_in_its_quadrant_at_its_scale_and_orientation(digits):
    rng = np.random.default_rng(3)
    one = digits[0][digits[1] == 1][0]
    for _ in range(60):
        image, labels = render(one, 1, rng)
        ys, xs = np.nonzero(image > 64)
        cy, cx = ys.mean(), xs.mean()  # centre of the ink
        location = ATTRIBUTES["location"][labels["location"]]
        assert (cy > CANVAS / 2) == location.startswith("bottom"), (location, cy)
        assert (cx > CANVAS / 2) == location.endswith("right"), (location, cx)
    # scale: the ink's height follows it
    heights = {scale: transform(one, scale, 0.0).shape[0] for scale in (0.5, 1.0)}
    assert abs(heights[0.5] - heights[1.0] / 2) <= 1.5, heights

    # orientation: the ink's principal axis turns by the angle (counterclockwise positive), within 10 degrees
    def axis(angle: float) -> float:
        ys, xs = np.nonzero(transform(one, 1.0, angle) > 64)
        up = -ys.astype(float)  # rows grow downwards
        c = np.cov(xs, up)
        return np.degrees(0.5 * np.arctan2(2 * c[0, 1], c[0, 0] - c[1, 1]))

    for angle in (-45.0, 45.0):
        turned = (axis(angle) - axis(0.0) + 90) % 180 - 90
        assert abs(turned - angle) < 10, (angle, turned)


def test_a_rendered_set_is_cached_by_its_digits_and_parameters(tmp_path, monkeypatch, digits):
    from jmvae.data import mnist_a
    from jmvae.data.mnist import MnistData

    small = MnistData(digits[0], digits[1], None, None, "test digits")
    first, key = mnist_a.cached(small, renders=2, seed=0, directory=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f"mnist-a-{key}.npz"]

    def no_render(*a, **k):
        raise AssertionError("rendered again")

    monkeypatch.setattr(mnist_a, "generate", no_render)
    again, key2 = mnist_a.cached(small, renders=2, seed=0, split="compositional", directory=tmp_path)
    assert key2 == key and np.array_equal(again.images, first.images)
    assert all(np.array_equal(again.labels[k], first.labels[k]) for k in ATTRIBUTES)
    assert again.params["split"] == "compositional" and sum(len(v) for v in again.split.values()) == 120
    monkeypatch.undo()
    _, other = mnist_a.cached(small, renders=2, seed=1, directory=tmp_path)
    assert other != key and len(list(tmp_path.iterdir())) == 2


def test_a_cache_file_cut_short_is_rendered_again(tmp_path, digits):
    from jmvae.data import mnist_a
    from jmvae.data.mnist import MnistData

    small = MnistData(digits[0][:10], digits[1][:10], None, None, "test digits")
    whole, key = mnist_a.cached(small, renders=1, directory=tmp_path)
    path = tmp_path / f"mnist-a-{key}.npz"
    path.write_bytes(path.read_bytes()[:500])
    again, _ = mnist_a.cached(small, renders=1, directory=tmp_path)
    assert np.array_equal(again.images, whole.images) and path.stat().st_size > 500


def test_an_unknown_split_is_refused_before_rendering_and_on_a_cached_set(tmp_path, monkeypatch, digits):
    from jmvae.data import mnist_a
    from jmvae.data.mnist import MnistData

    small = MnistData(digits[0][:10], digits[1][:10], None, None, "test digits")
    monkeypatch.setattr(mnist_a, "render", lambda *a, **k: (_ for _ in ()).throw(AssertionError("rendered")))
    with pytest.raises(ValueError, match="split random .allowed: iid, compositional"):
        mnist_a.generate(*digits, renders=1, split="random")
    monkeypatch.undo()
    mnist_a.cached(small, renders=1, directory=tmp_path)
    with pytest.raises(ValueError, match="split random"):
        mnist_a.cached(small, renders=1, split="random", directory=tmp_path)


# -- the preset: `jmvae train --preset mnist-a [--split iid|compositional]` ----------------------------------
@pytest.fixture
def small_sets(monkeypatch):
    """MNIST-A at 10,000 renders (2 per bundled digit) instead of 140,000: a second to render."""
    from jmvae.data import attributes

    monkeypatch.setattr(attributes, "MNIST_A_IMAGES", 10_000)


def test_the_preset_loads_either_split_and_records_its_set(small_sets):
    from jmvae.data.attributes import load_dataset
    from jmvae.errors import UserError

    iid = load_dataset("mnist-a", mnist="bundled")
    assert iid.images[0].shape == (64, 64) and [a.name for a in iid.attributes] == list(ATTRIBUTES)
    assert (iid.n_train, iid.n_test) == (8_500, 1_000)  # 85 / 10 of the images (5 held for validation)
    assert iid.options["renders"] == 2 and iid.options["split"] == "iid" and len(iid.options["hash"]) == 16
    comp = load_dataset("mnist-a", mnist="bundled", split="compositional")
    assert comp.options["hash"] == iid.options["hash"]  # the same rendered set, split otherwise
    combos = lambda split: set(zip(*(split[k].tolist() for k in ATTRIBUTES)))  # noqa: E731
    assert not combos(comp.train) & combos(comp.test) and len(combos(comp.test)) == 24
    assert set(torch.unique(comp.test["digit"]).tolist()) <= set(range(10))
    with pytest.raises(UserError, match="--split with preset position-digit .allowed: presets mnist-a"):
        load_dataset("position-digit", split="iid")


def test_crop_classifier_reads_where_the_ink_is():
    from jmvae.classifier import crop_at, ink_centres

    img = torch.zeros(2, 1, 64, 64)
    img[0, 0, 10:14, 50:56] = 1.0  # a blob centred at (11.5, 52.5)
    centres = ink_centres(img)
    assert torch.allclose(centres[0], torch.tensor([11.5, 52.5]))
    assert torch.allclose(centres[1], torch.tensor([31.5, 31.5]))  # no ink: the canvas centre
    crops = crop_at(img, centres, size=40)
    assert crops.shape == (2, 1, 40, 40) and float(crops[0].sum()) == 24.0 and float(crops[1].sum()) == 0.0
    rows, cols = torch.nonzero(crops[0, 0], as_tuple=True)
    assert (
        abs(rows.float().mean() - 19.5) <= 1 and abs(cols.float().mean() - 19.5) <= 1
    )  # centred, within a pixel


@pytest.mark.slow
def test_train_runs_end_to_end_on_the_compositional_split(tmp_path, small_sets, monkeypatch, capsys):
    """Every step of a run on four attributes: training, the classifier, correctness at |O| = 1..4 (|O| = 4
    holds only the combinations never trained on), figures, report; explore.html is skipped (conv decoder)."""
    import json

    from jmvae import classifier
    from jmvae.cli import main

    monkeypatch.setattr(classifier, "CROP_STEPS", 30)
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--preset",
                "mnist-a",
                "--split",
                "compositional",
                "--mnist",
                "bundled",
                "--steps",
                "3",
                "--hidden",
                "16",
                "--batch-size",
                "64",
                "--out",
                str(out),
                "--n-per-query",
                "4",
                "--k",
                "2",
                "--coherence-draws",
                "50",
                "--likelihood-examples",
                "20",
                "--low-temperature",
                "1",
            ]
        )
        == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["z_dim"] == 10 and config["train"]["split"] == "compositional"
    train_cfg = config[
        "train"
    ]  # the published JMVAE at the TELBO paper's lambda = 50 (config.PRESET_DEFAULTS)
    assert (
        train_cfg["attribute_weight"],
        train_cfg["every_subset"],
        train_cfg["image_recon"],
        train_cfg["prior_recon"],
    ) == (50, False, 0, 0)
    assert "KL(q(z|x,digit,scale,orientation,location) || q(z|digit))" not in config["objective"]
    assert config["data_options"]["renders"] == 2 and len(config["data_options"]["hash"]) == 16
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["correctness"]["by_size"]) == {"1", "2", "3", "4"} and set(
        metrics["coverage"]["by_size"]
    ) == {"1", "2", "3"}
    assert sum(len(r["subset"]) == 4 for r in metrics["queries"]) == 24  # the unseen combinations
    assert set(metrics["classifier_test_accuracy"]) == set(ATTRIBUTES)
    assert all((out / "figures" / f).stat().st_size > 0 for f in ("generated_joint.png", "latent_test.png"))
    assert (out / "report.html").exists() and (
        out / "explore.html"
    ).exists()  # the conv decoder runs in the page
