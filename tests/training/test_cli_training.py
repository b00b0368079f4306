"""`egtr train` / `egtr pretrain-detector`: config resolution and a fast-dev-run through the real command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.training.conftest import tiny_train_config

from egtr.cli import main
from egtr.training import TrainConfig


def test_print_config_applies_presets_options_and_overrides(capsys):
    code = main(
        [
            "pretrain-detector",
            "--print-config",
            "--data-root",
            "/data/vg",
            "--devices",
            "2",
            "--precision",
            "bf16-mixed",
            "lr=3e-4",
            "model.num_queries=100",
        ]
    )
    assert code == 0
    config = json.loads(capsys.readouterr().out)
    assert config["stage"] == "detector" and config["loss"]["auxiliary_loss"]
    assert config["data"]["root"] == "/data/vg" and config["devices"] == 2 and config["precision"] == "bf16-mixed"
    assert config["lr"] == 3e-4 and config["lr_backbone"] == 1e-5 and config["model"]["num_queries"] == 100


def test_open_images_preset(capsys):
    assert main(["train", "--print-config", "--dataset", "oi"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["data"]["kind"] == "oi" and config["loss"]["connectivity_loss_coefficient"] == 90


def test_config_of_the_other_stage_is_refused(tmp_path, capsys):
    config_file = tmp_path / "config.json"
    TrainConfig.for_detector().save(config_file)
    assert main(["train", "--config", str(config_file), "--print-config"]) == 2
    assert "the config is for stage 'detector'" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fast_dev_run_trains_both_passes_and_saves_nothing(synthetic_root: Path, tmp_path: Path, dtype, capsys):
    config_file = tmp_path / "config.json"
    tiny_train_config(synthetic_root, tmp_path / "unused", finetune_epochs=1).save(config_file)
    code = main(
        [
            "train",
            "--config",
            str(config_file),
            "--out",
            str(tmp_path / "run"),
            "--fast-dev-run",
            "--dtype",
            dtype,
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "fast-dev-run: 2 pass(es) ran; nothing was saved" in captured.out and "final model:" not in captured.out
    # Lightning's lines come once, through egtr's handler, without its advertisements.
    log_lines = [line for line in captured.err.splitlines() if line.strip()]
    assert not any("Tip" in line or "litlogger" in line.lower() for line in log_lines)
    assert not any(line.startswith("INFO: ") for line in log_lines)  # the format of Lightning's own handler
    # Before: a model, configs and metrics were written although docs/training.md says "nothing saved".
    assert not [path for path in (tmp_path / "run").rglob("*") if path.is_file()]


def test_missing_dataset_is_a_clear_error(capsys):
    assert main(["train", "--out", "/tmp/nowhere"]) == 2
    error = capsys.readouterr().err  # errors go to stderr, as one line
    assert error.startswith("error: no dataset: pass --data-root") and len(error.splitlines()) == 1


def test_settings_may_follow_options_and_unknown_options_are_still_refused(capsys):
    # Before: "unrecognized arguments: lr=1e-4" for a setting placed after an option.
    arguments = ["--data-root", "D", "--out", "R", "model.d_model=64", "--max-epochs", "1", "lr=1e-4", "lr=2e-4"]
    assert main(["train", *arguments, "--print-config"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["model"]["d_model"] == 64 and config["max_epochs"] == 1 and config["lr"] == 2e-4  # the last wins
    assert main(["train", "--print-config", "--bogus", "lr=1e-4"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
