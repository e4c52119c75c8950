"""--log tensorboard and --log mlflow, read back with the libraries' own readers."""

import importlib.util

import pytest

from jmvae.cli import main

TINY = ["--epochs", "3", "--hidden", "32", "--k", "20", "--n-per-query", "5", "--coherence-draws", "200"]


@pytest.mark.slow
def test_tensorboard_holds_every_history_column_per_epoch_the_objective_and_the_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "tb"
    assert main(["train", "--log", "tensorboard", "--out", str(run), *TINY]) == 0
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    header = (run / "history.csv").read_text().splitlines()[0].split(",")
    from jmvae.trackers import metric_name

    for column in header:
        if column not in ("epoch", "step"):
            assert metric_name(column) in scalars, column
            assert [e.step for e in events.Scalars(metric_name(column))] == [1, 2, 3]
    last = float((run / "history.csv").read_text().splitlines()[-1].split(",")[header.index("test_loss")])
    assert abs(events.Scalars("test_loss")[-1].value - last) < 1e-3
    assert "metrics/joint coherence" in scalars and "metrics/correctness O_2" in scalars
    assert "objective/text_summary" in events.Tags()["tensors"]


@pytest.mark.slow
def test_mlflow_logs_params_metrics_per_epoch_and_the_run_files(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    store = (tmp_path / "store").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    run = tmp_path / "ml"
    assert main(["train", "--log", "mlflow", "--out", str(run), *TINY]) == 0
    client = MlflowClient(tracking_uri=store)
    (found,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert found.data.params["model"] == "jmvae" and found.info.run_name == "ml"
    history = client.get_metric_history(found.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert "metrics/joint coherence" in found.data.metrics
    names = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"config.json", "history.csv", "metrics.json", "report.html", "model.pt", "figures"} <= names
    assert found.info.status == "FINISHED"


@pytest.mark.slow
def test_a_missing_tracker_package_is_one_line_before_training(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    assert main(["train", "--log", "mlflow", "--out", str(tmp_path / "no"), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install "jmvae[mlflow]"' in err[0]
    assert not (tmp_path / "no").exists()


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["wandb"])
def test_unknown_tracker(tmp_path, capsys, bad):
    assert main(["train", "--log", bad, "--out", str(tmp_path / "no"), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "wandb" in err[0] and "tensorboard" in err[0] and "mlflow" in err[0]
    from jmvae.config import TrainConfig
    from jmvae.errors import UserError

    with pytest.raises(UserError, match="allowed: tensorboard, mlflow"):
        TrainConfig(log=[bad]).validate()
