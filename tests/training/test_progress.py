"""Without a terminal, training says per epoch how far it is and how long it will take."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tests.training.conftest import tiny_train_config

from egtr.training import run_training
from egtr.training.progress import format_duration


def test_a_run_without_a_progress_bar_logs_a_line_per_epoch(
    synthetic_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    config = tiny_train_config(synthetic_root, tmp_path / "run", max_epochs=3, progress_bar=False)
    with caplog.at_level(logging.INFO, logger="egtr.training.progress"):
        run_training(config)
    lines = [record.getMessage() for record in caplog.records if record.name == "egtr.training.progress"]
    assert len(lines) == 3  # one per epoch of the main pass (no finetune pass in this config)
    for epoch, line in enumerate(lines, start=1):
        assert line.startswith(f"main epoch {epoch}/3, step {2 * epoch}/6, train_loss ")  # 2 batches an epoch
        assert "validation_loss " in line and "elapsed" in line
    assert lines[0].endswith("left") and lines[-1].endswith("about 0s left")


def test_a_run_with_a_progress_bar_adds_no_lines(synthetic_root: Path, tmp_path: Path, caplog):
    config = tiny_train_config(synthetic_root, tmp_path / "run", max_epochs=1, progress_bar=True)
    with caplog.at_level(logging.INFO, logger="egtr.training.progress"):
        run_training(config)
    assert not [record for record in caplog.records if record.name == "egtr.training.progress"]


@pytest.mark.parametrize("seconds, text", [(0.4, "0s"), (12, "12s"), (187, "3m07s"), (3725, "1h02m")])
def test_durations_read_at_a_glance(seconds, text):
    assert format_duration(seconds) == text
