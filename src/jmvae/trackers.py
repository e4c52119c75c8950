"""Experiment trackers, optional: `--log tensorboard` and/or `--log mlflow`.

A tracker sees the run's settings and objective when training starts, every history.csv row as it is
written, and the headline metrics and the run directory's files when the run is finished. TensorBoard
writes event files into RUN/tensorboard; MLflow logs to $MLFLOW_TRACKING_URI, else to a file store
`mlruns` beside the run directories. Each needs its library (`pip install "jmvae[tensorboard]"` or
`"jmvae[mlflow]"`); a missing one is a one-line error before training starts.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import urllib.parse
from pathlib import Path

from .errors import UserError

TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # name -> the module it needs


def check(names: list[str]) -> None:
    for name in names:
        if name not in TRACKERS:
            raise UserError(f"--log {name} (allowed: {', '.join(TRACKERS)})")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise UserError(
                f"--log {name}: the {TRACKERS[name]} package is not installed (allowed: "
                f'pip install "jmvae[{name}]")'
            )


PROBE_SECONDS = (
    5.0  # how long a tracking server may take to accept a connection before a run refuses to start
)


def reachable(names: list[str]) -> None:
    """UserError, within PROBE_SECONDS, if --log mlflow names an HTTP tracking server that does not answer:
    checked before a run deletes or writes anything (MLflow itself retries for minutes, then fails
    mid-run)."""
    if "mlflow" not in (names or []):
        return
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "", port), timeout=PROBE_SECONDS):
            pass
    except (OSError, ValueError) as e:
        reason = (
            "no answer"
            if isinstance(e, socket.timeout)
            else (getattr(e, "strerror", None) or str(e) or type(e).__name__)
        )
        raise UserError(
            f"--log mlflow: the tracking server {uri} cannot be reached ({reason}) (allowed: a reachable "
            "$MLFLOW_TRACKING_URI, or none for a file store beside the runs)"
        ) from None


def metric_name(name: str) -> str:
    """A name every tracker accepts ("correctness |O|=2" -> "correctness _O_=2" would be unreadable, so
    "|O|=2" reads "O=2" and "|" elsewhere "given")."""
    name = name.replace("|O|=", "O=").replace("->", " to ").replace("|", " given ")
    return re.sub(r"[^\w\-. /=]", "_", name).replace("=", "_")


class TensorBoard:
    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def start(self, config: dict) -> None:
        self.writer.add_text("objective", config["objective"])
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in config["train"].items()))

    def epoch(self, row: dict) -> None:
        for key, value in row.items():
            if key not in ("epoch", "step"):
                self.writer.add_scalar(metric_name(key), value, row["epoch"])
        self.writer.flush()

    def finish(self, headline: dict, run_dir: Path) -> None:
        for key, value in headline.items():
            self.writer.add_scalar("metrics/" + metric_name(key), value, 0)
        self.writer.close()


class MLflow:
    def __init__(self, run_dir: Path):
        import mlflow

        self.mlflow = mlflow
        uri = os.environ.get("MLFLOW_TRACKING_URI") or (run_dir.resolve().parent / "mlruns").as_uri()
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")  # a server that goes away mid-run: a
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # minute or so, not MLflow's minutes
        if uri.startswith("file:"):  # MLflow 3 keeps the file store only for those who ask for it
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(uri)
        self.run = mlflow.start_run(run_name=run_dir.name)

    def start(self, config: dict) -> None:
        self.mlflow.log_params({k: str(v)[:500] for k, v in config["train"].items()})
        self.mlflow.set_tag("objective", config["objective"][:5000])

    def epoch(self, row: dict) -> None:
        self.mlflow.log_metrics(
            {metric_name(k): v for k, v in row.items() if k not in ("epoch", "step")}, step=row["epoch"]
        )

    def finish(self, headline: dict, run_dir: Path) -> None:
        self.mlflow.log_metrics({"metrics/" + metric_name(k): v for k, v in headline.items()})
        for path in sorted(run_dir.glob("*")):
            if path.is_file() and not path.name.endswith(".tmp") and not path.name.startswith("."):
                self.mlflow.log_artifact(str(path))
        if (run_dir / "figures").is_dir():
            self.mlflow.log_artifacts(str(run_dir / "figures"), artifact_path="figures")
        self.mlflow.end_run()


class Trackers:
    """Every tracker the run asks for (its config's `log`), called together; nothing at all without --log.
    Opened by the trainer once the run's checks have passed and its config.json is written."""

    def __init__(self):
        self.active: list = []

    def open(self, run_dir: Path, config: dict) -> None:
        names = config["train"].get("log") or []
        check(names)
        kinds = {"tensorboard": TensorBoard, "mlflow": MLflow}
        self.active = [kinds[n](Path(run_dir)) for n in dict.fromkeys(names)]
        for t in self.active:
            t.start(config)

    def epoch(self, row: dict) -> None:
        for t in self.active:
            t.epoch(row)

    def finish(self, headline: dict, run_dir: Path) -> None:
        for t in self.active:
            t.finish(headline, Path(run_dir))
