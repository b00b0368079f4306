"""Issue #23 A: a command stopped by SIGTERM (kill, a scheduler) or SIGINT (Ctrl-C) exits with 143 / 130 and one line
saying what was saved and how to continue, and leaves no temporary file. Real processes, real signals, sent once the
command has reached a known point (a file it wrote); every wait is bounded."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.training.conftest import tiny_model_config, tiny_train_config

from egtr.models.egtr import EGTR

WAIT_SECONDS = 300


def _stop_when(command: list[str], ready: Callable[[], bool], signal_number: int, log: Path) -> tuple[int, list[str]]:
    """Run `egtr COMMAND`, send `signal_number` once `ready()`; returns (exit status, stderr lines)."""
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "egtr.cli", *command], stdout=subprocess.DEVNULL, stderr=stderr, text=True
        )
        deadline = time.monotonic() + WAIT_SECONDS
        try:
            while process.poll() is None and time.monotonic() < deadline and not ready():
                time.sleep(0.05)
            assert process.poll() is None, f"ended before the signal:\n{log.read_text()[-3000:]}"
            assert ready(), f"not ready after {WAIT_SECONDS} s:\n{log.read_text()[-3000:]}"
            process.send_signal(signal_number)
            process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    lines = log.read_text().splitlines()
    assert not any("Traceback" in line for line in lines), "\n".join(lines[-40:])
    return process.returncode, lines


def _temporaries(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.name.endswith(".tmp")]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "signal_number", "exit_code"),
    [("train", signal.SIGTERM, 143), ("pretrain-detector", signal.SIGINT, 130)],
)
def test_a_stopped_training_exits_nonzero_naming_the_checkpoint_to_resume(
    synthetic_root: Path, tmp_path: Path, command: str, signal_number: int, exit_code: int
) -> None:
    # Before: SIGTERM exited 0 without a word (Lightning's graceful stop ends with SystemExit()), SIGINT with 1.
    run_dir = tmp_path / "run"
    config = tiny_train_config(synthetic_root, run_dir, max_epochs=200)
    if command == "pretrain-detector":
        config = dataclasses.replace(config, stage="detector")
    config.save(tmp_path / "config.json")
    last = run_dir / "main" / "checkpoints" / "last.ckpt"
    code, lines = _stop_when(
        [command, "--config", str(tmp_path / "config.json")], last.is_file, signal_number, tmp_path / "log"
    )
    assert code == exit_code
    name = signal.Signals(signal_number).name
    assert lines[-1].startswith(f"stopped by {name}: the last complete checkpoint is {last} (epoch "), lines[-1]
    assert lines[-1].endswith(f"continue with `egtr {command} --resume --out {run_dir}`"), lines[-1]
    assert not _temporaries(run_dir)


@pytest.mark.slow
def test_a_stopped_predict_keeps_the_images_written_and_counts_them(synthetic_root: Path, tmp_path: Path) -> None:
    # Before: SIGTERM ended the process with no message (status -15), SIGINT with "interrupted" and no count.
    model_dir = tmp_path / "model"
    EGTR(tiny_model_config()).save_pretrained(model_dir)
    images = tmp_path / "images"
    images.mkdir()
    sources = sorted((synthetic_root / "images").glob("*.png"))
    total = 1000
    for index in range(total):  # hard links: many inputs, no copies
        os.link(sources[index % len(sources)], images / f"{index:04d}.png")
    out = tmp_path / "out"
    command = ["predict", str(images), "--model", str(model_dir), "--out", str(out), "--no-draw", "--no-progress"]
    code, lines = _stop_when(command, lambda: len(list(out.glob("*.json"))) >= 3, signal.SIGTERM, tmp_path / "log")
    assert code == 143
    written = sorted(out.glob("*.json"))
    for path in written:
        json.loads(path.read_text())  # complete
    assert lines[-1].startswith(f"stopped by SIGTERM: {len(written)} of {total} images written to {out}"), lines[-1]
    assert lines[-1].endswith(f"{total - len(written)} not processed; run the command again for those"), lines[-1]
    assert 3 <= len(written) < total and not _temporaries(out)


@pytest.mark.slow
def test_a_stopped_demo_says_what_it_keeps_and_that_a_rerun_continues(tmp_path: Path) -> None:
    # Before: `kill -TERM` in the middle of training ended `egtr demo` with status 0 and no message.
    out = tmp_path / "demo"
    last = out / "detector" / "main" / "checkpoints" / "last.ckpt"
    code, lines = _stop_when(["demo", "--quick", "--out", str(out)], last.is_file, signal.SIGTERM, tmp_path / "log")
    assert code == 143
    message = lines[-1]
    assert message.startswith(f"stopped by SIGTERM: finished steps kept in {out / 'demo.json'}: world; "), message
    assert f"step detector: the last complete checkpoint is {last} (epoch " in message
    assert message.endswith(
        f"run `egtr demo --out {out} --quick` again to continue (finished steps are reused, a training resumes)"
    ), message
    assert json.loads((out / "demo.json").read_text())["steps"].keys() == {"world"}
    assert not _temporaries(out)
