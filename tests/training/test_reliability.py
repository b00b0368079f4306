"""Issue #13 items 1-5: resume continues exactly, the seed fixes the run, the run directory is locked, and a
diverged model or a full disk stops the run with one line (tiny runs on CPU, bit-for-bit comparisons)."""

from __future__ import annotations

import csv
import dataclasses
import errno
import logging
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from tests.training.conftest import tiny_train_config

from egtr.cli import main
from egtr.runlock import RunLock, RunLockedError
from egtr.training import checkpoint_io as checkpoint_io_module
from egtr.training import run_training

SEED = 7


def _train_losses(run_dir: Path) -> dict[int, str]:
    """step -> train_loss as written (the text, so that equality is bit for bit) over every (re)start."""
    losses: dict[int, str] = {}
    for metrics in sorted((run_dir / "main").glob("version_*/metrics.csv")):
        with open(metrics, newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("train_loss"):
                    assert int(row["step"]) not in losses, f"step {row['step']} trained twice"
                    losses[int(row["step"])] = row["train_loss"]
    return losses


def _last(run_dir: Path) -> dict:
    return torch.load(run_dir / "main" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def runs(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An uninterrupted 2-epoch run; the same run stopped after epoch 1 and resumed; and a resume with new rates."""
    base = tmp_path_factory.mktemp("reliability")
    config = tiny_train_config(synthetic_root, base / "uninterrupted", max_epochs=2, seed=SEED)

    # A kill during the very first checkpoint write leaves a temporary file: the next run removes it.
    stale = base / "uninterrupted" / "main" / "checkpoints" / ".last.ckpt.k1ll3d.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"partial checkpoint")
    run_training(config)

    interrupted = base / "interrupted"
    run_training(dataclasses.replace(config, output_dir=str(interrupted), max_epochs=1))
    # What a kill right after epoch 0's checkpoints leaves: the pass is not marked done, no final model.
    for name in ("main/done.json", "summary.json"):
        (interrupted / name).unlink()
    shutil.rmtree(interrupted / "model")
    shutil.copytree(interrupted, base / "new_rates")
    # A kill between writing a new best checkpoint and deleting the old one leaves a best file last.ckpt does not know.
    orphan = interrupted / "main" / "checkpoints" / "epoch=05-validation_loss=0.0001.ckpt"
    shutil.copy(interrupted / "main" / "checkpoints" / "last.ckpt", orphan)
    assert main(["train", "--resume", "--out", str(interrupted), "--max-epochs", "2"]) == 0
    return {"base": base, "uninterrupted": base / "uninterrupted", "interrupted": interrupted}


@pytest.mark.slow
def test_resumed_run_matches_the_uninterrupted_one_step_for_step(runs: dict[str, Path]):
    # Before: the model was built before seeding (different step-0 losses) and a resumed epoch replayed epoch 0's
    # shuffle order and random draws.
    uninterrupted = _train_losses(runs["uninterrupted"])
    resumed = _train_losses(runs["interrupted"])
    assert sorted(uninterrupted) == sorted(resumed) == [0, 1, 2, 3]
    assert resumed == uninterrupted  # bit for bit, also the steps after the resume
    final_a, final_b = _last(runs["uninterrupted"])["state_dict"], _last(runs["interrupted"])["state_dict"]
    assert all(torch.equal(final_a[key], final_b[key]) for key in final_a)


def test_files_a_kill_leaves_are_removed(runs: dict[str, Path]):
    names = sorted(os.listdir(runs["uninterrupted"] / "main" / "checkpoints"))
    assert not [name for name in names if name.endswith(".tmp")]
    interrupted = sorted(os.listdir(runs["interrupted"] / "main" / "checkpoints"))
    assert "epoch=05-validation_loss=0.0001.ckpt" not in interrupted
    assert len(interrupted) == 2 and "last.ckpt" in interrupted  # last + one best


def test_resume_applies_the_new_learning_rates(runs: dict[str, Path], capsys: pytest.CaptureFixture):
    run_dir = runs["base"] / "new_rates"
    before = {group["name"]: group for group in _last(run_dir)["optimizer_states"][0]["param_groups"]}
    assert before["body"]["lr"] == 2e-4
    capsys.readouterr()
    code = main(["train", "--resume", "--out", str(run_dir), "--max-epochs", "2", "lr=1e-5", "weight_decay=0.01"])
    assert code == 0
    after = {group["name"]: group for group in _last(run_dir)["optimizer_states"][0]["param_groups"]}
    assert after["body"]["lr"] == 1e-5 and after["body"]["weight_decay"] == 0.01
    assert after["backbone"]["lr"] == before["backbone"]["lr"]  # what was not asked for stays
    log = capsys.readouterr().err  # the CLI logs to stderr (its handler replaces pytest's log capture)
    assert "body lr 0.0002 -> 1e-05" in log and "lr: 0.0002 -> 1e-05" in log
    saved = (run_dir / "config.json").read_text()
    assert '"lr": 1e-05' in saved  # the run's saved config says what it trains with now


def test_a_second_run_into_a_live_run_directory_is_refused(synthetic_root: Path, tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the "first run": holds the lock until killed
        try:
            RunLock(run_dir, "egtr training (egtr stage)").acquire()
            os.write(write_end, b"x")
            signal.pause()
        finally:
            os._exit(0)
    try:
        assert os.read(read_end, 1) == b"x"
        config = tiny_train_config(synthetic_root, run_dir)
        with pytest.raises(RunLockedError, match=rf"{run_dir} is in use by egtr training .*pid {child} on"):
            run_training(config)
        assert main(["train", "--config", _saved(config, tmp_path), "--out", str(run_dir)]) == 2
        config.save(run_dir / "config.json")
        assert main(["train", "--resume", "--out", str(run_dir)]) == 2
        error = capsys.readouterr().err
        assert f"pid {child}" in error and "Traceback" not in error
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    # A killed holder leaves no stuck lock.
    with RunLock(run_dir) as lock:
        assert lock.held


def _saved(config, tmp_path: Path) -> str:
    path = tmp_path / "config.json"
    config.save(path)
    return str(path)


def test_a_diverging_run_stops_cleanly_before_the_matcher(synthetic_root: Path, tmp_path: Path, capsys):
    # Before: lr 1e6 gave NaN boxes at step 1 and scipy's "matrix contains invalid numeric entries" traceback.
    config = tiny_train_config(
        synthetic_root,
        tmp_path / "run",
        max_epochs=1,
        lr=1e6,
        lr_backbone=1e6,
        lr_relation_head=1e6,
        gradient_clip_val=0.0,
    )
    with pytest.raises(SystemExit) as stop:  # the CLI's exit with status 1 and this message on stderr
        main(["train", "--config", _saved(config, tmp_path)])
    error = str(stop.value.code)
    assert error.startswith("error: non-finite model outputs (class logits or boxes)") and "\n" not in error, error
    # Before: "precision=32-true or bf16-mixed instead of 16-mixed" and "Resume from the last checkpoint" (none).
    assert "--dtype float32 or bfloat16 instead of float16" in error and "precision=" not in error, error
    assert error.endswith("no checkpoint was completed yet; start again with the same command and lr=<a lower rate>")
    assert "--resume" not in error, error
    assert not _error_lines(capsys)  # nothing else: no traceback, no matcher ValueError


def test_a_full_disk_is_one_line_naming_the_surviving_checkpoint(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    config = tiny_train_config(synthetic_root, tmp_path / "run", max_epochs=1, checkpoint_every_n_steps=1)
    real_save = checkpoint_io_module.torch.save
    saves = []

    def save_until_the_disk_is_full(payload, stream):
        saves.append(payload["global_step"])
        if payload["global_step"] > 1:  # the disk fills up after the checkpoint of step 1
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(payload, stream)

    monkeypatch.setattr(checkpoint_io_module.torch, "save", save_until_the_disk_is_full)
    with pytest.raises(SystemExit) as stop:
        main(["train", "--config", _saved(config, tmp_path)])
    last = tmp_path / "run" / "main" / "checkpoints" / "last.ckpt"
    error = str(stop.value.code)
    assert "\n" not in error and not _error_lines(capsys)
    assert error.startswith("error: no space left on the device writing "), error
    assert error.endswith(f"the last complete checkpoint is {last} (epoch 0, step 1)"), error
    assert _last(tmp_path / "run")["global_step"] == 1
    assert not [name for name in os.listdir(last.parent) if name.endswith(".tmp")]


def _error_lines(capsys: pytest.CaptureFixture) -> list[str]:
    """The lines of stdout + stderr that report an error (Lightning prints its model summary table around them)."""
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text, text
    return [line for line in text.splitlines() if line.startswith("error:") or "Error" in line]


def _corrupt_first_training_image(synthetic_root: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the tiny world whose first training image of epoch 0 (in the seed's order) is truncated."""
    from egtr.data import VisualGenomeDataset
    from egtr.training.resume import EpochShuffleSampler

    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    dataset = VisualGenomeDataset(root, "train")
    first = next(iter(EpochShuffleSampler(len(dataset), SEED)))
    image = dataset.image_path(first)
    image.write_bytes(image.read_bytes()[:200])
    return root, image


def test_an_unreadable_training_image_stops_the_run_with_its_path(synthetic_root: Path, tmp_path: Path, capsys):
    # Before: a DataError traceback from inside the data loader at the step that drew the image.
    root, image = _corrupt_first_training_image(synthetic_root, tmp_path)
    config = tiny_train_config(root, tmp_path / "run", max_epochs=1, seed=SEED)
    assert main(["train", "--config", _saved(config, tmp_path)]) == 2
    (error,) = _error_lines(capsys)
    assert error.startswith(f"error: {image}: corrupt or truncated image") and "unreadable_images=skip" in error


def test_unreadable_training_images_can_be_skipped_and_counted(
    synthetic_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    root, image = _corrupt_first_training_image(synthetic_root, tmp_path)
    config = tiny_train_config(root, tmp_path / "run", max_epochs=1, seed=SEED, unreadable_images="skip")
    with caplog.at_level(logging.WARNING):
        result = run_training(config)
    assert result.passes[0].global_step == 2  # both steps trained, the first one on the readable image only
    assert f"skipped an unreadable image: {image}: corrupt or truncated image" in caplog.text
    assert "epoch 0: 1 unreadable image(s) skipped" in caplog.text
    with open(tmp_path / "run" / "main" / "version_0" / "metrics.csv", newline="") as handle:
        counts = [float(row["unreadable_images"]) for row in csv.DictReader(handle) if row.get("unreadable_images")]
    assert counts == [1.0]
