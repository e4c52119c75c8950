"""A researcher's own data: a folder in the Hugging Face ImageFolder layout, an .npz, or arrays from Python.

A folder holds images (PNG or JPEG, any size, grey or colour) and a `metadata.csv` or `metadata.jsonl` with a
`file_name` column and one column per attribute, at its root (file names may start with `train/` or `test/`)
or in `train/` and `test/` subfolders. Further images of an example go in `NAME_file_name` columns (image
modality NAME; `file_name`'s is "x"), as Hugging Face datasets reads several image columns. Without a
train/test division the test split is a seeded share.
Images are decoded once into a cache keyed by the files' hashes and kept as uint8; attribute kinds are
inferred per column (`infer_kind`) unless overridden; an empty cell is "not observed".
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import UserError
from ..modalities import ATTRIBUTE_KINDS, LEVELS, Attribute, Binary, Categorical, Continuous, Image
from ..runs import atomic_write
from .attributes import AttributeDataset

METADATA = ("metadata.csv", "metadata.jsonl")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
RESERVED = ("observed", "z")  # batch and generation keys of their own
UNSAFE = '=,/\\:*?"<>|'  # not in an image's name: it names files (export, generate's .npz members)
MAX_CLASSES = 256  # a text or integer column with more distinct values is not an attribute (an id?)
FEW_INTEGERS = 20  # integer columns with at most this many values are categorical, else continuous
CACHE_VERSION = 1
MAX_PIXELS = (
    4096 * 4096
)  # an image larger than this is refused (a decompression bomb, or not a dataset image)
PASSES = 100  # the default length: 100 passes over the training split ...
MIN_STEPS, MAX_STEPS = 3000, 20_000  # ... within these bounds (docs/results-own-data.md)


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v.strip() == "") or (isinstance(v, float) and math.isnan(v))


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        try:
            return float(v)
        except OverflowError:
            return math.inf
    try:
        return float(str(v).strip())
    except ValueError:
        return None
    except OverflowError:  # an integer beyond any float
        return math.inf


def infer_kind(name: str, values: Sequence[Any]) -> str:
    """categorical, binary or continuous for a column's observed values (blanks already left out).

    true/false (and yes/no) or exactly {0, 1}: binary; integers (written without a decimal point) with at most
    FEW_INTEGERS distinct values: categorical; other numbers: continuous; text: categorical. Text among
    numbers is an error.
    """
    words = {str(v).strip().lower() for v in values}
    if words <= {"true", "false", "yes", "no"} or all(isinstance(v, bool) for v in values):
        return "binary"
    numbers = [_number(v) for v in values]
    numeric = sum(n is not None for n in numbers)
    if numeric == len(values):
        distinct = {n for n in numbers if n is not None}  # all of them
        if distinct <= {0.0, 1.0}:
            return "binary"
        if all(_integer(v) for v in values) and len(distinct) <= FEW_INTEGERS:
            return "categorical"
        if any(not math.isfinite(n) for n in distinct):
            raise UserError(f"column {name}: a non-finite value (allowed: finite numbers)")
        return "continuous"
    if numeric >= len(values) / 2:
        bad = next(v for v, n in zip(values, numbers) if n is None)
        raise UserError(
            f"column {name}: {str(bad)!r} is text in a numeric column (allowed: numbers only, or "
            f"--attribute {name}=categorical)"
        )
    return "categorical"


def _integer(v: Any) -> bool:
    """Written as an integer: an int, or text of digits (1.0 and 1e3 are real numbers)."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    return isinstance(v, str) and v.strip().lstrip("+-").isdigit()


def _sort_key(v: str):
    n = _number(v)
    return (0, n, "") if n is not None else (1, 0.0, v)


def build_attribute(name: str, kind: str, train: list[Any], rows: list[str]) -> Attribute:
    """The attribute of a column from its training values (blanks left out); `rows` names them for errors."""
    if kind == "binary":
        attr = Binary(name)
        for v, where in zip(train, rows):
            try:
                attr.index(v)
            except ValueError:
                raise UserError(
                    f"column {name}: {v!r} at {where} is not a yes/no value (allowed: true/false, 1/0, "
                    f"yes/no, or --attribute {name}=categorical)"
                ) from None
        return attr
    if kind == "continuous":
        numbers = []
        for v, where in zip(train, rows):
            n = _number(v)
            if n is None or not math.isfinite(n):
                raise UserError(
                    f"column {name}: {v!r} at {where} is not a number (allowed: finite numbers, "
                    f"or --attribute {name}=categorical)"
                )
            numbers.append(n)
        a = np.asarray(numbers, dtype=np.float64)
        mean, std = float(a.mean()), float(a.std()) or 1.0
        z = (a - mean) / std
        return Continuous(
            name, mean, std, tuple(float(q) for q in np.quantile(z, LEVELS)), float(z.min()), float(z.max())
        )
    seen = {_text(v) for v in train}
    _, _, listed = kind.partition(":")  # categorical:A,B,C: the classes, in this order
    classes = listed.split(",") if listed else sorted(seen, key=_sort_key)
    if listed and (len(set(classes)) < len(classes) or not seen <= set(classes)):
        raise UserError(
            f"--attribute {name}={kind} does not list each value of the column once "
            f"(allowed: every one of {', '.join(sorted(seen, key=_sort_key))}, in the order wanted)"
        )
    if len(classes) > MAX_CLASSES:
        raise UserError(
            f"column {name} has {len(classes)} distinct values (allowed: at most {MAX_CLASSES} classes; "
            f"--attribute {name}=continuous for numbers, or drop an id column)"
        )
    return Categorical(name, tuple(classes))


def _text(v: Any) -> str:
    """A categorical value as text: 3.0 and "3" are the same class."""
    n = _number(v)
    if n is not None and n.is_integer() and not isinstance(v, str):
        return str(int(n))
    return str(v).strip()


def encode(attr: Attribute, values: list[Any], where: list[str]) -> torch.Tensor:
    """A column's values -> the stored tensor (class indices with -1, or standardised floats with NaN)."""
    if isinstance(attr, Continuous):
        out = []
        for v, w in zip(values, where):
            n = None if _blank(v) else _number(v)
            if not _blank(v) and (n is None or not math.isfinite(n)):
                raise UserError(f"column {attr.name}: {v!r} at {w} is not a number (allowed: finite numbers)")
            out.append(math.nan if n is None else (n - attr.mean) / attr.std)
        return torch.tensor(out, dtype=torch.float32)
    out = []
    for v, w in zip(values, where):
        if _blank(v):
            out.append(-1)
            continue
        try:
            out.append(attr.index(v if isinstance(attr, Binary) else _text(v)))
        except ValueError:
            if isinstance(attr, Binary):
                raise UserError(
                    f"column {attr.name}: {v!r} at {w} is not a yes/no value (allowed: true/false, 1/0, "
                    f"yes/no, or --attribute {attr.name}=categorical)"
                ) from None
            # a class seen only in the test split: not observed there (the model never learnt it)
            out.append(-1)
    return torch.tensor(out, dtype=torch.long)


# -- reading a folder ----------------------------------------------------------------------------------------
@dataclass
class Table:
    """The metadata rows: each image column's file paths (absolute; "x" for file_name, NAME for
    NAME_file_name), the split of each row ("train", "test" or ""), and columns."""

    files: dict[str, list[Path]]
    splits: list[str]
    columns: dict[str, list[Any]]
    where: list[str]  # "metadata.csv line 7" per row, for errors


def _shown(path: Path) -> str:
    """metadata.csv, or train/metadata.csv: which metadata file a row is in."""
    return f"{path.parent.name}/{path.name}" if path.parent.name in ("train", "test") else path.name


FILE_SUFFIX = "_file_name"  # NAME_file_name: the column of image modality NAME


def image_columns(columns: Sequence[str]) -> dict[str, str]:
    """Image modality name -> its metadata column: file_name is "x", NAME_file_name is NAME."""
    out = {"x": "file_name"} if "file_name" in columns else {}
    for c in columns:
        if c.endswith(FILE_SUFFIX) and len(c) > len(FILE_SUFFIX):
            name = c[: -len(FILE_SUFFIX)]
            if name in out or name in RESERVED:
                raise UserError(
                    f"column {c}: image {name} is {'file_name' if name == 'x' else 'a reserved name'} "
                    f"(allowed: NAME_file_name with NAME other than x, {', '.join(RESERVED)})"
                )
            out[name] = c
    return out


def read_metadata(
    path: Path, base: Path, split: str
) -> tuple[dict[str, list[Path]], list[str], list[dict], list[str]]:
    rows: list[dict] = []
    try:
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                rows = list(reader)
            header = reader.fieldnames or []
            twice = next((h for h in header if header.count(h) > 1), None)
            if twice is not None:
                raise UserError(
                    f"{path}: column {twice} named twice in the header (allowed: each column once)"
                )
            where = [f"{_shown(path)} line {i + 2}" for i in range(len(rows))]
            extra = next((w for r, w in zip(rows, where) if None in r), None)
            if extra is not None:
                raise UserError(
                    f"{extra} has more fields than the header (allowed: one value per column; quote "
                    "values that hold commas)"
                )
        else:
            where = []
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
                if line.strip():
                    obj = json.loads(line)
                    if not isinstance(obj, dict):
                        raise UserError(
                            f"{path} line {i + 1} is not a JSON object (allowed: one object per line)"
                        )
                    rows.append(obj)
                    where.append(f"{_shown(path)} line {i + 1}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
        raise UserError(
            f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:80]}; allowed: a CSV or "
            "JSON-lines file with a file_name column)"
        ) from None
    if rows and "file_name" not in rows[0]:
        raise UserError(
            f"{path} has no file_name column (columns: {', '.join(map(str, rows[0])) or 'none'}; allowed: "
            "a file_name column and one column per attribute)"
        )
    columns = image_columns(list(dict.fromkeys(k for r in rows for k in r)))
    files: dict[str, list[Path]] = {m: [] for m in columns}
    splits, folder = [], str(path.parent)
    for row, w in zip(rows, where):
        for m, column in columns.items():
            name = row.get(column)
            if _blank(name):
                raise UserError(f"{w}: empty {column} (allowed: an image path relative to {path.parent})")
            rel = os.path.normpath(str(name))  # string work: a Path per row costs 10 us each
            parts = rel.split(os.sep)
            if os.path.isabs(rel) or parts[0] == ".." or (os.altsep and os.altsep in rel and ".." in rel):
                raise UserError(f"{w}: {column} {name} (allowed: a path inside {path.parent})")
            files[m].append(Path(f"{folder}{os.sep}{rel}"))
            if column == "file_name":
                first = parts[0] if len(parts) > 1 else ""
                splits.append(split or (first if first in ("train", "test") else ""))
    names = set(columns.values())
    return files, splits, [{k: v for k, v in r.items() if k not in names} for r in rows], where


def metadata_files(root: Path) -> list[tuple[Path, str]]:
    found = []
    for split in ("", "train", "test"):
        names = [root / split / m for m in METADATA if (root / split / m).is_file()]
        if len(names) > 1:
            raise UserError(f"both {names[0]} and {names[1]} (allowed: one metadata file per folder)")
        found += [(n, split) for n in names]
    return found


def read_table(root: Path) -> Table:
    if not root.is_dir():
        raise UserError(
            f"--data {root} does not exist (allowed: a folder with images and metadata.csv or "
            "metadata.jsonl, or an .npz)"
        )
    found = metadata_files(root)
    if not found:
        images = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES][:1]
        what = "is empty" if not images else "has images but no metadata.csv or metadata.jsonl"
        raise UserError(
            f"--data {root} {what} (allowed: images and a metadata.csv or metadata.jsonl with a file_name "
            "column and one column per attribute)"
        )
    files: dict[str, list[Path]] = {}
    splits, rows, where = [], [], []
    for path, split in found:
        f, s, r, w = read_metadata(path, root, split)
        if files and f and set(f) != set(files):
            raise UserError(
                f"{path} has the images {', '.join(sorted(f))} where other metadata files have "
                f"{', '.join(sorted(files))} (allowed: the same image columns in each)"
            )
        for m, paths in f.items():
            files.setdefault(m, []).extend(paths)
        splits += s
        rows += r
        where += w
    if not rows:
        raise UserError(f"--data {root}: the metadata lists no images (allowed: one row per image)")
    for m, paths in files.items():
        seen: dict[str, str] = {}
        column = "file_name" if m == "x" else m + FILE_SUFFIX
        for file, at in zip(paths, where):
            key = str(file)  # normalised when read: a.png and ./a.png agree
            if key in seen:
                raise UserError(
                    f"{column} {file.relative_to(root)} given twice ({seen[key]} and {at}; allowed: each "
                    "image once)"
                )
            seen[key] = at
    names = list(dict.fromkeys(k for r in rows for k in r))
    if not names:
        raise UserError(
            f"--data {root}: the metadata has no attribute columns (allowed: file_name and at least one "
            "attribute column)"
        )
    columns = {n: [r.get(n) for r in rows] for n in names}
    return Table(files, splits, columns, where)


def _decode(args: tuple[str, tuple[int, int] | None]) -> tuple[np.ndarray | None, str]:
    """One image file -> uint8 (H, W, 3) RGB (or None and the reason), resized to `size` (H, W) if given."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)  # refused below, in one line
    path, size = args
    try:
        PILImage.MAX_IMAGE_PIXELS = MAX_PIXELS
        im: PILImage.Image
        with PILImage.open(path) as im:
            if im.size[0] * im.size[1] > MAX_PIXELS:
                raise ValueError(f"{im.size[0]}x{im.size[1]} pixels, more than {MAX_PIXELS:,}")
            if im.mode.startswith("I;16"):  # 16-bit grey: rescaled to 8 bits (convert() would clip at 255)
                a = np.asarray(im).astype(np.float64) / 257
                im = PILImage.fromarray(np.round(a).astype(np.uint8))
            elif im.mode in ("I", "F"):
                raise ValueError(
                    f"a {'32-bit integer' if im.mode == 'I' else 'floating-point'} image (mode {im.mode}); "
                    "save it as 8 or 16 bits"
                )
            im = im.convert("RGB")
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), PILImage.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8), ""
    except (OSError, UnidentifiedImageError, ValueError, PILImage.DecompressionBombError) as e:
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else 'unreadable'}"


def _size_of(path: str) -> tuple[tuple[int, int] | None, str]:
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
    try:
        PILImage.MAX_IMAGE_PIXELS = MAX_PIXELS
        with PILImage.open(path) as im:
            if im.size[0] * im.size[1] > MAX_PIXELS:
                raise ValueError(f"{im.size[0]}x{im.size[1]} pixels, more than {MAX_PIXELS:,}")
            return (im.size[1], im.size[0]), ""
    except (OSError, UnidentifiedImageError, ValueError, PILImage.DecompressionBombError) as e:
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else 'unreadable'}"


def _pool_map(fn, items: list, desc: str, progress: bool) -> list:
    workers = min(
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8
    )
    bar = tqdm(total=len(items), desc=desc, unit="img", disable=None if progress else True, leave=False)
    out = []
    if workers <= 1 or len(items) < 2000:
        for item in items:
            out.append(fn(item))
            bar.update()
    else:
        with ProcessPoolExecutor(workers) as pool:
            for result in pool.map(fn, items, chunksize=256):
                out.append(result)
                bar.update()
    bar.close()
    return out


def _memory() -> int:
    """This machine's physical memory in bytes (a large number where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 50


def parse_size(text: str | int | None) -> tuple[int, int] | None:
    """--image-size 32 or 48x64 (height x width) -> (H, W)."""
    if text is None:
        return None
    h, sep, w = str(text).lower().partition("x")
    try:
        size = (int(h), int(w) if sep else int(h))
    except ValueError:
        size = (0, 0)
    if not (4 <= size[0] <= 1024 and 4 <= size[1] <= 1024):
        raise UserError(f"--image-size {text} (allowed: N or HxW, 4 to 1024 pixels)")
    return size


def files_key(files: list[Path], root: Path, size: tuple[int, int] | None) -> str:
    """sha256 over every image file's bytes and name, the size asked and the cache format."""
    h = hashlib.sha256(f"v{CACHE_VERSION};{size}".encode())
    for f in files:
        try:
            h.update(str(f.relative_to(root)).encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
        except OSError as e:
            raise UserError(
                f"image {f} cannot be read ({e.strerror or e}; allowed: a readable PNG or JPEG file)"
            ) from None
    return h.hexdigest()[:20]


def read_images(
    files: list[Path],
    root: Path,
    size: tuple[int, int] | None,
    cache: Path | None,
    progress: bool = True,
    held: int = 0,
) -> tuple[np.ndarray, str]:
    """(N, C, H, W) uint8 images (C = 1 when every image is grey) and the cache key; decoded once into
    `cache`. `held`: bytes of images already loaded (the example's other image columns)."""
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise UserError(
            f"image {missing[0]} does not exist ({len(missing)} missing; allowed: every file_name a file)"
        )
    key = files_key(files, root, size)
    path = cache / f"{key}.npy" if cache is not None else None
    if path is not None and path.is_file():
        try:
            return np.load(path, allow_pickle=False), key
        except (OSError, ValueError):
            pass  # a cut-short cache file: decode again
    names = [str(f) for f in files]
    first, why = _size_of(names[0]) if size is None else (size, "")
    if first is None:
        raise UserError(f"image {files[0]} cannot be read ({why}; allowed: a PNG or JPEG file)")
    h, w = first
    need, have = 2 * len(names) * 3 * h * w, _memory() - held  # the decoded list and the stacked array
    if need > have // 2:
        raise UserError(
            f"{len(names):,} images of {h}x{w} need about {need / 1e9:.1f} GB to load and this machine has "
            f"{have / 1e9:.1f} GB (allowed: a smaller --image-size, or fewer images)"
        )
    decoded = _pool_map(_decode, [(n, size) for n in names], "decoding images", progress)
    for (img, why), f in zip(decoded, files):
        if img is None:
            raise UserError(f"image {f} cannot be read ({why}; allowed: a PNG or JPEG file)")
    shapes = [img.shape[:2] for img, _ in decoded]
    distinct = sorted(set(shapes))
    if len(distinct) > 1:  # only without --image-size: every image keeps its own size
        a, b = (files[shapes.index(d)] for d in distinct[:2])
        raise UserError(
            f"images of different sizes ({a.name} is {distinct[0][0]}x{distinct[0][1]}, {b.name} is "
            f"{distinct[1][0]}x{distinct[1][1]}; allowed: one size, or --image-size N to resize all)"
        )
    images = np.stack([img for img, _ in decoded])  # (N, H, W, 3)
    grey = bool((images[..., 0] == images[..., 1]).all() and (images[..., 1] == images[..., 2]).all())
    images = images[..., :1] if grey else images
    images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))  # channel-first
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: np.save(open(tmp, "wb"), images))
    return images, key


# -- from arrays (an .npz, Python) ------------------------------------------------------------------------
def image_array(images: Any, what: str) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) (or (N, C, H, W) with C in 1, 3) uint8 or floats in [0, 1] -> (N, C, H, W)
    uint8."""
    a = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4 and a.shape[-1] in (1, 3) and a.shape[1] not in (1, 3):
        a = a.transpose(0, 3, 1, 2)
    if a.ndim != 4 or a.shape[1] not in (1, 3) or len(a) == 0:
        raise UserError(
            f"{what}: images of shape {a.shape} (allowed: (N, H, W), (N, H, W, C) or (N, C, H, W), C 1 or 3)"
        )
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise UserError(f"{what}: images of dtype {a.dtype} (allowed: uint8, or floats in [0, 1])")
        a = np.round(a * 255).astype(np.uint8)
    return np.ascontiguousarray(a)


def resize(images: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or images.shape[2:] == size:
        return images
    from PIL import Image as PILImage

    out = np.empty((len(images), images.shape[1], *size), dtype=np.uint8)
    for i, img in enumerate(images):
        for c in range(images.shape[1]):
            out[i, c] = np.asarray(
                PILImage.fromarray(img[c]).resize((size[1], size[0]), PILImage.Resampling.BILINEAR)
            )
    return out


def column_values(values: Any) -> list[Any]:
    a = values.numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if a.ndim != 1:
        raise ValueError(f"shape {a.shape}")
    if a.dtype.kind == "f":
        return [None if math.isnan(v) else float(v) for v in a.tolist()]
    if a.dtype.kind == "b":
        return ["true" if v else "false" for v in a.tolist()]
    return [None if v is None else v for v in a.tolist()]


# -- the dataset ------------------------------------------------------------------------------------------
def assemble(
    name: str,
    images: dict[str, np.ndarray],
    columns: dict[str, list[Any]],
    where: list[str],
    splits: list[str],
    kinds: dict[str, str],
    test_fraction: float,
    seed: int,
    source: str,
) -> AttributeDataset:
    """The dataset of decoded images ((N, C, H, W) uint8 per image modality) and raw attribute columns:
    kinds inferred on the training rows."""
    n = len(next(iter(images.values())))
    for col, values in columns.items():
        if col in RESERVED or not col.strip() or any(c in col for c in "=,"):
            raise UserError(
                f"column {col!r}: not a usable attribute name (allowed: names without '=' or ',', other "
                f"than {', '.join(RESERVED)}; rename the column)"
            )
        odd = next((v for v in values if not (v is None or isinstance(v, (str, int, float, bool)))), None)
        if odd is not None:
            raise UserError(
                f"column {col}: a {type(odd).__name__} value {str(odd)[:40]!r} (allowed: text, numbers, "
                "true/false, or empty)"
            )
    unknown = sorted(set(kinds) - set(columns))
    if unknown:
        raise UserError(f"--attribute {unknown[0]}=... names no column (allowed: {', '.join(columns)})")
    names: list[str] = []
    for image_name in images:
        if image_name in RESERVED or not image_name.strip() or any(c in image_name for c in UNSAFE):
            raise UserError(
                f"image {image_name!r}: not a usable image name (allowed: names without any of {UNSAFE} "
                f"(they name files), other than {', '.join(RESERVED)})"
            )
        while image_name in columns or image_name in names:  # a column named like an image
            image_name += "_"
        names.append(image_name)
    images = dict(zip(names, images.values()))
    split = np.array(splits or [""] * n)
    if (split == "").all():
        order = np.random.default_rng(seed).permutation(n)
        n_test = int(round(test_fraction * n))
        split = np.full(n, "train", dtype=object)
        split[order[:n_test]] = "test"
    elif (split == "").any():
        raise UserError(
            f"--data {source}: some rows are in train/ or test/ and some are not (allowed: all or none)"
        )
    train_idx, test_idx = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    if len(train_idx) < 2 or len(test_idx) < 1:
        raise UserError(
            f"--data {source}: {len(train_idx)} training and {len(test_idx)} test images (allowed: at least "
            "2 and 1; a larger --test-fraction or more images)"
        )
    attrs: list[Attribute] = []
    for col, values in columns.items():
        train_vals = [values[i] for i in train_idx if not _blank(values[i])]
        train_where = [where[i] for i in train_idx if not _blank(values[i])]
        kind = (kinds.get(col) or infer_kind(col, train_vals)) if train_vals else "categorical"
        attr = build_attribute(col, kind, train_vals, train_where)
        stored = encode(attr, train_vals, train_where)
        distinct = (
            len(set(stored.tolist())) if isinstance(attr, Continuous) else len(set(stored.tolist()) - {-1})
        )
        if distinct < 2:
            raise UserError(
                f"column {col} has {'no value' if not distinct else 'a single value'} in the training rows "
                f"(allowed: attributes with at least two values; drop the column)"
            )
        attrs.append(attr)
    modalities, flat = [], {}
    for image_name, array in images.items():
        if min(array.shape[2:]) < 4:
            raise UserError(
                f"{source}: images{'' if len(images) == 1 else ' ' + image_name} of {array.shape[2]}x"
                f"{array.shape[3]} pixels (allowed: at least 4x4; --image-size N resizes)"
            )
        modalities.append(Image(image_name, (array.shape[2], array.shape[3]), array.shape[1]))
        flat[image_name] = torch.from_numpy(array.reshape(n, -1))

    def rows(idx: np.ndarray) -> dict[str, torch.Tensor]:
        out = {k: v[torch.from_numpy(idx)] for k, v in flat.items()}
        for a in attrs:
            out[a.name] = encode(a, [columns[a.name][i] for i in idx], [where[i] for i in idx])
        return out

    return AttributeDataset(
        name,
        modalities,
        attrs,
        rows(train_idx),
        rows(test_idx),
        source,
        mnist="none",
        default_epochs=0,
        options=None,
    )


def default_steps(n_train: int, batch_size: int) -> int:
    """PASSES passes, within [MIN_STEPS, MAX_STEPS]: small sets train long enough, large ones finish."""
    return int(min(MAX_STEPS, max(MIN_STEPS, PASSES * n_train // batch_size)))


def parse_kinds(items: Sequence[str]) -> dict[str, str]:
    """--attribute NAME=KIND, or NAME=categorical:A,B,C for the classes in that order (else sorted)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, kind = item.partition("=")
        base, colon, listed = kind.strip().partition(":")
        if (
            not sep
            or base not in ATTRIBUTE_KINDS
            or not name.strip()
            or (colon and (base != "categorical" or not all(c.strip() for c in listed.split(","))))
        ):
            raise UserError(
                f"--attribute {item} (allowed: NAME={'|'.join(ATTRIBUTE_KINDS)}, or "
                "NAME=categorical:A,B,C for the classes in that order)"
            )
        out[name.strip()] = base + (":" + ",".join(c.strip() for c in listed.split(",")) if colon else "")
    return out


def attribute_flag(a: Attribute) -> str:
    """NAME=KIND as --attribute takes it, with the classes listed where their order is not the sorted one."""
    ordered = a.kind == "categorical" and list(a.classes) != sorted(a.classes, key=_sort_key)
    if ordered and not any("," in c for c in a.classes):
        return f"{a.name}=categorical:{','.join(a.classes)}"
    return f"{a.name}={a.kind}"


def load_folder(
    root: Path,
    image_size: tuple[int, int] | None,
    kinds: dict[str, str],
    test_fraction: float,
    seed: int,
    cache: Path | None,
    progress: bool = True,
) -> AttributeDataset:
    table = read_table(root)
    images: dict[str, np.ndarray] = {}
    keys: dict[str, str] = {}
    for m, files in table.files.items():
        held = sum(a.nbytes for a in images.values())
        images[m], keys[m] = read_images(files, root, image_size, cache, progress, held)
    if len({a.shape[0] for a in images.values()}) > 1:
        raise UserError(f"--data {root}: image columns of different lengths (allowed: one image each)")
    data = assemble(
        root.name, images, table.columns, table.where, table.splits, kinds, test_fraction, seed, str(root)
    )
    data.options = {"files": keys["x"] if len(keys) == 1 else keys}
    return data


def load_npz(
    path: Path, image_size: tuple[int, int] | None, kinds: dict[str, str], test_fraction: float, seed: int
) -> AttributeDataset:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError) as e:
        raise UserError(
            f"--data {path} cannot be read ({type(e).__name__}; allowed: an .npz of arrays, no pickles)"
        ) from None
    return from_arrays(
        arrays,
        name=path.stem,
        kinds=kinds,
        image_size=image_size,
        test_fraction=test_fraction,
        seed=seed,
        source=str(path),
    )


def from_arrays(
    arrays: dict[str, Any],
    name: str = "data",
    kinds: dict[str, str] | None = None,
    image_size: tuple[int, int] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    source: str = "arrays",
    split: Sequence[str] | None = None,
) -> AttributeDataset:
    """A dataset from image arrays (ndim >= 3, one per image modality, named by their keys) and one 1-D array
    per attribute (NaN or None: not observed). `split`, if given, says "train" or "test" for each row."""
    arrays = dict(arrays)
    if "split" in arrays and split is None:
        split = [str(s) for s in np.asarray(arrays.pop("split")).tolist()]
    image_keys = [k for k, v in arrays.items() if np.ndim(v) >= 3]
    if not image_keys:
        raise UserError(
            f"{source}: no image array (allowed: one or more arrays of images (N, H, W[, C]) beside 1-D "
            "attribute arrays)"
        )
    every = {k: resize(image_array(arrays.pop(k), f"{source}: {k}"), image_size) for k in image_keys}
    lengths = {k: len(v) for k, v in every.items()}
    if len(set(lengths.values())) > 1:
        raise UserError(
            f"{source}: image arrays of different lengths "
            f"({', '.join(f'{k} {n}' for k, n in lengths.items())}; allowed: one image of each per example)"
        )
    n = len(next(iter(every.values())))
    columns: dict[str, list[Any]] = {}
    for k, v in arrays.items():
        try:
            columns[k] = column_values(v)
        except ValueError as e:
            raise UserError(f"{source}: attribute {k} of {e} (allowed: one value per image, 1-D)") from None
        if len(columns[k]) != n:
            raise UserError(
                f"{source}: attribute {k} has {len(columns[k])} values for {n} images "
                "(allowed: one per image)"
            )
    if not columns:
        raise UserError(
            f"{source}: no attribute arrays (allowed: the images and at least one 1-D attribute array)"
        )
    if split is not None and (len(split) != n or not set(split) <= {"train", "test"}):
        bad = next((w for w in split if w not in ("train", "test")), f"{len(split)} values")
        raise UserError(f"{source}: split {bad!r} (allowed: 'train' or 'test' for every image)")
    where = [f"row {i}" for i in range(n)]
    return assemble(
        name,
        every,
        columns,
        where,
        list(split) if split is not None else [],
        kinds or {},
        test_fraction,
        seed,
        source,
    )


def from_hf(dataset: Any, image_column: str | Sequence[str] = "image", **kwargs) -> AttributeDataset:
    """A Hugging Face `datasets.Dataset` (one or more Image features and attribute columns) as a jmvae
    dataset."""
    wanted = [image_column] if isinstance(image_column, str) else list(image_column)
    arrays: dict[str, Any] = {}
    for column in wanted:
        if column not in dataset.column_names:
            raise UserError(f"no column {column} (allowed: {', '.join(dataset.column_names)})")
        arrays[column] = _hf_images(dataset[column], kwargs.get("image_size"))
    arrays |= {
        c: [None if v is None else v for v in dataset[c]] for c in dataset.column_names if c not in wanted
    }
    return from_arrays(arrays, **{k: v for k, v in kwargs.items() if k != "image_size"})


def _hf_images(column: Any, size: tuple[int, int] | None) -> np.ndarray:
    """PIL images -> (N, H, W, 3) uint8, or (N, H, W) when all are grey; resized to `size` if given."""
    pictures = [np.asarray(im.convert("RGB")) for im in column]
    if len({p.shape for p in pictures}) > 1 and size is None:
        raise UserError("images of different sizes (allowed: one size, or image_size=(H, W))")
    if size is not None:
        from PIL import Image as PILImage

        h, w = size
        pictures = [
            np.asarray(PILImage.fromarray(p).resize((w, h), PILImage.Resampling.BILINEAR)) for p in pictures
        ]
    images = np.stack(pictures)
    if (images[..., 0] == images[..., 1]).all() and (images[..., 1] == images[..., 2]).all():
        images = images[..., 0]
    return images


def save_dataset(data: AttributeDataset, path: Path) -> None:
    """The dataset exactly as stored (schema and splits) in one .npz: what a run built from Python arrays
    keeps."""
    schema = {
        "name": data.name,
        "source": data.source,
        "images": [
            {"name": m.name, "shape": list(m.shape), "channels": m.channels, "likelihood": m.likelihood}
            for m in data.images
        ],
        "attributes": [_schema(a) for a in data.attributes],
    }
    arrays = {
        f"{part}/{k}": v.numpy()
        for part, split in (("train", data.train), ("test", data.test))
        for k, v in split.items()
    }
    # (mypy checks **arrays against savez's allow_pickle: bool too)
    atomic_write(path, lambda tmp: np.savez(open(tmp, "wb"), schema=np.array(json.dumps(schema)), **arrays))  # type: ignore[arg-type]


def _schema(a: Attribute) -> dict:
    if isinstance(a, Continuous):
        return {
            "name": a.name,
            "kind": "continuous",
            "mean": a.mean,
            "std": a.std,
            "quantiles": list(a.quantiles),
            "low": a.low,
            "high": a.high,
        }
    return {"name": a.name, "kind": a.kind, "values": list(a.classes)}


def load_saved(path: Path) -> AttributeDataset | None:
    """A dataset `save_dataset` wrote, or None when `path` is another .npz."""
    from ..modalities import attribute_from_json

    try:
        with np.load(path, allow_pickle=False) as f:
            if "schema" not in f.files:
                return None
            schema = json.loads(str(f["schema"]))
            arrays = {k: torch.from_numpy(f[k]) for k in f.files if k != "schema"}
    except (OSError, ValueError, EOFError, KeyError, json.JSONDecodeError) as e:
        raise UserError(
            f"--data {path} cannot be read ({type(e).__name__}; allowed: an .npz of arrays)"
        ) from None
    images = [
        Image(im["name"], tuple(im["shape"]), im["channels"], im["likelihood"])
        for im in schema.get("images") or [schema["image"]]  # "image": saved before several images
    ]
    attrs = [attribute_from_json(a) for a in schema["attributes"]]
    split = {
        part: {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(part + "/")}
        for part in ("train", "test")
    }
    return AttributeDataset(
        schema["name"],
        images,
        attrs,
        split["train"],
        split["test"],
        schema["source"],
        mnist="none",
        default_epochs=0,
    )


def load(
    path: Path,
    image_size: tuple[int, int] | None,
    kinds: dict[str, str],
    test_fraction: float,
    seed: int,
    progress: bool = True,
) -> AttributeDataset:
    """--data PATH: a folder in the ImageFolder layout, an .npz of arrays, or a dataset `save_dataset`
    wrote."""
    from .mnist import cache_dir

    path = path.expanduser()
    if path.suffix.lower() == ".npz":
        if not path.is_file():
            raise UserError(f"--data {path} does not exist (allowed: a folder or an .npz)")
        saved = load_saved(path)
        data = saved if saved is not None else load_npz(path, image_size, kinds, test_fraction, seed)
    elif path.is_file():
        raise UserError(
            f"--data {path} is a file (allowed: the folder that holds the images and metadata, or an .npz)"
        )
    else:
        data = load_folder(path, image_size, kinds, test_fraction, seed, cache_dir() / "folders", progress)
    return data


def export(data: AttributeDataset, out: Path, progress: bool = True) -> Path:
    """Write a dataset in the ImageFolder layout: train/ and test/, each with its PNGs and a metadata.csv
    (attributes as the user reads them, an empty cell where not observed). Written beside `out` and renamed
    into place, so a stopped export leaves nothing that looks finished."""
    import shutil
    import tempfile

    from PIL import Image as PILImage

    out = Path(out)
    later = [m.name for m in data.images[1:] if m.name == "x"]
    if later:
        raise UserError(
            "image x is not the first image: its column would be x_file_name, which loads as file_name's "
            "image (allowed: name the first image x, or the others anything else)"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not empty (allowed: a new or empty folder)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for part, split in (("train", data.train), ("test", data.test)):
            (tmp / part).mkdir()
            n = len(split[data.images[0].name])
            pictures = {m.name: m.pixels(split[m.name]).numpy() for m in data.images}
            rows = []
            for i in tqdm(
                range(n), desc=f"writing {part}", unit="img", disable=None if progress else True, leave=False
            ):
                row = {}
                for j, (m, images) in enumerate(pictures.items()):  # the first is file_name, as it loads
                    name = f"{i:06d}.png" if j == 0 else f"{i:06d}_{m}.png"
                    PILImage.fromarray(images[i]).save(tmp / part / name)
                    row["file_name" if j == 0 else m + FILE_SUFFIX] = name
                for a in data.attributes:
                    v = split[a.name][i]
                    row[a.name] = (
                        ""
                        if not bool(a.observed(v))
                        else (
                            repr(float(a.unstandardise(v.double())))
                            if isinstance(a, Continuous)
                            else a.classes[int(v)]
                        )
                    )
                rows.append(row)
            with open(tmp / part / "metadata.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
