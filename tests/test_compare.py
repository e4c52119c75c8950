import json

import pytest

from jmvae.cli import main
from jmvae.compare import format_table, group


def fake_run(root, name, model, seed, correctness, completed=None):
    d = root / name
    d.mkdir()
    (d / "config.json").write_text(
        json.dumps(
            {
                "train": {
                    "model": model,
                    "preset": "position-digit",
                    "z_dim": 2,
                    "seed": seed,
                    "device": "auto",
                }
            }
        )
    )
    (d / "model.pt").write_bytes(b"")
    (d / "metrics.json").write_text(
        json.dumps(
            {
                "correctness": {"by_size": {"1": correctness, "2": 1.0}},
                "coverage": {"by_size": {"1": 0.9}},
                "image_to_attribute_accuracy": {"q(z|x)": {"position": 1.0, "digit": 0.5}},
                "joint_coherence": 0.7,
                "log_likelihood": {"log p(x)": -100.0 - seed},
            }
            | (
                {
                    "completed": {
                        "0.5": {
                            "correctness": {"by_size": {"1": completed, "2": 1.0}},
                            "coverage": {"by_size": {"1": 0.95}},
                        }
                    }
                }
                if completed is not None
                else {}
            )
        )
    )
    return d


def test_groups_seeds_of_one_config(tmp_path, capsys):
    runs = [
        fake_run(tmp_path, "j0", "jmvae", 0, 0.8),
        fake_run(tmp_path, "j1", "jmvae", 1, 0.9),
        fake_run(tmp_path, "t0", "telbo", 0, 0.6),
    ]
    rows = group(runs)
    assert [r["config"] for r in rows] == ["model=jmvae", "model=telbo"]
    jm = rows[0]
    assert jm["n"] == 2 and jm["correctness |O|=1"] == pytest.approx(0.85)
    assert jm["correctness |O|=1 std"] == pytest.approx(0.0707107, rel=1e-5)
    assert jm["image->attribute accuracy"] == pytest.approx(0.75) and jm["log p(x)"] == pytest.approx(-100.5)
    assert rows[1]["n"] == 1 and rows[1]["correctness |O|=1 std"] == 0.0
    table = format_table(rows)
    assert "0.85 ± 0.071" in table and "model=telbo (n=1)" in table
    assert main(["compare", *map(str, runs), "--csv", str(tmp_path / "t.csv")]) == 0
    assert "correctness |O|=1" in capsys.readouterr().out
    assert (tmp_path / "t.csv").read_text().startswith("config,n,seeds,")


def test_compare_refuses_unfinished_runs(tmp_path, capsys):
    d = fake_run(tmp_path, "j0", "jmvae", 0, 0.8)
    (d / "metrics.json").unlink()
    assert main(["compare", str(d)]) == 2
    assert "is not finished" in capsys.readouterr().err


def test_runs_from_before_a_metric_compare_with_runs_that_have_it(tmp_path, capsys):
    """A run evaluated before the completed sampler existed lacks its rows: the table leaves them blank."""
    runs = [
        fake_run(tmp_path, "j0", "jmvae", 0, 0.8, completed=0.9),
        fake_run(tmp_path, "j1", "jmvae", 1, 0.9),
        fake_run(tmp_path, "t0", "telbo", 0, 0.6),
    ]
    rows = group(runs)
    assert (
        rows[0]["correctness |O|=1, completed T=0.5"] == 0.9
        and rows[0]["correctness |O|=1, completed T=0.5 std"] == 0.0
    )
    assert "correctness |O|=1, completed T=0.5" not in rows[1]
    line = next(
        l for l in format_table(rows).splitlines() if l.startswith("correctness |O|=1, completed T=0.5")
    )
    assert line.rstrip().endswith("0.9 ± 0")  # the jmvae column (n = 2, one has it); telbo's is blank
    assert (
        main(["compare", *map(str, runs[::-1]), "--csv", str(tmp_path / "t.csv")]) == 0
    )  # the old run first
    assert "coverage |O|=1, completed T=0.5" in (tmp_path / "t.csv").read_text().splitlines()[0]
