"""The PolyMNIST-style preset (five colour images of one digit class) and coherence across images."""

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from jmvae import coherence
from jmvae.data import polymnist as poly
from jmvae.data.attributes import AttributeDataset
from jmvae.data.mnist import load_bundled
from jmvae.errors import UserError
from jmvae.modalities import Categorical, Image


def coded_background(h: int = 40, w: int = 50) -> np.ndarray:
    """A background whose pixel (r, c) is (r, c, 7): a crop says where it came from."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([rows, cols, np.full_like(rows, 7)], -1).astype(np.uint8)


def test_render_is_a_crop_with_the_digit_inverted():
    mnist = load_bundled()
    digits = mnist.images[:20]
    out = poly.render(digits, coded_background(), np.random.default_rng(0))
    assert out.shape == (20, 3 * 28 * 28) and out.dtype == np.uint8
    img = out.reshape(20, 3, 28, 28).transpose(0, 2, 3, 1).astype(int)
    ink = digits > 127
    back = np.where(ink[..., None], 255 - img, img)  # undo the inversion: the crop itself
    for i in range(20):
        r0, c0 = back[i, 0, 0, :2]
        assert np.array_equal(back[i, :, :, 0], r0 + np.arange(28)[:, None] + 0 * np.arange(28))
        assert np.array_equal(back[i, :, :, 1], c0 + np.arange(28)[None, :] + 0 * np.arange(28)[:, None])
        assert (back[i, :, :, 2] == 7).all() and r0 + 28 <= 40 and c0 + 28 <= 50
        assert ink[i].any() and (img[i][ink[i]][:, 2] == 248).all()  # inverted where the digit is


def test_every_modality_shows_another_digit_of_the_same_class():
    mnist = load_bundled()
    digits, labels = mnist.images[:300], mnist.labels[:300]
    drawn = poly.generate(digits, labels, [coded_background()] * 3, seed=0)
    assert np.array_equal(drawn.labels, labels) and len(drawn.images) == 3
    shapes = [(x.reshape(-1, 3, 28, 28)[:, 2] != 7) for x in drawn.images]  # channel 2: 7 unless ink
    assert np.array_equal(shapes[0], digits > 127)  # modality 0: the example's own digit
    for ink in shapes[1:]:
        # each ink pattern is a digit of the example's class, and mostly another one than modality 0's
        source = [np.flatnonzero((digits > 127).reshape(300, -1).__eq__(s.reshape(-1)).all(1)) for s in ink]
        assert all(len(s) and labels[s[0]] == labels[i] for i, s in enumerate(source))
        assert np.mean([s[0] != i for i, s in enumerate(source)]) > 0.8
    again = poly.generate(digits, labels, [coded_background()] * 3, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(again.images, drawn.images))


def write_photos(folder):
    folder.mkdir(parents=True)
    for i, name in enumerate(poly.BACKGROUNDS):
        PILImage.fromarray(np.full((60, 90, 3), 40 * i, np.uint8)).save(folder / name, format="PNG")


def test_backgrounds_come_from_the_cache_or_an_installed_scikit_image(tmp_path, monkeypatch):
    monkeypatch.setattr(poly.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install scikit-image"):
        poly.background_dir(tmp_path / "cache")
    package = tmp_path / "site" / "skimage"
    write_photos(package / "data")
    spec = type("Spec", (), {"submodule_search_locations": [str(package)]})
    monkeypatch.setattr(poly.importlib.util, "find_spec", lambda name: spec)
    assert poly.background_dir(tmp_path / "cache") == package / "data"
    write_photos(tmp_path / "cache" / "backgrounds")
    assert poly.background_dir(tmp_path / "cache") == tmp_path / "cache" / "backgrounds"
    photos, key = poly.read_backgrounds(tmp_path / "cache" / "backgrounds")
    assert [p.shape for p in photos] == [(128, 192, 3)] * 5 and len(key) == 16
    (tmp_path / "cache" / "backgrounds" / "coffee.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="coffee.png is not a readable image"):
        poly.read_backgrounds(tmp_path / "cache" / "backgrounds")


# -- coherence across images, against a hand count ---------------------------------------------------------
NAMES = ("a", "b", "c")


def coded_data(n: int = 40) -> AttributeDataset:
    """Three 2x2 grey images per example whose first pixel is digit / 10: a reader can read them exactly."""
    digit = torch.arange(n) % 10
    images = {m: torch.zeros(n, 4, dtype=torch.uint8) for m in NAMES}
    for x in images.values():
        x[:, 0] = (digit * 255 // 10).to(torch.uint8)
    split = images | {"digit": digit}
    return AttributeDataset(
        "coded",
        [Image(m, (2, 2)) for m in NAMES],
        [Categorical("digit", tuple("0123456789"))],
        split,
        split,
        "t",
    )


class PixelReader:
    def predict(self, drawn):
        (x,) = drawn.values()
        return {"digit": (x[..., 0] * 10).round().long()}


class WrongB(torch.nn.Module):
    """Draws every image as the given images say, except image b, which always shows the next digit."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def generate(self, given, n, sampler=None):
        if not given:  # joint: digit 3 everywhere, b 4 on every other draw
            out = {m: torch.full((n, 1, 4), 0.3) for m in NAMES}
            out["b"][::2] = 0.4
            return out
        digit = next(iter(given.values()))[:, 0]
        out = {m: torch.zeros(n, len(digit), 4) for m in NAMES}
        for m in NAMES:
            out[m][..., 0] = digit + (0.1 if m == "b" else 0.0)
        return out


def test_conditional_and_joint_coherence_match_a_hand_count():
    data = coded_data()
    readers = {m: PixelReader() for m in NAMES}
    got = coherence.conditional(WrongB(), data, readers, examples=40, chunk=16)
    # one given: a -> b wrong, c right (1/2); b -> a, c right (1); c -> 1/2. Two given: a,b -> c (1);
    # a,c -> b (0); b,c -> a (1).
    assert got["by_given"] == {"a": 0.5, "b": 1.0, "c": 0.5, "a,b": 1.0, "a,c": 0.0, "b,c": 1.0}
    assert got["by_size"]["1"] == pytest.approx(2 / 3) and got["by_size"]["2"] == pytest.approx(2 / 3)
    assert got["examples"] == 40
    assert coherence.joint(WrongB(), data, readers, draws=10) == pytest.approx(0.5)


@pytest.mark.slow
def test_a_polymnist_run_reports_coherence_across_images(tmp_path, quick_reader, capsys):
    import json

    from jmvae.cli import main
    from jmvae.data.mnist import cache_dir

    if not (cache_dir() / "backgrounds").is_dir():
        write_photos(cache_dir() / "backgrounds")
    run = tmp_path / "run"
    tiny = ["--hidden", "32", "--k", "3", "--n-per-query", "4", "--coherence-draws", "20"]
    args = ["train", "--preset", "polymnist", "--out", str(run), "--steps", "3", "--batch-size", "16"]
    assert main([*args, *tiny, "--likelihood-examples", "5"]) == 0
    out = capsys.readouterr().out
    assert "m4: image 28x28, colour, mlp networks" in out and "coherence given 4 image(s)" in out
    metrics = json.loads((run / "metrics.json").read_text())
    cc = metrics["cross_coherence"]
    assert (
        set(cc["conditional"]["by_size"]) == {"1", "2", "3", "4"} and len(cc["conditional"]["by_given"]) == 30
    )
    assert set(cc["reader_accuracy"]) == {"m0", "m1", "m2", "m3", "m4"} and "p(z)" in cc["joint"]
    assert "Coherence across images" in (run / "report.html").read_text()
    assert (run / "figures" / "generated_from_image.png").stat().st_size > 0
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["z_dim"] == 16 and config["train"]["batch_size"] == 16


def test_coherence_reads_only_observed_attributes_and_skips_when_none_is():
    data = coded_data()
    readers = {m: PixelReader() for m in NAMES}
    data.test = dict(data.test) | {"digit": data.test["digit"].clone()}
    data.test["digit"][::2] = -1  # half the examples unlabelled: the other half are read
    got = coherence.conditional(WrongB(), data, readers, examples=40, chunk=16)
    assert got["examples"] == 20 and got["by_given"]["a,c"] == 0.0 and got["by_given"]["b"] == 1.0
    data.test["digit"][:] = -1
    assert coherence.conditional(WrongB(), data, readers, examples=40) is None


def test_many_images_query_at_most_ten_subsets_of_each_size():
    names = [f"v{i}" for i in range(7)]
    got = coherence.subsets(names, seed=0)
    sizes = [len(s) for s in got]
    assert [sizes.count(k) for k in range(1, 7)] == [7, 10, 10, 10, 10, 7]
    assert got == coherence.subsets(names, seed=0) and len(set(got)) == len(got)
    assert len(coherence.subsets(NAMES)) == 6


def test_coherence_across_images_leaves_every_other_number_as_it_was(quick_reader, monkeypatch):
    from jmvae.data import own
    from jmvae.evaluate import EvalConfig, evaluate
    from jmvae.models import build_model

    rng = np.random.default_rng(0)
    shape = rng.integers(0, 3, 60)
    top, side = np.zeros((60, 8, 8), np.uint8), np.zeros((60, 8, 8, 3), np.uint8)
    for i, s in enumerate(shape):
        top[i, 2 * s : 2 * s + 2] = 255
        side[i, :, :, s] = 200
    data = own.from_arrays({"top": top, "side": side, "shape": np.array(list("abc"))[shape]}, name="v")
    torch.manual_seed(0)
    model = build_model("mopoe", data.modalities, z_dim=2, hidden=16)
    cfg = type("Cfg", (), {"hold_out": None})()
    small = EvalConfig(n_per_query=8, k=3, coherence_draws=20, likelihood_examples=5, resamples=20)
    with_it = evaluate(model, data, cfg, small)  # the per-image readers trained here (a cold cache)
    monkeypatch.setattr(coherence, "applies", lambda data: False)
    without = evaluate(model, data, cfg, small)
    assert "cross_coherence" in with_it and "cross_coherence" not in without
    for key in ("log_likelihood", "joint_coherence", "correctness", "image_to_attribute_accuracy"):
        assert with_it[key] == without[key], key


def test_an_expert_never_gets_more_certain_than_the_scale_floor():
    from jmvae.networks import MIN_SCALE, gaussian
    from jmvae.posteriors import product_of_experts

    head = torch.tensor([[0.5, -2.0, -60.0, 3.0]])  # a collapsing scale: softplus(-60) = 9e-27
    g = gaussian(head)
    assert torch.equal(g.scale, torch.tensor([[MIN_SCALE, torch.nn.functional.softplus(torch.tensor(3.0))]]))
    assert torch.equal(
        gaussian(torch.tensor([[0.5, 1.0]])).scale, torch.nn.functional.softplus(torch.tensor([[1.0]]))
    )
    product = product_of_experts([g, g, g], prior=True)
    assert torch.isfinite(product.scale.pow(-2)).all()


@pytest.mark.parametrize("name", ["mopoe", "jmvae"])
def test_conv2_networks_train_on_28x28_colour_images(name):
    from jmvae.models import build_model
    from jmvae.networks import ConvDecoder, ConvTrunk

    images = [Image(m, (28, 28), channels=3, network="conv2") for m in ("m0", "m1")]
    model = build_model(name, [*images, Categorical("digit", tuple("0123456789"))], z_dim=4, hidden=32)
    assert isinstance(model.decoders["m1"], ConvDecoder)
    assert any(isinstance(m, ConvTrunk) for m in model.encoders["m0"].modules())
    batch = {m.name: torch.rand(6, 3 * 28 * 28) for m in images} | {"digit": torch.arange(6)}
    loss, _ = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and model.generate({"m0": batch["m0"]}, 2)["m1"].shape == (2, 6, 3 * 28 * 28)
