"""Kill a training process (SIGKILL) after a checkpoint exists, resume it, and check that nothing is lost."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tests.training.conftest import tiny_train_config

from egtr.cli import main

STEPS_PER_EPOCH = 2


def read_steps(metrics_file: Path) -> list[int]:
    with open(metrics_file, newline="") as handle:
        return sorted({int(row["step"]) for row in csv.DictReader(handle) if row.get("train_loss")})


@pytest.mark.slow
def test_killed_run_resumes_where_it_stopped(synthetic_root: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    config = tiny_train_config(synthetic_root, run_dir, max_epochs=40, limit_train_batches=STEPS_PER_EPOCH)
    config_file = tmp_path / "config.json"
    config.save(config_file)
    process = subprocess.Popen(
        [sys.executable, "-m", "egtr.cli", "train", "--config", str(config_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = run_dir / "main" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 180
    killed_at_step = None
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if last.is_file():
                # Atomic writes: whatever moment we look, last.ckpt is a complete checkpoint.
                step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
                if step >= 2 * STEPS_PER_EPOCH:
                    process.send_signal(signal.SIGKILL)
                    killed_at_step = step
                    break
            time.sleep(0.2)
    finally:
        if process.poll() is None and killed_at_step is None:
            process.kill()
        process.wait(timeout=30)
    assert killed_at_step is not None, f"no checkpoint before the deadline: {process.stderr.read()[-2000:]}"
    assert process.returncode == -signal.SIGKILL

    checkpoint = torch.load(last, map_location="cpu", weights_only=True)  # may be newer than what we saw
    resumed_epoch = checkpoint["epoch"] + 1  # epoch-end checkpoints: training continues with the next epoch
    final_epochs = resumed_epoch + 2
    code = main(["train", "--resume", "--output-dir", str(run_dir), "--max-epochs", str(final_epochs)])
    assert code == 0

    final = torch.load(last, map_location="cpu", weights_only=True)
    first_run_steps = read_steps(run_dir / "main" / "version_0" / "metrics.csv")
    resumed_steps = read_steps(run_dir / "main" / "version_1" / "metrics.csv")
    assert resumed_steps[0] == checkpoint["global_step"]  # the step count continues
    # Every remaining epoch trained exactly once: the steps run on to the last one, without gaps or repeats.
    assert resumed_steps == list(range(checkpoint["global_step"], final_epochs * STEPS_PER_EPOCH))
    # last.ckpt holds the final state, also when the last epochs did not improve the validation loss (a plain
    # Lightning ModelCheckpoint then left it at the last improvement: BestAndLastCheckpoint).
    assert final["global_step"] == final_epochs * STEPS_PER_EPOCH and final["epoch"] == final_epochs - 1
    assert first_run_steps[0] == 0 and first_run_steps[-1] >= checkpoint["global_step"] - 1  # first run kept
    assert (run_dir / "model" / "model.safetensors").is_file()
    assert not any(name.endswith(".tmp") for name in os.listdir(last.parent))
