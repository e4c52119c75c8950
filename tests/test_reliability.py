"""Runs that never lose work and never misreport: bad input changes nothing, kills lose at most an epoch,
data is pinned, non-finite losses stop the run, every file lands whole."""

import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from jmvae import figures
from jmvae.cli import main
from jmvae.config import TrainConfig
from jmvae.data.attributes import load_dataset
from jmvae.data.mnist import FILES
from jmvae.errors import UserError
from jmvae.models.jmvae import JMVAE
from jmvae.pipeline import read_history
from jmvae.train import load_run, longer, train

TINY = [
    "--mnist",
    "bundled",
    "--steps",
    "24",
    "--hidden",
    "32",
    "--k",
    "20",
    "--n-per-query",
    "5",
    "--coherence-draws",
    "200",
]
QUIET = dict(log=lambda *a: None)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root with the sha256 of its bytes: what "nothing changed" means."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def write_digits(directory: Path, seed: int = 0, n_train: int = 300, n_test: int = 60) -> Path:
    """Fake full MNIST (random 28x28 pixels, labels 1 and 2 only) as gzipped IDX files."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28)),
        "train_labels": rng.integers(1, 3, n_train),
        "test_images": rng.integers(0, 256, (n_test, 28, 28)),
        "test_labels": rng.integers(1, 3, n_test),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        array = np.asarray(array, np.uint8)
        header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
        (directory / f"{FILES[key]}.gz").write_bytes(gzip.compress(header + array.tobytes()))
    return directory


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A finished tiny run and, beside it, the broken or foreign things a user may point the CLI at."""
    root = tmp_path_factory.mktemp("world")
    run = root / "run"
    assert main(["train", "--out", str(run), *TINY]) == 0
    (root / "notarun").mkdir()
    (root / "notarun" / "model.pt").write_text("the user's own file\n")
    (root / "notarun" / "notes.txt").write_text("keep me\n")
    (root / "foreign").mkdir()
    (root / "foreign" / "config.json").write_text('{"name": "another tool"}\n')
    (root / "afile").write_text("a file, not a directory\n")
    (root / "adir.png").mkdir()
    (root / "adir.csv").mkdir()
    for name, broken in {
        "badconfig": "config.json",
        "badmodel": "model.pt",
        "badmetrics": "metrics.json",
    }.items():
        shutil.copytree(run, root / name)
        path = root / name / broken
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    shutil.copytree(run, root / "foreignmodel")
    torch.save({"weight": torch.zeros(3)}, root / "foreignmodel" / "model.pt")
    shutil.copytree(run, root / "badckpt")
    (root / "badckpt" / "metrics.json").unlink()
    (root / "badckpt" / "model.pt").unlink()
    (root / "badckpt" / "checkpoint.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    shutil.copytree(run, root / "otherpreset")
    config = json.loads((root / "otherpreset" / "config.json").read_text())
    config["train"]["preset"] = "mnist-label"
    (root / "otherpreset" / "config.json").write_text(json.dumps(config))
    big = write_digits(root / "bigdigits")
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, (300, 32, 32)).astype(np.uint8)
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    (big / f"{FILES['train_images']}.gz").write_bytes(gzip.compress(header + array.tobytes()))
    hold_all = [f"--hold-out=position={p},digit={d}" for p in ("left", "right") for d in (1, 2)]
    for name, edit in {
        "bighidden": {"hidden": 100_000_000},
        "mmvaeconfig": {"model": "mmvae"},
        "unknownkey": {"colour": "red"},
    }.items():
        shutil.copytree(run, root / name)
        config = json.loads((root / name / "config.json").read_text())
        config["train"].update(edit)
        (root / name / "config.json").write_text(json.dumps(config))
    return root, hold_all


BAD = [  # (argv with {root} for the world's directory, what the one line must say)
    (
        ["train", "--out", "{root}/run", "--overwrite", "--hold-out", "color=red", *TINY],
        "unknown attribute color",
    ),
    (["train", "--out", "{root}/run", "--overwrite", "--batch-size", "100000", *TINY], "batch-size 100000"),
    (["train", "--out", "{root}/notarun", "--overwrite", *TINY], "is not a jmvae run"),
    (["train", "--out", "{root}/notarun", *TINY], "holds files and is not a jmvae run"),
    (["train", "--out", "{root}/foreign", "--overwrite", *TINY], "is not a jmvae run"),
    (["train", "--out", "{root}/afile", *TINY], "is a file"),
    (["train", "--out", "{root}/afile/run", *TINY], "is a file"),
    (["train", "--out", "{root}/new", "--seed", "-1", *TINY], "seed -1"),
    (["train", "--out", "{root}/new", "--seed", str(2**70), *TINY], "seed 1180591620717411303424"),
    (
        ["train", "--out", "{root}/new", "--mnist", "bundled", "--test-fraction", "0.9999", *TINY],
        "train split",
    ),
    (
        ["train", "--out", "{root}/new", "--mnist", "bundled", "--test-fraction", "0.0001", *TINY],
        "test split",
    ),
    (["train", "--runs-dir", "{root}/runs", "--name", "../escaped", *TINY], "--name ../escaped"),
    (["train", "--out", "{root}/run", "--resume", "--lr", "0.5"], "--lr 0.5 (the run has 0.0015)"),
    (["train", "--out", "{root}/run", "--resume", "--overwrite"], "--resume with --overwrite"),
    (["train", "--out", "{root}/badckpt", "--resume"], "checkpoint.pt cannot be read"),
    (["train", "--out", "{root}/badconfig", "--resume"], "config.json cannot be read"),
    (
        ["train", "--out", "{root}/new", "--hold-out", "position=left,position=right", *TINY],
        "position given twice",
    ),
    (["train", "--out", "{root}/new", "HOLD_ALL", *TINY], "leaves no training examples"),
    (
        ["train", "--out", "{root}/new", "--mnist-dir", "{root}/bigdigits", *TINY[2:]],
        "train images (300, 32, 32)",
    ),
    (
        ["train", "--out", "{root}/new", "--mnist-dir", "{root}/bigdigits", *TINY],
        "with --mnist bundled (allowed: one of them)",
    ),
    (
        ["generate", "{root}/run", "--given", "digit=1", "--given", "digit=2", "--out", "{root}/g.png"],
        "digit given twice",
    ),
    (["generate", "{root}/run", "--out", "{root}/adir.png"], "is a directory"),
    (["generate", "{root}/run", "--out", "{root}/afile/g.png"], "is a file"),
    (["generate", "{root}/badmodel", "--out", "{root}/g.png"], "model.pt cannot be read"),
    (["generate", "{root}/foreignmodel", "--out", "{root}/g.png"], "does not fit the model"),
    (["figures", "{root}/badconfig"], "config.json cannot be read"),
    (["evaluate", "{root}/notarun"], "not a jmvae run"),
    (["evaluate", "{root}/badmodel"], "model.pt cannot be read"),
    (["report", "{root}/badmetrics"], "metrics.json cannot be read"),
    (["compare", "{root}/run", "{root}/run", "--csv", "{root}/c.csv"], "given twice"),
    (["compare", "{root}/run", "--csv", "{root}/run/metrics.json"], "allowed: a .csv file"),
    (["compare", "{root}/run", "--csv", "{root}/adir.csv"], "is a directory"),
    (["compare", "{root}/run", "--csv", "{root}/run/history.csv"], "inside a run directory"),
    (["compare", "{root}/run", "{root}/otherpreset", "--csv", "{root}/c.csv"], "runs of presets"),
    (["compare", "{root}/badmetrics", "--csv", "{root}/c.csv"], "metrics.json cannot be read"),
    (["train", "--out", "{root}/new\udcff", *TINY], "is not valid UTF-8 (allowed: a path in UTF-8)"),
    (
        ["train", "--out", "{root}/new", *TINY, "--hidden", "100000000"],
        "hidden 100000000 (allowed: a width whose weights fit",
    ),
    (
        ["generate", "{root}/bighidden", "--out", "{root}/g.png"],
        "config.json: hidden 100000000 (allowed: a width",
    ),
    (
        ["generate", "{root}/mmvaeconfig", "--out", "{root}/g.png"],
        "config.json: alpha with model mmvae (allowed: options of mmvae: attribute_weight, samples",
    ),
    (["generate", "{root}/unknownkey", "--out", "{root}/g.png"], "config.json: unknown setting 'colour'"),
    (
        ["generate", "{root}/run", "--temperature", "1e308", "--out", "{root}/g.png"],
        "--temperature 1e+308 (allowed: a number > 0 and at most 100)",
    ),
    (
        ["generate", "{root}/run", "--n", "10000000", "--out", "{root}/g.png"],
        "--n 10000000 with a .png grid (allowed: 1 to 10,000",
    ),
    (["generate", "{root}/run", "--n", "10000000000000", "--out", "{root}/g.npz"], "the .npz takes about"),
    (
        ["generate", "{root}/run", "--seed", str(2**64), "--out", "{root}/g.png"],
        "--seed 18446744073709551616 (allowed: an integer from 0",
    ),
    (
        ["generate", "{root}/run", "--seed", "-1", "--out", "{root}/g.png"],
        "--seed -1 (allowed: an integer from 0 to 4294967295)",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("argv,expect", BAD, ids=[f"{a[0]}-{i}" for i, (a, _) in enumerate(BAD)])
def test_bad_input_is_one_line_and_changes_nothing(world, capsys, argv, expect):
    root, hold_all = world
    argv = [a.format(root=root) for a in argv]
    argv = [h for a in argv for h in (hold_all if a == "HOLD_ALL" else [a])]
    before = snapshot(root)
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("jmvae: error: "), err
    assert expect in err[0], err[0]
    assert snapshot(root) == before  # nothing written, nothing deleted
    assert not (root / "new").exists() and not (root / "escaped").exists()


@pytest.mark.slow
def test_overwrite_replaces_a_run_only_after_every_check(world, tmp_path, capsys):
    root, _ = world
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    (run / ".checkpoint.pt.x1.tmp").write_bytes(b"left by a kill")
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "events.out.tfevents.1.old").write_bytes(b"the old run's curves")
    assert (
        main(
            [
                "train",
                "--out",
                str(run),
                "--overwrite",
                "--mnist",
                "bundled",
                "--steps",
                "12",
                "--hidden",
                "32",
                "--k",
                "5",
                "--n-per-query",
                "5",
                "--coherence-draws",
                "100",
            ]
        )
        == 0
    )
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 12
    assert not list(run.glob(".*.tmp")) and (run / "metrics.json").exists()
    assert not list((run / "tensorboard").rglob("*"))  # two runs' events would read as one in TensorBoard


def test_each_hold_out_flag_is_its_own_combination():
    data = load_dataset("position-digit", held_out=["position=left,digit=1", "position=right,digit=2"])
    pairs = set(zip(data.train["position"].tolist(), data.train["digit"].tolist()))
    assert pairs == {(0, 1), (1, 0)}  # left/1 and right/2 are both gone
    assert len(set(zip(data.test["position"].tolist(), data.test["digit"].tolist()))) == 4


@pytest.mark.slow
def test_data_is_pinned_and_paths_are_absolute(tmp_path, monkeypatch):
    write_digits(tmp_path / "digits")
    monkeypatch.chdir(tmp_path)
    train(TrainConfig(mnist_dir="digits", steps=2, hidden=16, batch_size=64), tmp_path / "run", **QUIET)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["mnist_dir"] == str(tmp_path / "digits") and config["train"]["mnist"] == "full"
    monkeypatch.chdir("/")
    load_run(tmp_path / "run")  # works from anywhere
    write_digits(tmp_path / "digits", seed=1)  # the files change under the run
    with pytest.raises(
        UserError, match=f"run {tmp_path / 'run'} trained on data {config['data_fingerprint']}"
    ):
        load_run(tmp_path / "run")
    with pytest.raises(UserError, match="trained on data"):
        train(TrainConfig(), tmp_path / "run", resume=True, **QUIET)


@pytest.mark.slow
def test_a_non_finite_loss_stops_with_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    real_loss, calls = JMVAE.loss, {"n": 0}

    def loss(self, batch):
        value, terms = real_loss(self, batch)
        if self.training:
            calls["n"] += 1
            if calls["n"] >= 2 * 12 + 5:  # step 29: the 5th of epoch 3 (12 steps per epoch)
                value = value * float("nan")
        return value, terms

    monkeypatch.setattr(JMVAE, "loss", loss)
    code = main(
        [
            "train",
            "--out",
            str(tmp_path / "run"),
            "--mnist",
            "bundled",
            "--epochs",
            "4",
            "--hidden",
            "16",
            "--batch-size",
            "128",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [
        "jmvae: error: loss is nan at step 29 (epoch 3); last good checkpoint: epoch 2 "
        "(try a lower --lr, with --overwrite)"
    ]
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["epoch"] == 2
    assert not (tmp_path / "run" / "model.pt").exists() and not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow
def test_resume_before_the_first_checkpoint_trains_from_the_start(tmp_path, monkeypatch):
    cfg = TrainConfig(steps=6, hidden=16, batch_size=256, seed=2)
    train(cfg, tmp_path / "straight", **QUIET)
    real_step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", **QUIET)
    monkeypatch.setattr(torch.optim.Adam, "step", real_step)
    assert (tmp_path / "killed" / "config.json").exists() and not (
        tmp_path / "killed" / "checkpoint.pt"
    ).exists()
    train(TrainConfig(), tmp_path / "killed", resume=True, **QUIET)
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_train_longer_is_the_run_trained_that_long(tmp_path, capsys):
    cfg = TrainConfig(epochs=2, hidden=16, batch_size=256, seed=3, mnist="bundled")
    train(replace(cfg, epochs=3), tmp_path / "fresh", **QUIET)
    short = tmp_path / "short"
    train(cfg, short, **QUIET)
    (short / "metrics.json").write_text("{}")  # as if evaluated: a finished run
    (short / "report.html").write_text("the two-epoch model's report")
    before = snapshot(short)
    assert main(["train", "--out", str(short), "--resume", "--epochs", "1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "jmvae: error: --epochs 1 with --resume (the run has 2; allowed: more, to train it longer)"
    )
    assert snapshot(short) == before
    train(TrainConfig(), short, resume=True, epochs=3, **QUIET)
    a = torch.load(tmp_path / "fresh" / "model.pt", weights_only=True)
    b = torch.load(short / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (short / "metrics.json").exists() and not (short / "report.html").exists()  # not finished
    config = json.loads((short / "config.json").read_text())
    assert config["train"]["epochs"] == config["epochs"] == 3
    assert config["total_steps"] == 3 * config["steps_per_epoch"]
    assert [row["epoch"] for row in read_history(short)] == [1, 2, 3]


@pytest.mark.slow
def test_train_longer_from_the_cli_refits_the_runs_samplers_as_a_fresh_run_fits_them(tmp_path):
    flags = ["--mnist", "bundled", "--hidden", "16", "--batch-size", "512", "--seed", "5", "--sampler", "gmm"]
    flags += ["--k", "5", "--n-per-query", "2", "--coherence-draws", "50", "--likelihood-examples", "20"]
    flags += ["--complete-temperature", "0"]
    short, fresh = tmp_path / "short", tmp_path / "fresh"
    assert main(["train", "--out", str(short), "--epochs", "1", *flags]) == 0
    assert main(["train", "--out", str(fresh), "--epochs", "2", *flags]) == 0
    assert main(["train", "--out", str(short), "--resume", "--epochs", "2"]) == 0

    def same(a, b) -> bool:
        if isinstance(a, dict):
            return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b

    for name in ("model.pt", "sampler-gmm.pt"):
        assert same(*(torch.load(run / name, weights_only=True) for run in (short, fresh))), name
    by_sampler = [
        json.loads((run / "metrics.json").read_text())["joint_coherence_by_sampler"] for run in (short, fresh)
    ]
    assert by_sampler[0] == by_sampler[1]


def test_train_longer_refuses_what_a_fresh_longer_run_would_not_be():
    had = {"epochs": 4, "steps_per_epoch": 10, "total_steps": 40}
    cfg = TrainConfig(epochs=4)
    assert longer(cfg, had, 4) is cfg and longer(cfg, had, 6).epochs == 6
    for run_cfg, recorded, epochs, expect in [
        (cfg, had, 3, "--epochs 3 with --resume (the run has 4; allowed: more"),
        (TrainConfig(epochs=4, lr_schedule="cosine"), had, 6, "--lr-schedule cosine, whose rate depends"),
        (TrainConfig(steps=35), dict(had, total_steps=35), 6, "a run of 35 steps, 3.5 epochs of 10 steps"),
        (TrainConfig(steps=35), dict(had, total_steps=35), 4, "a run of 35 steps, 3.5 epochs of 10 steps"),
        (cfg, dict(had, epochs=None), 6, "config.json: epochs None, steps_per_epoch 10, total_steps 40"),
    ]:
        with pytest.raises(UserError, match=re.escape(expect)):
            longer(run_cfg, recorded, epochs)


def test_figures_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    out = tmp_path / "g.png"
    figures.save_image_grid(np.zeros((2, 4, 4)), out)
    before = out.read_bytes()

    def dying_savefig(self, path, **kw):
        Path(path).write_bytes(b"")  # what a kill mid-draw leaves
        raise KeyboardInterrupt

    monkeypatch.setattr(figures.Figure, "savefig", dying_savefig)
    with pytest.raises(KeyboardInterrupt):
        figures.save_image_grid(np.ones((2, 4, 4)), out)
    assert out.read_bytes() == before and list(tmp_path.iterdir()) == [out]


@pytest.mark.slow
def test_report_redraws_rather_than_embed_an_empty_figure(world, tmp_path, capsys):
    root, _ = world
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    (run / "figures" / "pxz_grid.png").write_bytes(b"")
    (run / "figures" / ".pxz_grid.png.abc.tmp").write_bytes(b"partial")
    assert main(["report", str(run)]) == 0
    assert (run / "figures" / "pxz_grid.png").stat().st_size > 1000
    assert not list((run / "figures").glob(".*.tmp"))


@pytest.mark.slow
def test_generate_npz_keeps_the_name_given(world, tmp_path, capsys):
    root, _ = world
    assert main(["generate", str(root / "run"), "--n", "3", "--out", str(tmp_path / "X.NPZ")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "X.NPZ")
    assert [p.name for p in tmp_path.iterdir()] == ["X.NPZ"] and np.load(tmp_path / "X.NPZ")["images"].shape[
        0
    ] == 3


KILLED_TRAINER = """
import sys, torch
torch.set_num_threads(1)
from pathlib import Path
from jmvae.config import TrainConfig
from jmvae.train import train
out = Path(sys.argv[1])
resume = (out / "config.json").exists()
train(TrainConfig(epochs=12, hidden=48, batch_size=128, seed=5), out, resume=resume, log=lambda *a: None)
"""


@pytest.mark.slow
def test_kill_drill_resumes_to_the_uninterrupted_weights(tmp_path):
    """SIGKILL the trainer at several points; every restart resumes; the end matches a run never killed."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", KILLED_TRAINER]
    subprocess.run([*cmd, str(tmp_path / "straight")], env=env, check=True, timeout=300)
    killed = tmp_path / "killed"
    rng = np.random.default_rng(0)
    for _ in range(4):
        p = subprocess.Popen([*cmd, str(killed)], env=env)
        time.sleep(float(rng.uniform(1.5, 4.0)))  # imports take ~1.5 s; then training and writes
        p.send_signal(signal.SIGKILL)
        p.wait()
        if (killed / "model.pt").exists():
            break
    subprocess.run([*cmd, str(killed)], env=env, check=True, timeout=300)
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    b = torch.load(killed / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (killed / "history.csv").read_text().count("\n") == 13
    assert not list(killed.glob(".*.tmp"))


# -- property-based fuzzing: the readers and parsers answer every input with data or a UserError ----------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from jmvae.data import mnist  # noqa: E402
from jmvae.data.attributes import parse_assignments  # noqa: E402

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
IDX_HEAD = st.sampled_from([b"", b"\x00\x00\x08\x01", b"\x00\x00\x08\x03", b"\x00\x00\x08\x05", b"\x1f\x8b"])


@FUZZ
@given(head=IDX_HEAD, body=st.binary(max_size=300), gz=st.booleans())
def test_fuzz_idx_reader(tmp_path, head, body, gz):
    raw = head + body
    path = tmp_path / "f.idx"
    path.write_bytes(gzip.compress(raw) if gz else raw)
    try:
        array = mnist.read_idx(path)
    except UserError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert array.dtype == np.uint8 and array.size == len(raw) - 4 - 4 * raw[3]


def _classic_pickle() -> bytes:
    import pickle

    rng = np.random.default_rng(0)
    pair = lambda n: (
        rng.integers(0, 256, (n, 784)).astype(np.float32) / 256,
        rng.integers(0, 10, n).astype(np.int64),
    )
    return pickle.dumps((pair(4), pair(2), pair(3)), protocol=2)


CLASSIC = _classic_pickle()


@FUZZ
@given(
    cut=st.integers(0, len(CLASSIC)),
    flips=st.lists(st.tuples(st.integers(0, len(CLASSIC) - 1), st.integers(0, 255)), max_size=4),
    gz=st.booleans(),
)
def test_fuzz_pickle_reader(cut, flips, gz):
    raw = bytearray(CLASSIC[:cut] if cut < len(CLASSIC) // 2 else CLASSIC)
    for at, value in flips:
        if at < len(raw):
            raw[at] = value
    raw = bytes(raw)
    try:
        data = mnist.parse_pickle(gzip.compress(raw) if gz else raw, "fuzz.pkl")
    except UserError as e:
        assert "\n" not in str(e)
        return
    assert data.images.shape[1:] == (28, 28) and data.images.dtype == np.uint8 and data.labels.max() <= 9


@FUZZ
@given(items=st.lists(st.text(alphabet="positnal=dgr,12 xé", max_size=30), max_size=3))
def test_fuzz_name_value_parser(founding_data, items):
    try:
        out = parse_assignments(founding_data, items)
    except UserError as e:
        assert "\n" not in str(e)
        return
    assert set(out) <= {"position", "digit"} and all(0 <= v <= 1 for v in out.values())


# -- issue 34: no run or cache ever mixed, deleted through a link, or left half-imported ------------------
import errno  # noqa: E402

from jmvae import cli  # noqa: E402
from jmvae.runs import RunLock, atomic_write  # noqa: E402

SMALL = [
    "--mnist",
    "bundled",
    "--hidden",
    "32",
    "--k",
    "5",
    "--n-per-query",
    "5",
    "--coherence-draws",
    "50",
    "--likelihood-examples",
    "10",
    "--steps",
    "12",
]


def one_error_line(capsys, code: int, expect: str, status: int = 2) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == status and len(err) == 1, (code, err)
    assert expect in err[0], err[0]
    return err[0]


@pytest.mark.slow
def test_a_link_out_of_the_run_is_never_deleted_or_written_through(world, tmp_path, capsys):
    """`ln -s ~/pics RUN/figures`: --overwrite deleted the pictures there and drew the new figures into it."""
    root, _ = world
    run, pics = tmp_path / "run", tmp_path / "pics"
    shutil.copytree(root / "run", run)
    pics.mkdir()
    for name in ("holiday.png", "figures.json", ".draft.png.x.tmp"):
        (pics / name).write_bytes(b"the user's own " + name.encode())
    shutil.rmtree(run / "figures")
    (run / "figures").symlink_to(pics)
    before = snapshot(tmp_path)
    for argv in (
        ["train", "--out", str(run), "--overwrite", *SMALL],
        ["evaluate", str(run)],
        ["figures", str(run)],
        ["report", str(run)],
        ["explore", str(run)],
    ):
        one_error_line(capsys, main(argv), f"{run / 'figures'} is a link to {pics}, outside the run")
        assert snapshot(tmp_path) == before, argv
    (run / "figures").unlink()  # a link that stays inside the run is the run's own
    (run / "drawn").mkdir()
    (run / "figures").symlink_to("drawn")
    assert main(["figures", str(run)]) == 0 and list((run / "drawn").glob("*.png"))
    assert snapshot(pics) == {k[len("pics/") :]: v for k, v in before.items() if k.startswith("pics/")}


@pytest.mark.slow
def test_overwrite_deletes_nothing_before_the_tracker_and_the_disk_are_checked(
    world, tmp_path, capsys, monkeypatch
):
    """An unreachable MLflow server (it hung for minutes, after the old run was gone) and a full disk stop
    first."""
    root, _ = world
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    before = snapshot(run)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    started = time.perf_counter()
    one_error_line(
        capsys,
        main(["train", "--out", str(run), "--overwrite", "--log", "mlflow", *SMALL]),
        "--log mlflow: the tracking server http://127.0.0.1:9 cannot be reached",
    )
    assert time.perf_counter() - started < 30 and snapshot(run) == before
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 10**6))
    one_error_line(
        capsys,
        main(["train", "--out", str(run), "--overwrite", *SMALL]),
        "MB free (allowed: a disk with room",
    )
    assert snapshot(run) == before


@pytest.mark.slow
def test_the_run_lock_names_the_writer_and_keeps_out_every_other(world, tmp_path, capsys):
    root, _ = world
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    with RunLock(run):  # another command writing this run (here: this process)
        before = snapshot(run)
        for argv in (
            ["train", "--out", str(run), "--overwrite", *SMALL],
            ["train", "--out", str(run), "--resume"],
            ["evaluate", str(run)],
            ["figures", str(run)],
            ["report", str(run)],
            ["explore", str(run)],
        ):
            one_error_line(
                capsys,
                main(argv),
                f"run {run} is being written by another jmvae command; one writer at a "
                f"time, wait for it or stop it (pid {os.getpid()} holds it)",
            )
            assert snapshot(run) == before, argv
        assert main(["generate", str(run), "--n", "2", "--out", str(tmp_path / "g.png")]) == 0  # reads only
    assert main(["report", str(run)]) == 0  # released: the next writer goes ahead
    assert (run / ".lock").read_text().strip() == str(os.getpid())


def full_disk(path, *args, **kwargs):
    """A write_text whose disk fills up mid-file (the OSError names no file)."""
    atomic_write(
        Path(path), lambda tmp: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device"))
    )


FAULTS = [  # (command, what fails, how, exit status, what the one line says): a finished run stays finished
    (
        "evaluate",
        "os.fsync",
        OSError(errno.ENOSPC, "No space left on device"),
        2,
        "No space left on device: {run}/figures/",
    ),
    ("evaluate", "jmvae.report.write_text", full_disk, 2, "No space left on device: {run}/report.html"),
    (
        "evaluate",
        "jmvae.pipeline.evaluate",
        KeyboardInterrupt(),
        130,
        "jmvae: interrupted (run `jmvae evaluate {run}` again",
    ),
    (
        "train",
        "torch.save",
        RuntimeError(
            "[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file "
            "data/0: file write failed"
        ),
        2,
        "PytorchStreamWriter failed writing file data/0",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "command,target,error,status,expect", FAULTS, ids=[f"{c}-{t}" for c, t, *_ in FAULTS]
)
def test_a_failed_command_is_one_line_and_keeps_the_finished_run(
    world, tmp_path, capsys, monkeypatch, command, target, error, status, expect
):
    root, _ = world
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    metrics = (run / "metrics.json").read_bytes()

    def fail(*a, **k):
        raise error

    monkeypatch.setattr(target, error if callable(error) else fail)
    argv = (
        ["evaluate", str(run), *SMALL[4:12]]
        if command == "evaluate"
        else ["train", "--out", str(run), "--overwrite", *SMALL]
    )
    line = one_error_line(capsys, main(argv), expect.format(run=run), status)
    assert "--resume" not in line or command == "train"
    if command == "evaluate":
        assert (run / "metrics.json").read_bytes() == metrics  # still finished, with the metrics it had
    else:
        assert "checkpoint.pt" in line and not (run / "metrics.json").exists()
    assert not list(run.rglob(".*.tmp"))


@pytest.mark.slow
def test_generate_refuses_non_finite_images_and_writes_a_large_n_in_chunks(
    world, tmp_path, capsys, monkeypatch
):
    root, _ = world
    monkeypatch.setattr(cli, "GENERATE_CHUNK", 4)
    assert (
        main(
            [
                "generate",
                str(root / "run"),
                "--n",
                "10",
                "--given",
                "digit=2",
                "--out",
                str(tmp_path / "g.npz"),
            ]
        )
        == 0
    )
    out = np.load(tmp_path / "g.npz")
    assert out["images"].shape[0] == 10 and np.isfinite(out["images"]).all() and out["digit"].shape == (10,)
    assert int(out["given_digit"]) == 1 and [p.name for p in tmp_path.iterdir()] == ["g.npz"]
    real = JMVAE.generate
    monkeypatch.setattr(
        JMVAE,
        "generate",
        lambda self, *a, **k: {
            n: v * float("nan") if v.is_floating_point() else v for n, v in real(self, *a, **k).items()
        },
    )
    one_error_line(
        capsys,
        main(["generate", str(root / "run"), "--out", str(tmp_path / "nan.png")]),
        "the generated images are not finite at --temperature 1",
    )
    assert not (tmp_path / "nan.png").exists()


@pytest.mark.slow
@pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning"
)  # the swallowed one, as Python prints it
def test_a_swallowed_ctrl_c_still_stops_with_the_interrupt_line(world, tmp_path, capsys, monkeypatch):
    """A KeyboardInterrupt raised inside a finalizer is printed as "Exception ignored" and lost; the run went
    on and exited 0 (1 in 4 Ctrl-C during figure drawing, in matplotlib's WeakKeyDictionary)."""
    root, _ = world
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)

    class Finalizer:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)  # Ctrl-C lands while Python runs a finalizer
            for _ in range(1000):
                pass

    def draw(*a, **k):
        Finalizer()
        return []

    monkeypatch.setattr(figures, "make_figures", draw)
    one_error_line(capsys, main(["figures", str(run)]), "jmvae: interrupted", 130)


DRILL = [sys.executable, "-m", "jmvae", "train"]


@pytest.mark.slow
def test_drill_two_trainers_on_one_run_leave_one_whole_run(world, tmp_path):
    """Two `jmvae train --out SAME` with seeds 1 and 2 both exited 0, leaving seed 1's config with seed 2's
    history and checkpoint. Now one trains, the other stops at once with one line naming it."""
    run = tmp_path / "run"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    # Seeds 1 and 2 of the issue, as two learning rates: the bundled split and its classifier depend on the
    # seed.
    procs = {
        seed: subprocess.Popen(
            [*DRILL, "--out", str(run), *SMALL, "--lr", f"0.00{seed}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    }
    results = {seed: (p.wait(timeout=300), p.stderr.read().strip().splitlines()) for seed, p in procs.items()}
    winners = [seed for seed, (code, _) in results.items() if code == 0]
    assert len(winners) == 1, results
    loser = 3 - winners[0]
    code, err = results[loser]
    assert code == 2 and len(err) == 1, results
    assert (
        err[0].startswith("jmvae: error: ")
        and err[0].endswith(f"(pid {procs[winners[0]].pid} holds it)")
        or "already holds" in err[0]
    ), err  # (a loser that starts after the winner has finished)
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["lr"] == winners[0] / 1000 and (run / "metrics.json").exists()
    ckpt, model = (
        torch.load(run / "checkpoint.pt", weights_only=True),
        torch.load(run / "model.pt", weights_only=True),
    )
    assert ckpt["epoch"] == config["epochs"] and all(torch.equal(ckpt["model"][k], model[k]) for k in model)
    rows = (run / "history.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + config["epochs"] and not list(run.rglob(".*.tmp"))


@pytest.mark.slow
def test_drill_figures_and_evaluate_beside_training_then_sigterm_and_resume(world, tmp_path, capsys):
    """`jmvae figures RUN` while the run trained deleted the trainer's temp files ("No such file ... .tmp").
    Now each is turned away with one line; SIGTERM stops the trainer as Ctrl-C does, and --resume finishes."""
    root, _ = world
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    trainer = subprocess.Popen(
        [*DRILL, "--out", str(run), "--overwrite", *SMALL[:-1], "800", "--batch-size", "64"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline:  # until the trainer holds the run
        try:
            RunLock(run).check()
        except UserError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the trainer never took the lock")
    for argv in (["figures", str(run)], ["evaluate", str(run)], ["train", "--out", str(run), "--resume"]):
        one_error_line(capsys, main(argv), f"(pid {trainer.pid} holds it)")

    def steps():
        try:
            return json.loads((run / "config.json").read_text())["train"]["steps"]
        except (OSError, ValueError):  # cleared by --overwrite, the new one not yet written
            return None

    while steps() != 800 and time.time() < deadline:
        time.sleep(0.05)  # the new run's config: it is training
    time.sleep(0.3)
    trainer.send_signal(signal.SIGTERM)
    assert trainer.wait(timeout=60) == 143
    assert trainer.stderr.read().strip().splitlines() == [
        "jmvae: interrupted (resume a training run with --resume)"
    ]
    assert not list(run.rglob(".*.tmp")) and not (run / "metrics.json").exists()
    assert main(["train", "--out", str(run), "--resume"]) == 0
    assert (
        json.loads((run / "config.json").read_text())["train"]["steps"] == 800
        and (run / "metrics.json").exists()
    )
