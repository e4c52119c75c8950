"""figures.py: every figure is written as a real PNG for any z_dim and any attributes, and its geometry is
right.

A small fake dataset of random images and an untrained narrow model keep these tests fast and free of MNIST.
"""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg

from jmvae import figures
from jmvae.data.attributes import AttributeDataset
from jmvae.modalities import Categorical, Image
from jmvae.models import build_model

FILES = [
    "generated_joint.png",
    "generated_single.png",
    "generated_single_completed.png",
    "latent_attributes.png",
    "latent_test.png",
    "decision_boundaries.png",
    "pxz_grid.png",
    "training_curves.png",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_dataset(
    attributes: list[Categorical], shape=(12, 20), n_train=64, n_test=200, seed=0
) -> AttributeDataset:
    g = torch.Generator().manual_seed(seed)

    def split(n):
        out = {"x": torch.randint(0, 256, (n, shape[0] * shape[1]), generator=g, dtype=torch.uint8)}
        out |= {a.name: torch.randint(0, len(a.classes), (n,), generator=g) for a in attributes}
        return out

    return AttributeDataset("fake", [Image("x", shape)], attributes, split(n_train), split(n_test), "random")


POSITION_DIGIT = [Categorical("position", ("left", "right")), Categorical("digit", ("1", "2"))]
LABEL = [Categorical("digit", tuple(map(str, range(10))))]
MANY = [Categorical(n, ("a", "b", "c")) for n in ("p", "q", "r")]  # 27 combinations: more than the cap


def history(terms=("nll_x", "kl_prior")) -> list[dict]:
    rows = []
    for epoch in range(1, 4):
        row = {
            "epoch": epoch,
            "step": 10 * epoch,
            "seconds": 0.1,
            "train_loss": 10.0 / epoch,
            "test_loss": 11.0 / epoch,
        }
        for t in terms:
            row |= {f"train_{t}": 1.0 / epoch, f"test_{t}": 1.2 / epoch}
        rows.append(row)
    return rows


def model_for(data: AttributeDataset, z_dim: int):
    torch.manual_seed(0)
    return build_model("jmvae", data.modalities, z_dim, hidden=32)


def check_pngs(out_dir, infos, one_attribute: bool = False) -> None:
    # one attribute given leaves nothing to complete: no completed generation figure
    assert [i.file for i in infos] == [f for f in FILES if not (one_attribute and "completed" in f)]
    for info in infos:
        assert info.title and info.caption and "\n" not in info.caption
        raw = (out_dir / info.file).read_bytes()
        assert raw[:8] == PNG_MAGIC
        image = matplotlib.image.imread(out_dir / info.file)
        assert image.ndim == 3 and image.shape[2] in (3, 4)
        assert 150 <= image.shape[0] <= 3000 and 300 <= image.shape[1] <= 3000, (info.file, image.shape)
        assert image[..., :3].std() > 0.01, f"{info.file} is blank"


@pytest.mark.parametrize("z_dim", [1, 2, 5])
def test_all_figures_for_any_z_dim(tmp_path, z_dim):
    data = fake_dataset(POSITION_DIGIT)
    model = model_for(data, z_dim)
    model.train()
    rng_before = torch.get_rng_state()
    infos = figures.make_figures(model, data, history(), tmp_path, n_samples=4)
    check_pngs(tmp_path, infos)
    assert figures.read_figures(tmp_path) == infos  # the index the report reads instead of redrawing
    assert model.training, "make_figures must restore the model's mode"
    assert torch.equal(torch.get_rng_state(), rng_before), (
        "make_figures must not move the caller's random state"
    )


@pytest.mark.parametrize("attributes", [LABEL, MANY], ids=["one-attribute-10-classes", "27-combinations"])
def test_all_figures_for_any_attributes(tmp_path, attributes):
    data = fake_dataset(attributes, shape=(10, 10))
    infos = figures.make_figures(model_for(data, 2), data, history(), tmp_path, n_samples=3)
    check_pngs(tmp_path, infos, one_attribute=len(attributes) == 1)


@pytest.mark.slow
def test_figures_are_deterministic_given_seed(tmp_path):
    data = fake_dataset(POSITION_DIGIT)
    model = model_for(data, 2)
    for name in ("a", "b"):
        figures.make_figures(
            model, data, [], tmp_path / name, n_samples=2, seed=3
        )  # empty history: still drawn
    for file in FILES:
        assert np.array_equal(
            matplotlib.image.imread(tmp_path / "a" / file), matplotlib.image.imread(tmp_path / "b" / file)
        ), file


def test_combination_rows_are_all_of_few_and_stratified_among_many():
    assert figures.combinations(POSITION_DIGIT) == [(0, 0), (0, 1), (1, 0), (1, 1)]  # all, in product order
    combos = figures.combinations(MANY)  # 27 > 20: stratified
    assert len(combos) == figures.MAX_COMBINATIONS == len(set(combos)) and combos == sorted(combos)
    for i in range(3):  # each value of each attribute shown 6 or 7 times of 20, not only p=a in the first 9
        assert sorted(np.bincount([c[i] for c in combos], minlength=3)) == [6, 7, 7]
    assert combos == figures.combinations(MANY)  # fixed seed
    from jmvae.data.mnist_a import ATTRIBUTES

    mnist_a = [Categorical(k, v) for k, v in ATTRIBUTES.items()]
    shown = figures.combinations(mnist_a)
    assert {c[0] for c in shown} == set(range(10)) and all(
        {c[i] for c in shown} == set(range(len(mnist_a[i].classes))) for i in range(4)
    )
    assert figures.assignment(POSITION_DIGIT, (0, 1)) == "position=left, digit=2"
    split = {"p": torch.tensor([0, 0, 2]), "q": torch.tensor([0, 0, 2]), "r": torch.tensor([0, 1, 2])}
    assert figures.combination_index(split, MANY).tolist() == [0, 1, 26]


def test_latent_grid_spans_minus_three_to_three():
    grid = figures.latent_grid()
    assert grid[0] == -3.0 and grid[-1] == 3.0 and len(grid) == figures.GRID_TILES
    assert np.allclose(np.diff(grid), 0.6)


def test_principal_plane_recovers_a_plane_in_five_dimensions():
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(5, 2, generator=g, dtype=torch.float64))  # orthonormal columns
    offset = torch.randn(5, generator=g, dtype=torch.float64)
    coords = torch.randn(500, 2, generator=g, dtype=torch.float64) * torch.tensor(
        [3.0, 1.0], dtype=torch.float64
    )
    points = offset + coords @ basis.T
    m, v = figures.principal_plane(points)
    assert torch.allclose(v @ v.T, torch.eye(2, dtype=torch.float64), atol=1e-10)
    # the components span the same plane as the basis, and lifting a projection gives the point back exactly
    assert torch.allclose(v.T @ (v @ basis), basis, atol=1e-10)
    plane = figures.Plane(m, v, "", ("PC 1", "PC 2"))
    assert np.allclose(plane.lift(plane.project(points)).numpy(), points.numpy(), atol=1e-10)


def test_one_dimensional_plane_puts_z_on_the_x_axis():
    plane = figures.Plane.of(torch.randn(10, 1))
    z = torch.tensor([[-1.5], [2.0]])
    assert np.allclose(plane.project(z), [[-1.5, 0.0], [2.0, 0.0]])
    assert torch.allclose(plane.lift(np.array([[0.5, 7.0]])), torch.tensor([[0.5]]))


def test_tile_and_save_image_grid(tmp_path):
    images = np.stack([np.full((3, 4), i / 5) for i in range(5)])
    mosaic = figures.tile(images, ncols=2)
    assert mosaic.shape == (3 * 3 + 2, 2 * 4 + 1)
    assert np.allclose(mosaic[4:7, 5:9], images[3])  # row 1, column 1
    figures.save_image_grid(
        np.random.default_rng(0).random((6, 28, 56)), tmp_path / "g" / "out.png", title="t"
    )
    assert (tmp_path / "g" / "out.png").read_bytes()[:8] == PNG_MAGIC


def rendered(fig):
    """The renderer of `fig` drawn as it is saved (figures.DPI), for measuring where its text lies."""
    fig.set_dpi(figures.DPI)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


@pytest.mark.parametrize("rows", [2, 19])
def test_row_labels_lie_inside_the_figure(rows):
    # MNIST-A's longest single-attribute label; constrained layout with fixed-aspect image strips once placed
    # it 28 px past the left edge of a 19-row figure ("ntation=counterclockwise" in the report)
    labels = [f"digit={i}" for i in range(rows - 1)] + ["orientation=counterclockwise"]
    fig = figures._image_rows([np.zeros((8, 64, 64))] * rows, labels, "title\nsecond line")
    renderer = rendered(fig)
    for ax in fig.axes:
        box = ax.yaxis.label.get_window_extent(renderer)
        assert box.x0 >= 0 and box.x1 <= ax.get_window_extent().x0, ax.yaxis.label.get_text()


def test_no_text_leaves_the_figure_or_covers_another_panels_title(tmp_path, monkeypatch):
    # four attributes with MNIST-A's names, values and 64x64 canvas: its 19 single-attribute rows once pushed
    # the label "orientation=counterclockwise" 30 px past the figure's left edge (fixed-aspect strips under
    # constrained layout). Titles that touched in a trained run's panels (narrower than this untrained
    # model's) were shortened by eye: this plane is wider, so the overlap check below guards only against
    # worse.
    attributes = [
        Categorical("digit", tuple(map(str, range(10)))),
        Categorical("scale", ("big", "small")),
        Categorical("orientation", ("clockwise", "upright", "counterclockwise")),
        Categorical("location", ("top-left", "top-right", "bottom-left", "bottom-right")),
    ]
    data = fake_dataset(attributes, shape=(64, 64))
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append((path.name, fig)))
    figures.make_figures(model_for(data, 10), data, history(), tmp_path, n_samples=2)
    assert len(drawn) == len(FILES)
    for name, fig in drawn:
        renderer = rendered(fig)
        page = fig.bbox
        titles = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
        texts = [
            t.get_window_extent(renderer)
            for ax in fig.axes
            for t in (ax.title, ax.xaxis.label, ax.yaxis.label)
            if t.get_text()
        ]
        for box in texts:
            assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1, (name, box)
        for i, a in enumerate(titles):
            for b in titles[i + 1 :]:
                assert not a.overlaps(b), (name, a, b)
