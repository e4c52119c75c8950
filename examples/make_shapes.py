"""Write a small colour dataset in the Hugging Face ImageFolder layout: the tutorial's example.

Each 32x32 image shows one shape on a noisy background. Attributes: `shape` (circle, square, triangle),
`colour` (red, green, blue, yellow), `filled` (true/false: a solid shape or an outline), `size` (the shape's
radius in pixels, 6 to 13, a real number). About 5% of the cells of each column are left empty.
`--views 2` adds a second image per example (column `mask_file_name`): the shape's grey silhouette, as a depth
or mask channel shows it: its shape, size and place, not its colour or fill.

    python examples/make_shapes.py shapes --n 10000
    jmvae train --data shapes
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40)}
SIZE = 32


def draw(
    shape: str, colour: str, filled: bool, radius: float, rng: np.random.Generator
) -> tuple[Image.Image, tuple[float, float]]:
    """The colour image and the shape's centre."""
    background = rng.integers(20, 90, 3)
    noise = rng.normal(0, 12, (SIZE, SIZE, 3))
    img = Image.fromarray(np.clip(background + noise, 0, 255).astype(np.uint8))
    cx, cy = rng.uniform(radius + 1, SIZE - radius - 1, 2)
    rgb = tuple(int(c) for c in np.clip(np.array(COLOURS[colour]) + rng.normal(0, 15, 3), 0, 255))
    outline(img, shape, cx, cy, radius, (rgb, 1) if filled else (None, 2), rgb)
    return img, (cx, cy)


def outline(img: Image.Image, shape: str, cx: float, cy: float, radius: float, fill_width, edge) -> None:
    d = ImageDraw.Draw(img)
    fill, width = fill_width
    box = [cx - radius, cy - radius, cx + radius, cy + radius]
    if shape == "circle":
        d.ellipse(box, fill=fill, outline=edge, width=width)
    elif shape == "square":
        r = radius * 0.85
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=edge, width=width)
    else:
        pts = [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in np.deg2rad([-90, 30, 150])]
        d.polygon(pts, fill=fill, outline=edge, width=width)


def mask(shape: str, radius: float, centre: tuple[float, float], rng: np.random.Generator) -> Image.Image:
    """The second view: a grey silhouette (shape, size, place; no colour, no fill) on a dark noisy ground."""
    img = Image.fromarray(np.clip(rng.normal(30, 10, (SIZE, SIZE)), 0, 255).astype(np.uint8))
    outline(img, shape, *centre, radius, (200, 1), 200)
    return img


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="folder to write (images/ and metadata.csv)")
    p.add_argument("--n", type=int, default=10_000, help="number of images (default 10000)")
    p.add_argument(
        "--missing", type=float, default=0.05, help="share of empty cells per column (default 0.05)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--views", type=int, choices=(1, 2), default=1, help="images per example (default 1)")
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    second = np.random.default_rng([args.seed, 2])  # its own stream: the first view is the same either way
    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(args.n):
        shape, colour = SHAPES[rng.integers(3)], list(COLOURS)[rng.integers(4)]
        filled, radius = bool(rng.integers(2)), float(rng.uniform(6, 13))
        name = f"images/{i:06d}.png"
        img, centre = draw(shape, colour, filled, radius, rng)
        img.save(out / name)
        row = {"file_name": name}
        if args.views == 2:
            row["mask_file_name"] = f"images/{i:06d}_mask.png"
            mask(shape, radius, centre, second).save(out / row["mask_file_name"])
        row |= {
            "shape": shape,
            "colour": colour,
            "filled": str(filled).lower(),
            "size": f"{radius:.2f}",
        }
        for k in ("shape", "colour", "filled", "size"):
            if rng.random() < args.missing:
                row[k] = ""
        rows.append(row)
    with open(out / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.n} images and {out / 'metadata.csv'}")


if __name__ == "__main__":
    main()
