"""Several images per example: every model trains on them and infers from any subset, the joint encoder reads
each, the attribute reader reads what only one image shows, and a folder with NAME_file_name columns runs
through every command."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from jmvae.classifier import accuracy, train_classifier
from jmvae.cli import main
from jmvae.data import own
from jmvae.data.attributes import load_dataset
from jmvae.errors import UserError
from jmvae.models import MODELS, build_model
from jmvae.networks import JointEncoder
from jmvae.subsets import nonempty_subsets

pytestmark = pytest.mark.usefixtures("quick_reader")  # conftest: the reader trained briefly


def two_views(n=48, seed=0):
    """A grey 8x8 "top" view whose bright row is the class, and a colour 32x32 "side" view filled with the
    class's colour at a level set by `size` (continuous)."""
    rng = np.random.default_rng(seed)
    shape = rng.integers(0, 3, n)
    size = rng.uniform(0.2, 1.0, n)
    top = (rng.random((n, 8, 8)) * 40).astype(np.uint8)
    side = np.zeros((n, 32, 32, 3), np.uint8)
    for i in range(n):
        top[i, 2 * shape[i] : 2 * shape[i] + 2] = 255
        side[i, 8:24, 8:24, shape[i]] = int(255 * size[i])
    return {"top": top, "side": side, "shape": np.array(["a", "b", "c"])[shape], "size": size}


def data_of(arrays, **kwargs):
    return own.from_arrays(arrays, name="views", **kwargs)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_trains_on_two_images_and_infers_from_any_subset(name):
    data = data_of(two_views())
    assert [m.name for m in data.images] == ["top", "side"] and data.images[1].channels == 3
    torch.manual_seed(0)
    model = build_model(name, data.modalities, z_dim=2, hidden=16)
    from jmvae.data.attributes import to_batch

    batch = to_batch(data.train, slice(0, 8))
    loss, terms = model.loss(batch)
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in terms.values())
    loss.backward()
    for image in ("top", "side"):  # both images' networks learn
        for net in (model.encoders[image], model.decoders[image]):
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters()), (name, image)
    if hasattr(model, "joint_encoder"):
        assert model.joint_encoder.more_images[0].net[0].weight.grad.abs().sum() > 0
    for subset in nonempty_subsets(model.names):
        q = model.posterior({k: batch[k] for k in subset})
        assert torch.isfinite(q.sample()).all(), subset
    out = model.generate({"shape": torch.tensor([0, 2])}, 3)
    assert out["top"].shape == (3, 2, 64) and out["side"].shape == (3, 2, 3 * 32 * 32)


def test_the_joint_encoder_adds_each_images_reader_to_the_first_layer():
    torch.manual_seed(0)
    second = torch.nn.Linear(5, 16, bias=False)
    enc = JointEncoder(4, [3], z_dim=2, hidden=16, more_images=[(5, None)])
    enc.more_images[0].load_state_dict(second.state_dict())
    x1, x2, y = torch.rand(6, 4), torch.rand(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    h = enc.image(x1) + second(x2) + enc.attributes[0](y)
    want = enc.head(enc.body(h))
    got = enc([x1, x2], [y])
    assert torch.allclose(got.loc, want[:, :2], atol=1e-6)
    with pytest.raises(TypeError, match="several images"):
        enc.first_layer()


def test_telbo_has_one_elbo_per_image_and_jmvae_a_kl_to_the_images_product():
    data = data_of(two_views())
    telbo = build_model("telbo", data.modalities, z_dim=2, hidden=16)
    assert list(telbo.elbos)[:3] == ["joint", "top", "side"]
    assert "ELBO(top | q(z|top)) + ELBO(side | q(z|side))" in telbo.describe()
    jm = build_model("jmvae", data.modalities, z_dim=2, hidden=16)
    from jmvae.data.attributes import to_batch
    from jmvae.posteriors import product_of_experts

    batch = to_batch(data.train, slice(0, 4))
    q = jm.posterior({"top": batch["top"], "side": batch["side"]})
    want = product_of_experts(
        [jm.encoders["top"](batch["top"]), jm.encoders["side"](batch["side"])], prior=False
    )
    assert torch.allclose(q.loc, want.loc) and torch.allclose(q.scale, want.scale)


def test_the_reader_reads_an_attribute_only_the_second_image_shows():
    arrays = two_views(n=300)
    arrays["top"] = np.random.default_rng(1).integers(0, 255, (300, 8, 8)).astype(np.uint8)  # noise only
    del arrays["size"]
    data = data_of(arrays)
    clf = train_classifier(data, steps=150)
    assert accuracy(clf, data, data.test)["shape"] > 0.95  # chance: 1/3


def write_two_view_folder(root, n=45):
    views = two_views(n)
    rows = []
    root.mkdir(parents=True)
    for i in range(n):
        PILImage.fromarray(views["top"][i]).save(root / f"top{i:03d}.png")
        PILImage.fromarray(views["side"][i]).save(root / f"side{i:03d}.png")
        rows.append(
            {
                "file_name": f"top{i:03d}.png",
                "side_file_name": f"side{i:03d}.png",
                "shape": views["shape"][i],
                "size": f"{views['size'][i]:.3f}" if i % 9 else "",
            }
        )
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def test_a_folder_with_a_second_file_name_column_loads_two_images_and_exports_them(tmp_path):
    root = write_two_view_folder(tmp_path / "d")
    data = load_dataset(None, data=str(root), progress=False)
    assert [(m.name, m.shape, m.channels) for m in data.images] == [("x", (8, 8), 1), ("side", (32, 32), 3)]
    assert [a.name for a in data.attributes] == ["shape", "size"]
    own.export(data, tmp_path / "out", progress=False)
    header = (tmp_path / "out" / "train" / "metadata.csv").read_text().splitlines()[0]
    assert header.startswith("file_name,side_file_name,shape,size")
    again = load_dataset(None, data=str(tmp_path / "out"), progress=False)
    for name in ("x", "side"):
        assert torch.equal(again.train[name], data.train[name]) and torch.equal(
            again.test[name], data.test[name]
        )


@pytest.mark.parametrize(
    "edit, says",
    [
        (lambda rows: rows[3].update(side_file_name=""), "line 5: empty side_file_name"),
        (
            lambda rows: rows[3].update(side_file_name=rows[2]["side_file_name"]),
            "side_file_name side002.png given twice",
        ),
        (lambda rows: rows[3].update(side_file_name="nope.png"), "nope.png does not exist"),
        (
            lambda rows: [r.update(x_file_name=r["side_file_name"]) for r in rows],
            "column x_file_name: image x is",
        ),
        (
            lambda rows: [r.update(z_file_name=r["side_file_name"]) for r in rows],
            "image z is a reserved name",
        ),
    ],
)
def test_a_bad_second_image_column_is_one_line_naming_it(tmp_path, edit, says):
    root = write_two_view_folder(tmp_path / "d")
    rows = list(csv.DictReader(open(root / "metadata.csv")))
    edit(rows)
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(UserError, match=says):
        load_dataset(None, data=str(root), progress=False)


@pytest.mark.slow
def test_a_two_image_run_trains_evaluates_generates_and_explores(tmp_path, capsys):
    root = write_two_view_folder(tmp_path / "d", n=60)
    run = tmp_path / "run"
    tiny = ["--hidden", "32", "--k", "3", "--n-per-query", "4", "--coherence-draws", "20"]
    args = ["train", "--data", str(root), "--out", str(run), "--steps", "4", "--batch-size", "16"]
    assert main([*args, *tiny, "--likelihood-examples", "5"]) == 0
    assert "x: image 8x8, grey, mlp networks" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert set(config["schema"]["images"]) == {"x", "side"}
    assert config["schema"]["images"]["side"]["network"] == "conv3"
    report = (run / "report.html").read_text()
    assert "image side 32x32, colour" in report
    assert (run / "explore.html").exists() and (run / "figures" / "generated_single.png").exists()
    assert (
        main(["generate", str(run), "--given", "shape=b", "--n", "3", "--out", str(tmp_path / "g.npz")]) == 0
    )
    g = np.load(tmp_path / "g.npz")
    assert g["images_x"].shape == (3, 8, 8) and g["images_side"].shape == (3, 32, 32, 3)
    assert (
        main(["generate", str(run), "--given", "shape=b", "--n", "3", "--out", str(tmp_path / "g.png")]) == 0
    )
    assert PILImage.open(tmp_path / "g.png").size[0] > 0


def test_pictures_put_an_examples_images_side_by_side():
    rng = np.random.default_rng(0)
    data = data_of(
        {
            "a": rng.integers(0, 255, (10, 8, 6)).astype(np.uint8),
            "b": rng.integers(0, 255, (10, 4, 5, 3)).astype(np.uint8),
            "k": np.arange(10) % 2,
        }
    )
    x = {"a": torch.rand(2, 3, 48), "b": torch.rand(2, 3, 60)}
    p = data.pictures(x)
    assert p.shape == (2, 3, 8, 12, 3) and data.picture_shape == (8, 12)
    for c in range(3):  # the grey image in every channel
        assert np.allclose(p[1, 2, :, :6, c], x["a"][1, 2].reshape(8, 6).numpy())
    assert np.allclose(p[1, 2, :4, 7:, :], x["b"][1, 2].reshape(3, 4, 5).permute(1, 2, 0).numpy())
    assert (p[..., 4:, 7:, :] == 0).all() and (p[..., :, 6, :] == 0.5).all()  # black below, a grey gap


def test_the_report_reads_a_run_recorded_before_several_images():
    from jmvae.report import data_card_section

    card = {
        "k": {"kind": "binary", "counts": {"false": 3, "true": 4}, "missing_train": 0.0, "missing_test": 0.0}
    }
    old = {
        "name": "x",
        "height": 32,
        "width": 32,
        "channels": 3,
        "likelihood": "bernoulli",
        "network": "conv3",
    }
    config = {"schema": {"image": old, "attributes": {}}, "data_card": card, "n_train": 7, "n_test": 2}
    assert "images 32x32, colour (bernoulli likelihood, conv3 networks)" in data_card_section(config)
    new = {"x": old, "mask": old | {"channels": 1}}
    config["schema"] = {"images": new, "attributes": {}}
    html = data_card_section(config)
    assert "image x 32x32, colour" in html and "image mask 32x32, grey" in html


def test_telbo_keeps_every_elbo_whatever_the_modalities_are_called():
    """ELBOs are kept by name: an image called joint or y, or an attribute called joint, must not replace one;
    with several images their product has an ELBO of its own."""
    from jmvae.modalities import Categorical, Image

    images = [Image("joint", (8, 8)), Image("y", (8, 8))]
    attributes = [Categorical("joint_", ("a", "b")), Categorical("c", ("a", "b"))]
    telbo = build_model("telbo", images + attributes, z_dim=2, hidden=8, every_subset=True)
    given = [g for g, _ in telbo.elbos.values()]
    assert len(given) == len(set(given)) == 1 + 2 + 1 + 3  # everything, each image, both images, 3 subsets
    assert given[0] == ("joint", "y", "joint_", "c") and ("joint", "y") in given and ("y",) in given


def test_export_and_image_names_that_would_name_files_wrongly_are_one_line(tmp_path):
    arrays = two_views(n=12)
    with pytest.raises(UserError, match="image 'a/b': not a usable image name"):
        data_of({"a/b": arrays["top"], "shape": arrays["shape"]})
    data = data_of({"side": arrays["side"], "x": arrays["top"], "shape": arrays["shape"]})
    with pytest.raises(UserError, match="image x is not the first image"):
        own.export(data, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_the_reader_searches_a_large_grey_canvas_whichever_image_it_is():
    from jmvae.classifier import reader_of

    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 255, (12, 64, 64)).astype(np.uint8)
    small = rng.integers(0, 255, (12, 8, 8)).astype(np.uint8)
    label = np.arange(12) % 2
    first = reader_of(data_of({"canvas": canvas, "small": small, "k": label}))
    second = reader_of(data_of({"small": small, "canvas": canvas, "k": label}))
    assert first.any_crop and second.any_crop and not second.crop and second.more[0].crop
    assert first.hidden[0].out_features == second.hidden[0].out_features == 256
