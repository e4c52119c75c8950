"""benchmarks/common.py: FIELD=VALUE typed as the TrainConfig field is, and bad input in one line (exit 2)."""

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import config_value, run_main  # noqa: E402

from jmvae.config import TrainConfig  # noqa: E402


def test_a_setting_is_typed_as_its_field_is():
    assert config_value(TrainConfig, "alpha=0.1", "--set") == ("alpha", 0.1)
    assert config_value(TrainConfig, "z_dim=16", "--set") == ("z_dim", 16) and isinstance(
        config_value(TrainConfig, "z_dim=16", "--set")[1], int
    )
    assert config_value(TrainConfig, "shared_trunk=false", "--set") == ("shared_trunk", False)
    assert config_value(TrainConfig, 'lr_schedule="cosine"', "--set") == ("lr_schedule", "cosine")
    assert config_value(TrainConfig, "lr_schedule=cosine", "--set") == ("lr_schedule", "cosine")
    assert config_value(TrainConfig, 'hold_out=["digit=4"]', "--set") == ("hold_out", ["digit=4"])
    assert config_value(TrainConfig, "z_dim=null", "--set") == ("z_dim", None)
    cfg = TrainConfig(**dict([config_value(TrainConfig, "image_network=conv3-light", "--set")]))
    assert cfg.resolved().image_network == "conv3-light"


@pytest.mark.parametrize(
    "setting, said",
    [
        ("alhpa=0.1", r"--set alhpa=0.1: no TrainConfig field 'alhpa' \(allowed: its fields"),
        ("z_dim=1.5", r"--set z_dim=1.5: z_dim=1.5 \(allowed: a value of the field's type, int \| None\)"),
        ("shared_trunk=yes", r"shared_trunk=yes \(allowed: a value of the field's type, bool \| None\)"),
        ("lr=fast", r"lr=fast \(allowed: a value of the field's type, float \| None\)"),
        ("hold_out=digit=4", r"hold_out=digit=4 \(allowed: a value of the field's type, list\[str\]\)"),
        ("hold_out=[4]", r"hold_out=\[4\] \(allowed: a value of the field's type, list\[str\]\)"),
        ("seed=null", r"seed=null \(allowed: a value of the field's type, int\)"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(capsys, setting, said):
    with pytest.raises(SystemExit) as stop:
        config_value(TrainConfig, setting, f"--set {setting}")
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and re.search(said, err), err


def test_a_library_error_in_a_benchmark_is_one_line_and_exit_2(capsys):
    def main() -> None:
        TrainConfig(lr=5.0).validate()

    with pytest.raises(SystemExit) as stop:
        run_main(main)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and re.fullmatch(
        r"\S+: error: lr 5.0 \(allowed: a number in \(0, 1\]\)\n", err
    )
