"""Which digit do an MNIST-A run's images show? Read by a reader that never saw an MNIST digit.

    apt-get download fonts-dkg-handwriting ...; dpkg -x PKG.deb fonts/   # the list: docs/results-mnist-a.md
    python benchmarks/unseen_digit_reader.py --fonts fonts/ DIR... -- runs/mnist-a [runs/mnist-a-1 ...]

The reader learns only digits drawn from fonts (benchmarks/font_digits.py), rendered onto MNIST-A canvases as
MNIST-A renders its own (a random scale, turn and place). It reads a canvas as MNIST reads a digit: the ink
cut out, scaled to a 20x20 box and centred by its mass in 28x28, then a small CNN. For each run it prints its
digit accuracy on the run's real test renders, then on images drawn at T = 1 from q(z|y) with all four
attributes given (every one of the 240 queries, --n images each), their ratio and each digit's share, and
writes the images it read wrong to --figures.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import bad_input, cpu_model  # noqa: E402
from font_digits import find_fonts, font_digits, mnist_box  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from jmvae.classifier import blur  # noqa: E402
from jmvae.data import mnist_a  # noqa: E402
from jmvae.train import load_run  # noqa: E402


def normalize(canvas: np.ndarray) -> np.ndarray:
    """A canvas (H, W) in [0, 1] as MNIST writes a digit: the ink (above a quarter of the brightest pixel)
    cut out, brightest at 1, longest side 20, centred by its mass in 28x28. Blank stays blank."""
    top = canvas.max()
    if top <= 0.05:
        return np.zeros((28, 28), np.float32)
    rows, cols = np.nonzero(canvas > 0.25 * top)
    x = (canvas[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] / top).astype(np.float32)
    return np.clip(mnist_box(x, Image.Resampling.BILINEAR), 0, 1).astype(np.float32)


def network() -> nn.Module:
    layers: list[nn.Module] = []
    c = 1
    for out in (32, 64, 64):
        layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c = out
    return nn.Sequential(
        *layers, nn.Flatten(), nn.Linear(64 * 3 * 3, 256), nn.ReLU(), nn.Dropout(0.3), nn.Linear(256, 10)
    )


def train(fonts: list[str], copies: int, steps: int, seed: int) -> nn.Module:
    """The reader, learnt from MNIST-A renders of font digits, blurred at random (generated images are
    means)."""
    digits, labels = font_digits(find_fonts(fonts), copies, seed)
    rendered = mnist_a.generate(digits, labels, renders=1, seed=seed)
    x = torch.from_numpy(np.stack([normalize(c / 255) for c in rendered.images.astype(np.float32)]))[:, None]
    y = torch.from_numpy(rendered.labels["digit"]).long()
    torch.manual_seed(seed)
    net = network()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(len(x), (128,), generator=g)
        b, sigma = x[i], float(torch.rand(1, generator=g)) * 1.2
        if sigma > 0.3:
            b = blur(b.flatten(1), (28, 28), sigma, radius=3).view(b.shape)
            b = b / b.amax((2, 3), keepdim=True).clamp_min(1e-6)
        loss = F.cross_entropy(net(b), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@torch.no_grad()
def read(net: nn.Module, canvases: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each canvas's digit as read, and the 28x28 crop it was read from."""
    crops = np.stack([normalize(c) for c in canvases])
    x = torch.from_numpy(crops)[:, None]
    return torch.cat([net(x[i : i + 2048]).argmax(1) for i in range(0, len(x), 2048)]).numpy(), crops


def show_misread(
    crops: np.ndarray, asked: np.ndarray, got: np.ndarray, path: Path, per_digit: int = 12
) -> None:
    """A row per asked digit: images read as another digit, each titled with what the reader saw."""
    fig, axes = plt.subplots(10, per_digit, figsize=(per_digit * 0.9, 10 * 1.05))
    for d in range(10):
        wrong = np.flatnonzero((asked == d) & (got != d))[:per_digit]
        for j, ax in enumerate(axes[d]):
            ax.axis("off")
            if j < len(wrong):
                ax.imshow(crops[wrong[j]], cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"{d}->{got[wrong[j]]}", fontsize=7)
    fig.suptitle("asked -> read: generated images the unseen reader reads as another digit", fontsize=9)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--fonts", nargs="+", required=True, help="folders of .ttf/.otf files")
    p.add_argument("--n", type=int, default=100, help="images per query (default 100)")
    p.add_argument("--copies", type=int, default=20, help="warped renders of each font's digits (default 20)")
    p.add_argument("--steps", type=int, default=2500, help="the reader's training steps (default 2500)")
    p.add_argument("--figures", type=Path, help="a folder for each run's misread images")
    args = p.parse_args()
    print(f"CPU: {cpu_model()}; {torch.get_num_threads()} threads")
    with torch.enable_grad():
        net = train(args.fonts, args.copies, args.steps, seed=4321)
    print(f"{'run':32s} {'real test':>9s} {'generated':>9s} {'ratio':>6s}   generated, each digit 0-9")
    for run in args.runs:
        cfg, data, model = load_run(run)
        if data.name != "mnist-a":
            bad_input(f"reads MNIST-A runs, not {data.name}")
        side = data.images[0].shape[-1]
        real, _ = read(net, data.test["x"].reshape(-1, side, side).numpy())
        real_share = float((real == data.test["digit"].numpy()).mean())
        combos = list(itertools.product(*(range(len(a.classes)) for a in data.attributes)))
        given = {
            a.name: a.level_values(torch.tensor([c[i] for c in combos]))
            for i, a in enumerate(data.attributes)
        }
        torch.manual_seed(0)
        drawn = model.generate(given, args.n)[data.images[0].name]  # (n, queries, D)
        asked = given["digit"].expand(args.n, -1).reshape(-1).numpy()
        got, crops = read(net, drawn.reshape(-1, side, side).numpy())
        share = float((got == asked).mean())
        each = " ".join(f"{(got[asked == d] == d).mean():.2f}" for d in range(10))
        print(f"{run:32s} {real_share:9.3f} {share:9.3f} {share / real_share:6.3f}   {each}")
        if args.figures:
            args.figures.mkdir(parents=True, exist_ok=True)
            show_misread(crops, asked, got, args.figures / f"{Path(run).name}-misread.png")


if __name__ == "__main__":
    main()
