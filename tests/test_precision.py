"""Training in bfloat16: the networks' products in the low precision, everything else float32."""

import csv
import json

import pytest
import torch

from jmvae import config
from jmvae.config import TrainConfig
from jmvae.data.attributes import to_batch
from jmvae.models import build_model
from jmvae.networks import ConvDecoder, ConvTrunk, low_precision
from jmvae.train import train

BF16 = torch.bfloat16


def tiny_model(founding_data, seed=0):
    torch.manual_seed(seed)
    return build_model("jmvae", founding_data.modalities, hidden=64)


def test_networks_multiply_in_bfloat16_and_return_float32(founding_data):
    model = tiny_model(founding_data)
    batch = to_batch(founding_data.test, torch.arange(32))
    z = torch.randn(32, 2)
    exact = model.logits(z)
    q_exact = model.posterior(batch)
    with low_precision(BF16):
        low = model.logits(z)
        q_low = model.posterior(batch)
    for name in exact:
        assert low[name].dtype == torch.float32
        assert not torch.equal(low[name], exact[name])  # the products really ran in bfloat16
        assert torch.allclose(low[name], exact[name], rtol=0.05, atol=0.05)
    assert q_low.loc.dtype == q_low.scale.dtype == torch.float32
    assert torch.allclose(q_low.loc, q_exact.loc, rtol=0.05, atol=0.02)
    # outside the context, float32 again: the same numbers as before
    assert all(torch.equal(model.logits(z)[n], exact[n]) for n in exact)


def test_conv_networks_return_float32_in_bfloat16():
    x = torch.rand(4, 64 * 64)
    trunk, dec = ConvTrunk((64, 64), 32), ConvDecoder(3, (64, 64), 32)
    with low_precision(BF16):
        h, logits = trunk(x), dec(torch.randn(4, 3))
    assert h.dtype == logits.dtype == torch.float32 and logits.shape == (4, 64 * 64)
    assert torch.allclose(h, trunk(x), rtol=0.05, atol=0.02)


def test_bfloat16_gradient_points_where_the_float32_one_does(founding_data):
    model = tiny_model(founding_data)
    batch = to_batch(founding_data.test, torch.arange(128))

    def gradient(dtype):
        model.zero_grad()
        torch.manual_seed(1)
        with low_precision(dtype):
            loss, _ = model.loss(batch)
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    (l32, g32), (l16, g16) = gradient(None), gradient(BF16)
    assert abs(float(l16 - l32)) < 0.01 * abs(float(l32))
    assert torch.nn.functional.cosine_similarity(g32, g16, dim=0) > 0.99


def test_auto_precision_follows_the_cpu_and_old_runs_read_as_float32(monkeypatch):
    monkeypatch.setattr(config, "native_bfloat16", lambda: True)
    assert TrainConfig(precision="auto", device="cpu").resolved().precision == "bfloat16"
    assert TrainConfig(precision="auto", device="cpu").precision_dtype() is BF16
    monkeypatch.setattr(config, "native_bfloat16", lambda: False)
    assert TrainConfig(precision="auto", device="cpu").resolved().precision == "float32"
    assert TrainConfig(precision="auto", device="cpu").precision_dtype() is None
    assert TrainConfig(precision="bfloat16").resolved().precision == "bfloat16"
    recorded = {k: v for k, v in TrainConfig().__dict__.items() if k not in ("precision", "lr_schedule")}
    old = TrainConfig.from_json(recorded)  # a run recorded before these settings existed
    assert old.precision == "float32" and old.lr_schedule == "constant"


def test_resume_accepts_precision_auto_where_it_chooses_what_the_run_recorded(monkeypatch):
    from jmvae.train import differing_flags

    recorded = TrainConfig(precision="bfloat16", device="cpu")
    monkeypatch.setattr(config, "native_bfloat16", lambda: True)
    assert differing_flags({"precision": "auto"}, recorded) == []
    assert differing_flags({"precision": "bfloat16"}, recorded) == []
    assert differing_flags({"precision": "float32"}, recorded) == [
        "--precision float32 (the run has bfloat16)"
    ]
    monkeypatch.setattr(config, "native_bfloat16", lambda: False)
    assert differing_flags({"precision": "auto"}, recorded) == ["--precision auto (the run has bfloat16)"]


@pytest.mark.slow
def test_a_bfloat16_run_learns_records_its_precision_and_trains_what_float32_does_not(tmp_path):
    """(Its resume is exact: tests/test_train.py kills and resumes one.)"""
    cfg = TrainConfig(epochs=4, hidden=32, batch_size=256, seed=3, precision="bfloat16")
    train(cfg, tmp_path / "bf16", log=lambda *a: None)
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["train"]["precision"] == "bfloat16"
    rows = list(csv.DictReader(open(tmp_path / "bf16" / "history.csv")))
    assert float(rows[-1]["test_loss"]) < float(rows[0]["test_loss"])
    train(
        TrainConfig(epochs=4, hidden=32, batch_size=256, seed=3, precision="float32"),
        tmp_path / "f32",
        log=lambda *a: None,
    )
    low, full = (torch.load(tmp_path / r / "model.pt", weights_only=True) for r in ("bf16", "f32"))
    assert not all(torch.equal(low[k], full[k]) for k in low)  # bfloat16 really trained differently
    assert all(torch.allclose(low[k], full[k], atol=0.05) for k in low)  # and to about the same weights
