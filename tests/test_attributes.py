import numpy as np
import pytest
import torch

from jmvae.data.attributes import load_dataset, parse_assignments, position_digit, to_batch
from jmvae.data.mnist import MnistData
from jmvae.errors import UserError


def test_position_digit_shapes_and_halves(founding_data):
    d = founding_data
    assert d.images[0].shape == (28, 56) and [a.name for a in d.attributes] == ["position", "digit"]
    assert (
        len(d.train["x"]) == 1600 and len(d.test["x"]) == 400
    )  # 1,000 bundled 1s and 2s, both positions, 80/20
    for split in (d.train, d.test):
        assert split["x"].dtype == torch.uint8
        img = split["x"].reshape(-1, 28, 56)
        left, right = img[..., :28].flatten(1).sum(1), img[..., 28:].flatten(1).sum(1)
        is_left = split["position"] == 0
        assert (right[is_left] == 0).all() and (left[is_left] > 0).all()
        assert (left[~is_left] == 0).all() and (right[~is_left] > 0).all()
        # Every combination of the two attributes is present, evenly by position.
        assert set(zip(split["position"].tolist(), split["digit"].tolist())) == {
            (0, 0),
            (0, 1),
            (1, 0),
            (1, 1),
        }
        assert (split["position"] == 0).sum() == (split["position"] == 1).sum()


def test_both_positions_of_a_source_digit_are_on_the_same_side_of_the_split(founding_data):
    d = founding_data

    def sources(split):  # the digit itself, whichever half it sits in
        img = split["x"].reshape(-1, 28, 56).long()
        return {tuple((img[i, :, :28] + img[i, :, 28:]).flatten().tolist()) for i in range(len(img))}

    train, test = sources(d.train), sources(d.test)
    assert len(train) == 800 and len(test) == 200
    assert not train & test


def test_digit_labels_follow_the_source_labels():
    g = np.random.default_rng(0)
    images = g.integers(1, 255, (30, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2] * 10)
    d = position_digit(MnistData(images, labels, images[:6], labels[:6], "fake"), seed=0)
    # Official split kept: 20 train digits (labels 1, 2) and 4 test digits, each twice.
    assert len(d.train["x"]) == 40 and len(d.test["x"]) == 8
    src = {images[i].tobytes(): labels[i] for i in range(30)}
    img = d.train["x"].reshape(-1, 28, 56)
    for i in range(len(img)):
        half = img[i, :, :28] if d.train["position"][i] == 0 else img[i, :, 28:]
        assert src[half.numpy().tobytes()] == d.train["digit"][i].item() + 1


def test_to_batch_scales_images_only(founding_data):
    b = to_batch(founding_data.test, slice(0, 7))
    assert b["x"].dtype == torch.float32 and 0 <= b["x"].min() and b["x"].max() <= 1 and b["x"].max() > 0.9
    assert b["position"].dtype == torch.int64


def test_to_batch_keeps_a_resident_split_on_its_device(founding_data):
    """The training loop indexes a split already on the GPU: the batch must stay there (no host copy).
    The meta device stands in for a GPU on a machine without one."""
    resident = {k: v.to("meta") for k, v in founding_data.train.items()}
    b = to_batch(resident, torch.arange(5, device="meta"))
    assert all(v.device.type == "meta" for v in b.values()) and b["x"].dtype == torch.float32


def test_assignments_and_hold_out(founding_data):
    d = founding_data
    assert parse_assignments(d, ["position=right,digit=2"]) == {"position": 1, "digit": 1}
    assert parse_assignments(d, ["position=left", "digit=1"]) == {"position": 0, "digit": 0}
    with pytest.raises(UserError, match=r"position=up \(allowed: left, right\)"):
        parse_assignments(d, ["position=up"])
    with pytest.raises(UserError, match=r"colour \(allowed: position, digit\)"):
        parse_assignments(d, ["colour=red"])
    held = load_dataset("position-digit", seed=0, held_out=["position=right,digit=2"])
    pairs = set(zip(held.train["position"].tolist(), held.train["digit"].tolist()))
    assert (1, 1) not in pairs and len(pairs) == 3
    assert (1, 1) in set(zip(held.test["position"].tolist(), held.test["digit"].tolist()))


def test_mnist_label_preset():
    d = load_dataset("mnist-label", seed=1)
    assert d.images[0].shape == (28, 28) and d.attributes[0].classes == tuple("0123456789")
    assert len(d.train["x"]) == 4000 and len(d.test["x"]) == 1000
    assert set(d.test["digit"].tolist()) == set(range(10))


def test_unknown_preset():
    with pytest.raises(UserError, match="allowed: position-digit, mnist-label"):
        load_dataset("cifar")
