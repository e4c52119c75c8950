"""MNIST loading: IDX parsing, the source order of load_mnist, and downloads from a loopback server only."""

import functools
import gzip
import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from jmvae.data import mnist
from jmvae.errors import UserError


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def fake_mnist(rng=None, n_train=12, n_test=5):
    rng = rng or np.random.default_rng(0)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_mnist(directory: Path, arrays: dict, gz: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        data = idx_bytes(array)
        name = mnist.FILES[key] + (".gz" if gz else "")
        (directory / name).write_bytes(gzip.compress(data) if gz else data)
    return directory


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server over tmp_path/www; yields (root dir, base URL, shutdown)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()

    def shutdown():
        httpd.shutdown()
        httpd.server_close()
        thread.join()

    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/", shutdown
    if thread.is_alive():
        shutdown()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JMVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("JMVAE_MIRRORS", closed_port_url())
    monkeypatch.setenv("JMVAE_OFFLINE", "0")
    return tmp_path / "cache" / "mnist"


def assert_same(data: mnist.MnistData, arrays: dict):
    np.testing.assert_array_equal(data.images, arrays["train_images"])
    np.testing.assert_array_equal(data.labels, arrays["train_labels"])
    np.testing.assert_array_equal(data.test_images, arrays["test_images"])
    np.testing.assert_array_equal(data.test_labels, arrays["test_labels"])
    assert data.images.dtype == np.uint8 and data.labels.dtype == np.int64


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trips(tmp_path, gz):
    arrays = fake_mnist()
    write_mnist(tmp_path, arrays, gz=gz)
    for key, name in mnist.FILES.items():
        got = mnist.read_idx(tmp_path / (name + (".gz" if gz else "")))
        assert got.dtype == np.uint8 and got.shape == arrays[key].shape
        np.testing.assert_array_equal(got, arrays[key])


def test_read_idx_detects_gzip_by_content_not_name(tmp_path):
    images = fake_mnist()["train_images"]
    (tmp_path / "plain.gz").write_bytes(idx_bytes(images))
    (tmp_path / "packed").write_bytes(gzip.compress(idx_bytes(images)))
    np.testing.assert_array_equal(mnist.read_idx(tmp_path / "plain.gz"), images)
    np.testing.assert_array_equal(mnist.read_idx(tmp_path / "packed"), images)


def test_read_idx_rejects_truncated_and_bad_magic(tmp_path):
    data = idx_bytes(fake_mnist()["train_images"])
    packed = gzip.compress(data)
    cases = {
        "cut.gz": (packed[: len(packed) // 2], "gzip"),
        "short": (data[:-100], "truncated"),
        "long": (data + b"xx", "trailing"),
        "magic": (b"\x01\x02" + data[2:], "magic"),
        "float": (data[:2] + b"\x0d" + data[3:], "magic"),
        "empty": (b"", "magic"),
    }
    for name, (content, why) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError, match=why) as err:
            mnist.read_idx(tmp_path / name)
        assert str(tmp_path / name) in str(err.value)
    with pytest.raises(UserError, match="expected 9408 bytes of data, found 9308"):
        mnist.read_idx(tmp_path / "short")


def test_load_mnist_from_dir(tmp_path, cache):
    arrays = fake_mnist()
    directory = write_mnist(tmp_path / "mnist", arrays, gz=False)
    data = mnist.load_mnist(mnist_dir=directory)
    assert_same(data, arrays)
    assert str(directory) in data.source
    assert not cache.exists()  # an explicit dir never touches the cache or the network


def test_mnist_dir_errors(tmp_path, cache):
    with pytest.raises(UserError, match="does not exist") as err:
        mnist.load_mnist(mnist_dir=tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value)
    arrays = fake_mnist()
    del arrays["test_labels"]
    write_mnist(tmp_path / "partial", arrays)
    with pytest.raises(UserError, match=r"no MNIST IDX files .*t10k-labels-idx1-ubyte\[\.gz\]"):
        mnist.load_mnist(mnist_dir=tmp_path / "partial")


def test_mismatched_counts_and_corrupt_file_are_errors(tmp_path, cache):
    arrays = fake_mnist()
    arrays["test_labels"] = arrays["test_labels"][:4]
    with pytest.raises(UserError, match="do not match"):
        mnist.load_idx_dir(write_mnist(tmp_path / "a", arrays))
    # A corrupt cached file is reported, not silently replaced by the subset.
    write_mnist(cache, fake_mnist())
    (cache / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(UserError, match="train-images-idx3-ubyte.gz"):
        mnist.load_mnist()


@pytest.fixture(autouse=True)
def fake_checksums(monkeypatch):
    """The loopback mirrors serve fake MNIST: no published checksum applies (one test sets its own)."""
    monkeypatch.setattr(mnist, "CHECKSUMS", {})


def test_download_refuses_a_valid_file_with_the_wrong_checksum(server, cache, monkeypatch):
    root, url, _ = server
    write_mnist(root, fake_mnist())
    monkeypatch.setattr(mnist, "CHECKSUMS", {"train-images-idx3-ubyte.gz": "0" * 32})
    with pytest.raises(mnist.DownloadError, match="md5 .* is not MNIST's 0000"):
        mnist.download(cache, mirrors=[url], timeout=5)
    assert not (cache / "train-images-idx3-ubyte.gz").exists()


def test_images_of_another_size_are_refused(tmp_path):
    arrays = fake_mnist()
    arrays["train_images"] = np.zeros((12, 32, 32), np.uint8)
    with pytest.raises(UserError, match=r"train images \(12, 32, 32\).*allowed: \(N, 28, 28\)"):
        mnist.load_idx_dir(write_mnist(tmp_path / "a", arrays))


def test_download_then_cache(server, cache, monkeypatch, capsys):
    root, url, shutdown = server
    arrays = fake_mnist()
    write_mnist(root, arrays)
    monkeypatch.setenv("JMVAE_MIRRORS", f"{url}")
    data = mnist.load_mnist()
    assert_same(data, arrays)
    assert data.source.startswith(f"download from {url}") and str(cache) in data.source
    assert sorted(p.name for p in cache.iterdir()) == sorted(n + ".gz" for n in mnist.FILES.values())
    shutdown()
    again = mnist.load_mnist()
    assert_same(again, arrays)
    assert again.source == f"cache {cache}"
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("first", ["dead", "corrupt"])
def test_download_falls_through_to_next_mirror(server, cache, first):
    root, url, _ = server
    arrays = fake_mnist()
    write_mnist(root / "good", arrays)
    bad = closed_port_url()
    if first == "corrupt":
        for path in write_mnist(root / "bad", arrays).iterdir():
            path.write_bytes(path.read_bytes()[:-30])
        bad = url + "bad/"
    used = mnist.download(cache, mirrors=[bad, url + "good/"], timeout=5)
    assert used == [url + "good/"]
    assert_same(mnist.load_idx_dir(cache), arrays)
    assert not list(cache.glob("*.part"))


def test_download_rejects_corrupt_everywhere(server, cache):
    root, url, _ = server
    for path in write_mnist(root, fake_mnist()).iterdir():
        path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(mnist.DownloadError, match="train-images-idx3-ubyte.gz"):
        mnist.download(cache, mirrors=[url], timeout=5)
    assert list(cache.iterdir()) == []  # nothing half-written left behind


def check_subset(data: mnist.MnistData):
    assert data.images.shape == (5000, 28, 28) and data.images.dtype == np.uint8
    assert data.labels.shape == (5000,) and data.labels.dtype == np.int64
    assert np.bincount(data.labels, minlength=10).tolist() == [500] * 10
    assert data.images.max() == 255 and data.test_images is None and data.test_labels is None
    assert "5,000" in data.source


def test_offline_uses_bundled_subset(cache, monkeypatch, capsys):
    monkeypatch.setenv("JMVAE_OFFLINE", "1")
    check_subset(mnist.load_mnist())
    err = capsys.readouterr().err
    assert "jmvae: warning: full MNIST not found" in err and str(cache) in err and "JMVAE_OFFLINE" in err


def test_failed_download_falls_back_with_reason(cache, capsys):
    dead = closed_port_url()
    check_subset(mnist.load_mnist(mirrors=[dead]))
    err = capsys.readouterr().err
    assert "download failed" in err and dead in err and "bundled 5,000 digits" in err
    assert not list(cache.glob("*"))
