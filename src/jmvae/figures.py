"""Every figure of the founding experiment, drawn from a trained model and its dataset.

The figures answer the questions of the JMVAE paper for any attribute dataset: can the model generate an
image from attributes alone (1, 2)? where do attribute queries and test images land in the latent space
(3, 4)? does p(a|z) carve that space the way the images are placed (5)? what does each region of z decode
to (6)? did training converge (7)?

Plots of z need a plane: z itself when z_dim == 2, z on the x-axis when z_dim == 1, and otherwise the first
two principal components of the test images' q(z|x) means (a seeded subsample of at most MAX_POINTS), so
that the plane holds as much of the data's spread as any plane can. Figures are drawn on
`matplotlib.figure.Figure` objects (no pyplot, no global state) and everything is seeded, so the same run
always gives the same pictures.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine

from .data.attributes import AttributeDataset, to_batch
from .evaluate import EvalConfig, observed_rows
from .modalities import Attribute
from .networks import own_stream
from .runs import atomic_write, write_text

DPI = 110
MAX_COMBINATIONS = 20  # rows/colours for attribute combinations: enough to read, few enough to tell apart
MAX_LISTED_COMBINATIONS = 5000  # beyond, combinations to show are picked from a sample of this many
MAX_POINTS = 3000  # test points per scatter: keeps memory and file size small at any test-set size
LATENT_SAMPLES = 300  # samples per attribute query in latent_attributes.png
GRID_TILES = 11  # p(x|z) grid: tiles per axis
GRID_LIMIT = 3.0  # p(x|z) grid spans [-3, 3]: nearly all of the prior's mass per dimension
BOUNDARY_RESOLUTION = 150  # p(a|z) evaluated on a 150 x 150 lattice
COMPLETED_TEMPERATURE = (
    EvalConfig.complete_temperature
)  # the completed generation figure's T: the report's column


INDEX = "figures.json"  # written last by make_figures: the files and captions, in reading order


@dataclass
class FigureInfo:
    file: str  # file name inside the figures dir, e.g. "generated_joint.png"
    title: str
    caption: str  # one line telling a reader what to look for


# -- numeric helpers ---------------------------------------------------------------------------------------
def latent_grid(n: int = GRID_TILES, limit: float = GRID_LIMIT) -> np.ndarray:
    """n evenly spaced values from -limit to +limit (both included): the p(x|z) grid's coordinates."""
    return np.linspace(-limit, limit, n)


def principal_plane(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean m (D,), components V (2, D)) of points (N, D), D >= 2: the plane of largest spread.

    Project with (z - m) @ V.T; a plane point u (.., 2) is z = m + u @ V. Signs are fixed (largest entry of
    each component positive) so the picture does not flip between runs of the SVD.
    """
    m = points.mean(0)
    _, _, vt = torch.linalg.svd(points - m, full_matrices=False)
    v = vt[:2]
    sign = torch.sign(v.gather(1, v.abs().argmax(1, keepdim=True)))
    return m, v * sign


@dataclass
class Plane:
    """A linear 2-D view of z: project z -> u and lift u -> z (u = (z - m) @ V.T, z = m + u @ V)."""

    mean: torch.Tensor  # (z_dim,)
    components: torch.Tensor  # (2, z_dim), orthonormal rows (z_dim == 1: the second row is zero)
    note: str  # said in titles: what the two axes are
    axis_labels: tuple[str, str]

    @property
    def one_dimensional(self) -> bool:
        return self.components.shape[1] == 1

    def project(self, z: torch.Tensor) -> np.ndarray:
        return ((z - self.mean) @ self.components.T).cpu().numpy()

    def lift(self, u: np.ndarray) -> torch.Tensor:
        coords = torch.as_tensor(u, dtype=self.mean.dtype, device=self.mean.device)
        return self.mean + coords @ self.components

    @classmethod
    def of(cls, test_means: torch.Tensor) -> Plane:
        """The plane for this z_dim (see the module docstring); test_means are q(z|x) means of test images."""
        z_dim, dev = test_means.shape[1], test_means.device
        if z_dim == 1:
            return cls(
                torch.zeros(1, device=dev),
                torch.tensor([[1.0], [0.0]], device=dev),
                "(z is 1-D: points are spread vertically at random, for visibility)",
                ("z", "random spread"),
            )
        if z_dim == 2:
            return cls(torch.zeros(2, device=dev), torch.eye(2, device=dev), "", ("z1", "z2"))
        m, v = principal_plane(test_means)
        return cls(m, v, "(first 2 principal components of q(z|x) test means)", ("PC 1", "PC 2"))


# -- labels ------------------------------------------------------------------------------------------------
def combinations(
    attributes: Sequence[Attribute], limit: int = MAX_COMBINATIONS, seed: int = 0
) -> list[tuple[int, ...]]:
    """Attribute value combinations (class indices) to show: all of them, in product order, when there are at
    most `limit`; else `limit` distinct ones stratified over every attribute (each value of each attribute
    appears limit / |values| times, rounded), picked greedily (ties broken by a fixed seed) and sorted, so
    that MNIST-A's rows show every digit, scale, orientation and location instead of the first 20 of the
    product (all digit 0)."""
    sizes = [len(a.classes) for a in attributes]
    if math.prod(sizes) <= limit:
        return list(itertools.product(*(range(n) for n in sizes)))
    rng = np.random.default_rng(seed)
    if math.prod(sizes) <= MAX_LISTED_COMBINATIONS:
        every = list(itertools.product(*(range(n) for n in sizes)))
        remaining = [every[i] for i in rng.permutation(len(every))]
    else:  # too many to list (many attributes): a seeded sample of distinct ones to pick from
        remaining = list(
            dict.fromkeys(tuple(int(rng.integers(n)) for n in sizes) for _ in range(MAX_LISTED_COMBINATIONS))
        )
    shown: list[tuple[int, ...]] = []
    counts = [np.zeros(n, np.int64) for n in sizes]
    for _ in range(
        limit
    ):  # greedily the combination whose values have been shown least (ties: the seeded order)
        best = min(remaining, key=lambda c: sum(int(counts[i][v]) for i, v in enumerate(c)))
        remaining.remove(best)
        shown.append(best)
        for i, v in enumerate(best):
            counts[i][v] += 1
    return sorted(shown)


def assignment(attributes: Sequence[Attribute], values: Sequence[int]) -> str:
    """(position, digit), (0, 1) -> "position=left, digit=2"."""
    return ", ".join(f"{a.name}={a.classes[v]}" for a, v in zip(attributes, values))


def query(names: Sequence[str]) -> str:
    """["x", "digit"] -> "q(z | x, digit)"."""
    return f"q(z | {', '.join(names)})"


def combination_index(split: dict[str, torch.Tensor], attributes: Sequence[Attribute]) -> torch.Tensor:
    """Each row's position in `combinations(attributes, limit=inf)` (mixed-radix number of its values)."""
    index = torch.zeros(
        len(split[attributes[0].name]), dtype=torch.long, device=split[attributes[0].name].device
    )
    for a in attributes:
        index = index * len(a.classes) + a.to_levels(split[a.name])
    return index


def colours(n: int) -> list:
    """n distinguishable colours (tab10, tab20 beyond 10)."""
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


# -- drawing helpers ---------------------------------------------------------------------------------------
def tile(images: np.ndarray, ncols: int, pad: int = 1, pad_value: float = 0.5) -> np.ndarray:
    """(n, H, W) or (n, H, W, 3) images -> one (rows*(H+pad)-pad, ncols*(W+pad)-pad[, 3]) mosaic, row-major,
    gaps in grey."""
    n, h, w = images.shape[:3]
    nrows = -(-n // ncols)
    out = np.full(
        (nrows * (h + pad) - pad, ncols * (w + pad) - pad, *images.shape[3:]), pad_value, dtype=np.float32
    )
    for i, image in enumerate(images):
        r, c = divmod(i, ncols)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = image
    return out


def _show_image(ax, image: np.ndarray, **kwargs) -> None:
    if image.ndim == 3:  # colour (H, W, 3)
        ax.imshow(np.clip(image, 0, 1), interpolation="nearest", **kwargs)
    else:
        ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest", **kwargs)


def _hide_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _image_rows(rows: Sequence[np.ndarray], labels: Sequence[str], title: str) -> Figure:
    """One labelled row of images per query: rows[i] is (n, H, W)."""
    strips = [tile(r, len(r)) for r in rows]
    height, width = strips[0].shape[:2]
    inch = min(0.06, 9.0 / width)  # inches per image pixel: at most 9 inches of images
    fig = Figure(
        figsize=(max(width * inch + 2.2, 6.5), len(rows) * (height * inch + 0.08) + 0.8), layout="constrained"
    )
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, strip, label in zip(axes, strips, labels):
        _show_image(ax, strip)
        _hide_ticks(ax)
        ax.set_anchor(
            "W"
        )  # the strip at its box's left edge, where constrained layout left room for the label
        ax.set_ylabel(_one_value_a_line(label), rotation=0, ha="right", va="center", fontsize=10)
    _suptitle(fig, title)
    return fig


LONG_LABEL = 25  # characters: longer legend labels (four attributes' combinations) go one per line


def _one_value_a_line(label: str) -> str:
    """A long combination's row label, one attribute=value a line: four attributes on one line took half the
    figure's width from the images."""
    return label.replace(", ", "\n") if len(label) > LONG_LABEL else label


def _legend_columns(labels: Sequence[str]) -> int:
    n = len(labels)
    return 1 if max(map(len, labels), default=0) > LONG_LABEL else min(n, 2 if n <= 4 else 4)


def _legend_below(ax, n: int, **kwargs) -> None:
    """A legend under the axes, so it never covers the data."""
    labels = ax.get_legend_handles_labels()[1]
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.13),
        ncol=_legend_columns(labels) if labels else min(n, 4),
        fontsize="small",
        markerscale=2,
        frameon=False,
        **kwargs,
    )


def _limits(points: Sequence[np.ndarray], margin: float = 0.08) -> tuple[float, float, float, float]:
    """(xmin, xmax, ymin, ymax) holding every point (N, 2), padded; degenerate ranges are widened."""
    allp = np.concatenate([p.reshape(-1, 2) for p in points])
    lo, hi = allp.min(0), allp.max(0)
    span = np.maximum(hi - lo, 1e-3)
    lo, hi = lo - margin * span, hi + margin * span
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def _latent_figure(n_panels: int, panel_width: float, height: float) -> tuple[Figure, list]:
    """A row of latent-plane panels; a compressed layout keeps titles clear of equal-aspect axes."""
    fig = Figure(
        figsize=(panel_width * n_panels, height),
        layout=ConstrainedLayoutEngine(compress=True, h_pad=0.1, w_pad=0.1),
    )
    return fig, list(fig.subplots(1, n_panels, squeeze=False)[0])


def _latent_axes(ax, plane: Plane, limits: tuple[float, float, float, float], title: str) -> None:
    ax.set_xlim(*limits[:2])
    ax.set_ylim(*limits[2:])
    if plane.one_dimensional:
        ax.set_yticks([])
    else:
        ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(plane.axis_labels[0])
    ax.set_ylabel(plane.axis_labels[1])
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.25)


def _suptitle(fig: Figure, title: str, note: str = "") -> None:
    fig.suptitle(f"{title}\n{note}" if note else title, fontsize=12)


def _save(fig: Figure, path: Path) -> None:
    """Atomically: a kill mid-draw leaves the old PNG or none, never an empty one the report would embed."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, facecolor="white", format="png"))


def save_image_grid(images: np.ndarray, out: Path | str, title: str = "", ncols: int = 8) -> None:
    """Save (n, H, W) or (n, H, W, 3) images in [0, 1] as one titled grid PNG (the `jmvae generate`
    output)."""
    images = np.asarray(images, dtype=np.float32)
    ncols = max(1, min(ncols, len(images)))
    mosaic = tile(images, ncols)
    inch = min(0.04, 9.0 / mosaic.shape[1])
    fig = Figure(figsize=(mosaic.shape[1] * inch + 0.4, mosaic.shape[0] * inch + 0.7), layout="constrained")
    ax = fig.subplots()
    _show_image(ax, mosaic)
    _hide_ticks(ax)
    if title:
        ax.set_title(title, fontsize=11)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    _save(fig, Path(out))


# -- the test-set embedding shared by figures 4 and 5 ------------------------------------------------------
@dataclass
class Embedding:
    """A seeded subsample of the test set and its posteriors q(z|x) and q(z|x,y) (means and scales)."""

    batch: dict[str, torch.Tensor]
    x_loc: torch.Tensor
    x_scale: torch.Tensor
    joint_loc: torch.Tensor
    joint_scale: torch.Tensor

    @classmethod
    def of(cls, model, data: AttributeDataset, seed: int, limit: int = MAX_POINTS) -> Embedding:
        test = observed_rows(data, data.test, [a.name for a in data.attributes])  # q(z|x,y) needs every y
        n = len(test[data.images[0].name])
        generator = torch.Generator().manual_seed(seed)
        idx = torch.randperm(n, generator=generator)[:limit].sort().values
        batch = to_batch(test, idx, _device(model))
        qx = model.posterior({x: batch[x] for x in data.image_names})
        qxy = model.posterior(batch)
        return cls(batch, qx.mean, qx.stddev, qxy.mean, qxy.stddev)


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _spread(plane: Plane, u: np.ndarray, seed: int) -> np.ndarray:
    """For a 1-D z, spread points vertically at random (seeded) so overlapping ones stay visible."""
    if plane.one_dimensional:
        u = u.copy()
        u[:, 1] = np.random.default_rng(seed).uniform(-0.5, 0.5, len(u))
    return u


# -- the figures -------------------------------------------------------------------------------------------
def fig_generated_joint(model, data: AttributeDataset, n: int) -> tuple[Figure, FigureInfo]:
    attrs = data.attributes
    combos = combinations(attrs)
    given = {
        a.name: a.level_values(torch.tensor([c[i] for c in combos], device=_device(model)))
        for i, a in enumerate(attrs)
    }
    images = _generated_rows(model, data, given, n)
    names = [a.name for a in attrs]
    title = (
        f"Images generated from {query(names)}\n{n} samples of z per row, each decoded as the mean of p(x|z)"
    )
    fig = _image_rows(images, [assignment(attrs, c) for c in combos], title)
    return fig, FigureInfo(
        "generated_joint.png",
        "Generation from all attributes",
        f"Each row should show {n} varied images that all match the row's attribute values "
        f"(z drawn from {query(names)})",
    )


def fig_generated_single(
    model, data: AttributeDataset, n: int, completed: float | None = None
) -> tuple[Figure, FigureInfo]:
    """completed=T: the same rows drawn by generate(complete=True) at temperature T."""
    rows, labels = [], []
    for a in data.attributes:
        values = a.level_values(torch.arange(len(a.classes), device=_device(model)))
        rows += _generated_rows(model, data, {a.name: values}, n, completed)
        labels += [f"{a.name}={c}" for c in a.classes]
    if completed is None:
        title = (
            f"Images generated from one attribute q(z | a=v)\n"
            f"{n} samples of z per row, each decoded as the mean of p(x|z)"
        )
        return _image_rows(rows, labels, title), FigureInfo(
            "generated_single.png",
            "Generation from a single attribute",
            "Each row should match its one given value and vary freely in every other attribute",
        )
    title = (
        f"Images generated from one attribute, completed: each image's other attributes drawn from p(b|z), "
        f"z ~ q(z | a=v),\nthen z from q(z | a=v and those) at T = {completed:g}; {n} samples per row"
    )
    return _image_rows(rows, labels, title), FigureInfo(
        "generated_single_completed.png",
        f"Generation from a single attribute, completed (T = {completed:g})",
        "As above, drawn as `jmvae generate --complete` draws: each image is about one value of every other "
        "attribute, so it should show its row's value more often while the others still vary",
    )


def fig_generated_from_image(
    model, data: AttributeDataset, n: int, rows: int = 8
) -> tuple[Figure, FigureInfo]:
    """Several images: real test examples, each beside n examples generated from its first image alone."""
    first = data.images[0].name
    pick = torch.randperm(data.n_test)[:rows].sort().values
    real = {m: data.test[m][pick].float().div(255) for m in data.image_names}
    drawn = model.generate({first: real[first].to(_device(model))}, n)  # (n, rows, D) per image
    pictures = data.pictures({m: torch.cat([real[m][None], drawn[m].cpu()]) for m in data.image_names})
    labels = [
        ", ".join(
            f"{a.name}={a.show(v.item()) if bool(a.observed(v)) else '?'}"
            for a in data.attributes
            for v in [data.test[a.name][i]]
        )
        for i in pick.tolist()
    ]
    title = (
        f"Generated from the first image ({first}) alone: a real test example, then {n} draws of z ~ "
        f"q(z|{first}),\neach decoded as the mean of p(x|z)"
    )
    return _image_rows([pictures[:, r] for r in range(len(pick))], labels, title), FigureInfo(
        "generated_from_image.png",
        f"Generation from one image ({first})",
        f"Each row: a real test example (first picture), then {n} examples generated from its {first} alone; "
        f"every image should show the row's attributes (what coherence across images counts)",
    )


def _generated_rows(
    model, data: AttributeDataset, given: dict[str, torch.Tensor], n: int, completed: float | None = None
) -> list[np.ndarray]:
    """model.generate(given, n) (completed at temperature `completed`) -> one (n, H, W) image array per
    query."""
    how = {} if completed is None else {"complete": True, "temperature": completed}
    drawn = data.pictures(model.generate(given, n, **how))  # (n, B, H, W[, 3])
    return [drawn[:, b] for b in range(drawn.shape[1])]


def fig_latent_attributes(
    model, data: AttributeDataset, plane: Plane, seed: int
) -> tuple[Figure, FigureInfo]:
    attrs, dev = data.attributes, _device(model)
    panels: list[tuple[str, list[str], list[np.ndarray]]] = []  # (title, labels, points per label)
    combos = combinations(attrs)
    if len(attrs) > 1:
        given = {
            a.name: a.level_values(torch.tensor([c[i] for c in combos], device=dev))
            for i, a in enumerate(attrs)
        }
        z = model.posterior(given).sample((LATENT_SAMPLES,))  # (S, B, z_dim)
        panels.append(
            (
                query([a.name for a in attrs]),
                [assignment(attrs, c) for c in combos],
                [plane.project(z[:, b]) for b in range(len(combos))],
            )
        )
    for a in attrs:
        z = model.posterior({a.name: a.level_values(torch.arange(len(a.classes), device=dev))}).sample(
            (LATENT_SAMPLES,)
        )
        labels = [f"{a.name}={c}" for c in a.classes][:MAX_COMBINATIONS]
        panels.append((query([a.name]), labels, [plane.project(z[:, b]) for b in range(len(labels))]))
    panels = [
        (t, labels, [_spread(plane, p, seed + i) for i, p in enumerate(pts)]) for t, labels, pts in panels
    ]
    limits = _limits([p for _, _, pts in panels for p in pts])

    ncols = min(3, len(panels))  # four attributes: two rows of panels, not five squeezed ones
    nrows = -(-len(panels) // ncols)
    legend_lines = max(-(-len(labels) // _legend_columns(labels)) for _, labels, _ in panels)
    fig = Figure(
        figsize=(4.6 * ncols, (4.4 + 0.2 * legend_lines) * nrows + 0.6),
        layout=ConstrainedLayoutEngine(compress=True, h_pad=0.1, w_pad=0.1),
    )
    grid = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in grid[len(panels) :]:
        ax.axis("off")
    for ax, (title, labels, pts) in zip(grid, panels):
        for label, p, colour in zip(labels, pts, colours(len(labels))):
            ax.scatter(p[:, 0], p[:, 1], s=6, alpha=0.5, color=colour, label=label, linewidths=0)
        _latent_axes(ax, plane, limits, f"{LATENT_SAMPLES} samples of z per value from {title}")
        _legend_below(ax, len(labels))
    _suptitle(fig, "Where attribute queries put z", plane.note)
    return fig, FigureInfo(
        "latent_attributes.png",
        "Latent space of attribute queries",
        "Different attribute values should occupy separate regions; the one-attribute clouds "
        "should cover the joint clouds that share their value",
    )


def colourings(
    data: AttributeDataset, batch: dict[str, torch.Tensor]
) -> list[tuple[str, np.ndarray, list[str]]]:
    """How the test points are coloured, one figure row each: (note, each point's colour index, the labels).
    By attribute combination when there are at most MAX_COMBINATIONS; else by one attribute at a time
    (MNIST-A's 240 combinations cannot be told apart by colour)."""
    attrs = data.attributes
    if math.prod(len(a.classes) for a in attrs) <= MAX_COMBINATIONS:
        return [
            (
                "",
                combination_index(batch, attrs).cpu().numpy(),
                [assignment(attrs, c) for c in combinations(attrs)],
            )
        ]
    return [
        (
            f", coloured by {a.name}",
            a.to_levels(batch[a.name]).cpu().numpy(),
            [f"{a.name}={c}" for c in a.classes],
        )
        for a in attrs
    ]


def fig_latent_test(
    data: AttributeDataset, emb: Embedding, plane: Plane, seed: int
) -> tuple[Figure, FigureInfo]:
    names = [",".join(data.image_names), *(a.name for a in data.attributes)]
    std_x, std_xy = emb.x_scale.mean(-1).cpu().numpy(), emb.joint_scale.mean(-1).cpu().numpy()
    unit = float(np.median(np.concatenate([std_x, std_xy]))) or 1.0
    panels = [
        (query(names[:1]), plane.project(emb.x_loc), std_x),
        (query(names), plane.project(emb.joint_loc), std_xy),
    ]
    pts = [_spread(plane, p, seed) for _, p, _ in panels]
    limits = _limits(pts)
    rows = colourings(data, emb.batch)

    fig = Figure(
        figsize=(11.0, 6.2 * len(rows)), layout=ConstrainedLayoutEngine(compress=True, h_pad=0.1, w_pad=0.1)
    )
    axes = fig.subplots(len(rows), 2, squeeze=False)
    for row, (note, colour_of, labels) in zip(axes, rows):
        palette = colours(len(labels))
        for ax, (title, _, std), p in zip(row, panels, pts):
            for k, label in enumerate(labels):
                mask = colour_of == k
                if mask.any():
                    ax.scatter(
                        p[mask, 0],
                        p[mask, 1],
                        s=12 * std[mask] / unit,
                        alpha=0.6,
                        linewidths=0,
                        color=palette[k],
                        label=label,
                    )
            _latent_axes(ax, plane, limits, f"means of {title}\n{len(p)} test images{note}")
        if len(rows) > 1:
            _legend_below(row[0], len(labels))
    if len(rows) == 1:
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncol=min(len(labels), 4),
            fontsize="small",
            markerscale=1.5,
            frameon=False,
        )
    _suptitle(
        fig,
        f"Test images embedded by their posteriors; marker size \u221d posterior std (median std {unit:.3g})",
        plane.note,
    )
    colour = "Colours" if len(rows) == 1 else "In each row, the colours of that row's attribute"
    return fig, FigureInfo(
        "latent_test.png",
        "Latent space of test images",
        f"{colour} should form clusters; {query(names[:1])} should place an image near its "
        f"{query(names)}, and small markers mean confident posteriors",
    )


def fig_decision_boundaries(
    model, data: AttributeDataset, emb: Embedding, plane: Plane, seed: int
) -> tuple[Figure, FigureInfo]:
    points = _spread(plane, plane.project(emb.x_loc), seed)
    limits = _limits([points])
    xs = np.linspace(limits[0], limits[1], BOUNDARY_RESOLUTION)
    ys = np.linspace(limits[2], limits[3], BOUNDARY_RESOLUTION)
    u = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)  # row-major from the bottom
    names = [a.name for a in data.attributes]
    z = plane.lift(u)
    logits = [model.logits(chunk, names) for chunk in z.split(4096)]  # bounded memory at any hidden width
    probs = {
        n: data.attribute(n)
        .level_probs(torch.cat([l[n] for l in logits]))
        .cpu()
        .numpy()
        .reshape(len(ys), len(xs), -1)
        for n in names
    }

    attrs, extent = data.attributes, limits
    fig, axes = _latent_figure(len(attrs), 5.6, 5.8)
    for ax, a in zip(axes, attrs):
        truth = a.to_levels(emb.batch[a.name]).cpu().numpy()
        palette = ["tab:blue", "tab:red"] if len(a.classes) == 2 else colours(len(a.classes))
        p = probs[a.name]
        if len(a.classes) == 2:
            im = ax.imshow(
                p[..., 1],
                origin="lower",
                extent=extent,
                cmap="RdBu_r",
                vmin=0,
                vmax=1,
                alpha=0.55,
                aspect="auto",
            )
            ax.contour(xs, ys, p[..., 1], levels=[0.5], colors="k", linewidths=1.5)
            fig.colorbar(im, ax=ax, shrink=0.8, label=f"p({a.name}={a.classes[1]} | z)  (black line: 0.5)")
        else:
            ax.imshow(
                p.argmax(-1),
                origin="lower",
                extent=extent,
                cmap=ListedColormap(palette),
                alpha=0.3,
                vmin=-0.5,
                vmax=len(a.classes) - 0.5,
                interpolation="nearest",
                aspect="auto",
            )
        for v, colour in enumerate(palette):
            mask = truth == v
            ax.scatter(
                points[mask, 0],
                points[mask, 1],
                s=5,
                color=colour,
                edgecolors="k",
                linewidths=0.2,
                label=f"{a.name}={a.classes[v]}",
            )
        shading = f"p({a.name}={a.classes[1]} | z)" if len(a.classes) == 2 else f"argmax of p({a.name} | z)"
        _latent_axes(
            ax,
            plane,
            limits,
            f"shading: {shading}\npoints: {query(data.image_names)} means of test "
            f"images,\ncoloured by true {a.name}",
        )  # one line overlapped the next panel's
        _legend_below(ax, len(a.classes))
    _suptitle(fig, "Attribute decoders p(a|z) over the latent plane", plane.note)
    return fig, FigureInfo(
        "decision_boundaries.png",
        "Attribute decision boundaries",
        "The boundaries of p(a|z) should separate the test images by their true values: "
        "points of one colour on the matching side",
    )


def fig_pxz_grid(model, data: AttributeDataset, plane: Plane) -> tuple[Figure, FigureInfo]:
    values = latent_grid()
    rows = values[::-1] if not plane.one_dimensional else np.zeros(1)  # top row = largest second coordinate
    u = np.stack(np.meshgrid(values, rows), -1).reshape(-1, 2)
    logits = model.logits(plane.lift(u), data.image_names)
    x = {k: model.modalities[k].point(v) for k, v in logits.items()}
    h, w = data.picture_shape
    mosaic = tile(data.pictures(x), len(values))

    inch = min(0.03, 9.0 / mosaic.shape[1])
    fig = Figure(figsize=(mosaic.shape[1] * inch + 1.4, mosaic.shape[0] * inch + 1.4), layout="constrained")
    ax = fig.subplots()
    _show_image(ax, mosaic)
    ax.set_xticks(np.arange(len(values)) * (w + 1) + (w - 1) / 2, [f"{v:g}" for v in values])
    ax.set_xlabel(plane.axis_labels[0])
    if plane.one_dimensional:
        ax.set_yticks([])
    else:
        ax.set_yticks(np.arange(len(rows)) * (h + 1) + (h - 1) / 2, [f"{v:g}" for v in rows])
        ax.set_ylabel(plane.axis_labels[1])
    _suptitle(fig, "Mean of p(x|z) on a grid of z", "" if plane.one_dimensional else plane.note)
    return fig, FigureInfo(
        "pxz_grid.png",
        "Decoded latent grid",
        f"How images change across z in [-{GRID_LIMIT:g}, {GRID_LIMIT:g}]: regions should "
        f"hold recognisable images, with smooth transitions between attribute values",
    )


def loss_terms(history: list[dict]) -> list[str]:
    """ "loss" then every other term found as train_<term> or test_<term>, in column order."""
    terms: list[str] = []
    for key in history[0] if history else {}:
        for prefix in ("train_", "test_"):
            if key.startswith(prefix) and key[len(prefix) :] not in terms:
                terms.append(key[len(prefix) :])
    return sorted(terms, key=lambda t: t != "loss")


def fig_training_curves(history: list[dict]) -> tuple[Figure, FigureInfo]:
    terms = loss_terms(history)
    ncols = min(4, max(1, len(terms)))
    nrows = max(1, -(-len(terms) // ncols))
    fig = Figure(figsize=(3.3 * ncols, 2.6 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    steps = [float(r["step"]) for r in history]
    marker = "o" if len(history) <= 20 else None
    for ax, term in zip(axes, terms):
        for split, colour in (("train", "tab:blue"), ("test", "tab:orange")):
            ys = [
                float(r[f"{split}_{term}"]) if r.get(f"{split}_{term}") not in (None, "") else np.nan
                for r in history
            ]
            ax.plot(steps, ys, color=colour, marker=marker, markersize=3, label=split)
        ax.set_title("total loss" if term == "loss" else term, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.25)
    for ax in axes[len(terms) :]:
        ax.axis("off")
    if terms:
        axes[0].legend(fontsize="small")
    else:
        axes[0].text(0.5, 0.5, "no training history", ha="center", va="center", transform=axes[0].transAxes)
    _suptitle(fig, "Training curves: loss and each of its terms (mean per example) after each epoch")
    return fig, FigureInfo(
        "training_curves.png",
        "Training curves",
        "Train and test should fall and level off together; a growing gap means overfitting",
    )


def make_figures(
    model, data: AttributeDataset, history: list[dict], out_dir: Path, n_samples: int = 8, seed: int = 0
) -> list[FigureInfo]:
    """Draw every figure into out_dir and return their infos, in reading order.

    The caller's random state and the model's train/eval mode are left as they were.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    infos = []
    try:
        with torch.no_grad(), own_stream(model):
            emb = Embedding.of(model, data, seed)
            plane = Plane.of(emb.x_loc)
            draws = [
                lambda: fig_generated_joint(model, data, n_samples),
                lambda: fig_generated_single(model, data, n_samples),
                *(
                    [lambda: fig_generated_single(model, data, n_samples, completed=COMPLETED_TEMPERATURE)]
                    if len(data.attributes) > 1
                    else []
                ),
                *([lambda: fig_generated_from_image(model, data, n_samples)] if len(data.images) > 1 else []),
                lambda: fig_latent_attributes(model, data, plane, seed),
                lambda: fig_latent_test(data, emb, plane, seed),
                lambda: fig_decision_boundaries(model, data, emb, plane, seed),
                lambda: fig_pxz_grid(model, data, plane),
                lambda: fig_training_curves(history),
            ]
            for draw in draws:
                torch.manual_seed(seed)  # each figure seeded on its own: one change never shifts another
                fig, info = draw()
                _save(fig, out_dir / info.file)
                infos.append(info)
    finally:
        model.train(was_training)
    write_text(out_dir / INDEX, json.dumps([asdict(i) for i in infos], indent=1) + "\n")
    return infos


def read_figures(out_dir: Path) -> list[FigureInfo] | None:
    """The figures a run already drew, with their captions (None if it has no index): the report needs
    only these, so `jmvae report` rebuilds its page without redrawing."""
    path = Path(out_dir) / INDEX
    try:
        infos = [FigureInfo(**d) for d in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):  # missing, or not the index jmvae wrote: redraw
        return None
    ok = all(
        (Path(out_dir) / i.file).is_file() and (Path(out_dir) / i.file).stat().st_size > 0 for i in infos
    )
    return infos if ok else None
