"""Digits drawn from fonts as MNIST's are drawn: a source of digits none of NIST's writers made.

Every font file under the given folders that draws ten distinct digits is rendered at each digit, then each
copy is warped (stroke width, slant, width, a small turn, an elastic distortion) and written as MNIST writes
a digit: ink scaled into a 20x20 box, centred by its mass in 28x28, uint8.

    apt-get download fonts-dkg-handwriting fonts-humor-sans ...; dpkg -x PKG.deb fonts/
    python benchmarks/font_digits.py fonts/ --out /tmp/fontdigits.png   # a sheet, and the fonts found
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import bad_input
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

SIZE = 96  # the size glyphs are drawn at before they are warped and shrunk


def glyph(font: ImageFont.FreeTypeFont, digit: int) -> np.ndarray:
    """One digit drawn in `font`, cropped to its ink (float in [0, 1]); empty when the font has no ink."""
    canvas = Image.new("L", (SIZE * 2, SIZE * 2), 0)
    ImageDraw.Draw(canvas).text((SIZE // 2, SIZE // 4), str(digit), fill=255, font=font)
    x = np.asarray(canvas, np.float64) / 255
    rows, cols = np.nonzero(x > 0.1)
    if len(rows) == 0:
        return np.zeros((0, 0))
    return x[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def find_fonts(folders: list[str | Path]) -> list[Path]:
    """Font files under `folders` (one per file name) whose ten digits are all inked, distinct, and taller
    than wide on the whole (symbol, dingbat and fallback fonts fail this). None is an error."""
    found, names = [], set()
    for path in sorted(
        p for d in folders for p in Path(d).rglob("*") if p.suffix.lower() in (".ttf", ".otf")
    ):
        if path.stem.lower() in names:
            continue
        try:
            font = ImageFont.truetype(str(path), SIZE)
            shapes = [glyph(font, d) for d in range(10)]
        except OSError:
            continue
        if any(s.size == 0 or s.shape[0] < SIZE // 4 for s in shapes):
            continue
        small = [
            np.asarray(Image.fromarray((s * 255).astype(np.uint8)).resize((12, 16))) / 255 for s in shapes
        ]
        distinct = min(np.abs(a - b).mean() for i, a in enumerate(small) for b in small[i + 1 :])
        if distinct > 0.05 and np.mean([s.shape[0] / s.shape[1] for s in shapes]) > 1.0:
            found.append(path)
            names.add(path.stem.lower())
    if not found:
        bad_input(f"no font under {', '.join(map(str, folders))} draws ten digits")
    return found


def warp(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A glyph (float, any size) as a handwritten MNIST digit might be: 28x28 uint8."""
    x = np.pad(x, 4)
    ink = x > 0.5
    signed = ndimage.distance_transform_edt(ink) - ndimage.distance_transform_edt(~ink)  # > 0 inside
    edge = ink & ~ndimage.binary_erosion(ink)
    width = 2 * ink.sum() / max(edge.sum(), 1)  # a stroke of length L and width w: area L w, edge 2 L
    target = x.shape[0] * rng.uniform(0.10, 0.20)  # MNIST's strokes, as a share of the digit's height
    x = 1 / (1 + np.exp(-(signed + (target - width) / 2) * 1.5))
    pad = max(x.shape) // 2
    x = np.pad(x, pad)
    sy = rng.uniform(0.9, 1.1)
    sx = rng.uniform(0.6, 1.15)
    shear = rng.uniform(-0.35, 0.35)
    turn = np.deg2rad(rng.uniform(-12, 12))
    c, s = np.cos(turn), np.sin(turn)
    m = np.array([[c, -s], [s, c]]) @ np.array([[1 / sy, 0], [shear, 1 / sx]])
    centre = np.array(x.shape) / 2
    x = ndimage.affine_transform(x, m, centre - m @ centre, order=1)
    dy, dx = (
        ndimage.gaussian_filter(rng.uniform(-1, 1, x.shape), x.shape[0] * 0.08) * x.shape[0] * 1.2
        for _ in range(2)
    )
    yy, xx = np.meshgrid(np.arange(x.shape[0]), np.arange(x.shape[1]), indexing="ij")
    x = ndimage.map_coordinates(x, [yy + dy, xx + dx], order=1)
    rows, cols = np.nonzero(x > 0.05)
    if len(rows) == 0:
        return np.zeros((28, 28), np.uint8)
    x = x[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    box = mnist_box((np.clip(x, 0, 1) * 255).astype(np.uint8), Image.Resampling.LANCZOS)
    return np.clip(box, 0, 255).astype(np.uint8)


def mnist_box(x: np.ndarray, resample: Image.Resampling) -> np.ndarray:
    """A digit cut out to its ink, (H, W) uint8 or float32, boxed as MNIST boxes one: its longest side resized
    to 20 pixels, laid in a 28x28 box and shifted so that its centre of mass is the box's centre (unclipped;
    float32 in, float32 out)."""
    f = 20 / max(x.shape)
    size = (max(1, round(x.shape[1] * f)), max(1, round(x.shape[0] * f)))
    small = np.asarray(Image.fromarray(x).resize(size, resample))  # uint8: Pillow's L mode, float32: F
    box = np.zeros((28, 28), np.float32 if small.dtype == np.float32 else np.float64)
    top, left = (28 - small.shape[0]) // 2, (28 - small.shape[1]) // 2
    box[top : top + small.shape[0], left : left + small.shape[1]] = small
    cy, cx = ndimage.center_of_mass(box)
    return ndimage.shift(box, (14 - cy, 14 - cx), order=1)


def font_digits(fonts: list[Path], copies: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`copies` warped renders of every digit of every font in `fonts` (from find_fonts): (N, 28, 28) uint8
    and their labels."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for path in fonts:
        font = ImageFont.truetype(str(path), SIZE)
        for d in range(10):
            g = glyph(font, d)
            images += [warp(g, rng) for _ in range(copies)]
            labels += [d] * copies
    return np.stack(images), np.array(labels)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+")
    p.add_argument("--out", default="fontdigits.png", help="a sheet of warped digits, one row a digit")
    args = p.parse_args()
    fonts = find_fonts(args.folders)
    print(f"{len(fonts)} fonts draw ten digits:", ", ".join(f.stem for f in fonts))
    rng = np.random.default_rng(0)
    picks = [fonts[i] for i in rng.choice(len(fonts), 20)]
    rows = [
        np.concatenate([warp(glyph(ImageFont.truetype(str(f), SIZE), d), rng) for f in picks], 1)
        for d in range(10)
    ]
    Image.fromarray(np.concatenate(rows, 0)).resize((20 * 28 * 2, 10 * 28 * 2), Image.NEAREST).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
