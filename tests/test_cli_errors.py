"""Issue #23 B: errors that name their cause, as one `error: ...` line with exit 2 and no traceback."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from tests.models.helpers import TINY

import egtr
from egtr import EGTR, EGTRConfig
from egtr.cli import main

ASTRONAUT = Path(egtr.__file__).parent / "assets" / "astronaut.jpg"
FAST = ["--size", "64", "--max-size", "96", "--device", "cpu", "--no-draw", "--no-progress"]


def _error_line(capsys: pytest.CaptureFixture) -> str:
    """The one line a user error prints (anything else on stderr fails the test)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = tmp_path_factory.mktemp("tiny") / "model"
    EGTR(EGTRConfig(**TINY)).save_pretrained(model_dir)
    return model_dir


def _predict(model: Path | str, out: Path, *extra: str) -> int:
    return main(["predict", str(ASTRONAUT), "--model", str(model), "--out", str(out), *FAST, *extra])


def test_a_checkpoint_of_other_sizes_lists_the_mismatched_tensors(tiny_model: Path, tmp_path: Path, capsys):
    # Before: "... it looks like an EGTR checkpoint. ..." and nothing about which tensors or shapes.
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config["egtr_config"]["num_labels"] = TINY["num_labels"] + 2  # the config says 7 classes, the weights have 5
    (model_dir / "config.json").write_text(json.dumps(config))
    assert _predict(model_dir, tmp_path / "out") == 2
    error = _error_line(capsys)
    assert "does not fit the EGTR model (it looks like an EGTR checkpoint): shape mismatches (" in error
    assert (
        f"class_embed.0.weight: file ({TINY['num_labels']}, {TINY['d_model']}) vs model (7, {TINY['d_model']})" in error
    )
    assert "..." not in error.split("shape mismatches")[0]


def test_not_a_checkpoint_is_named_without_advising_unsafe_loading(tmp_path: Path, capsys):
    # Before: PyTorch's text, which advises loading with weights_only=False (running code from the file).
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(ASTRONAUT.read_bytes())
    code_pickle = tmp_path / "model.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": argparse.Namespace(lr=1)}, code_pickle)
    assert _predict(photo, tmp_path / "out") == 2
    error = _error_line(capsys)
    assert error == f"error: {photo}: a JPEG image, not a model checkpoint"
    assert _predict(code_pickle, tmp_path / "out") == 2
    error = _error_line(capsys)
    assert (
        error
        == f"error: {code_pickle}: a pickle that needs code execution to load; egtr only reads weights_only pickles"
    )


def test_a_wrongly_typed_field_of_an_official_config_names_file_and_field(reference_dir: Path, tmp_path: Path, capsys):
    # Before: torch's "empty(): argument 'size' ..." from deep inside the model's constructor.
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    config = json.loads((reference_dir / "artifact" / "config.json").read_text())
    config["num_queries"] = "sixteen"
    (artifact / "config.json").write_text(json.dumps(config))
    os.symlink(reference_dir / "artifact" / "checkpoints", artifact / "checkpoints")
    assert _predict(artifact, tmp_path / "out") == 2
    error = _error_line(capsys)
    assert error == f"error: {artifact / 'config.json'}: EGTRConfig.num_queries is 'sixteen' (str); expected int"


def test_a_symlink_loop_as_the_model_is_named(tmp_path: Path, capsys):
    # Before: "no such file or directory".
    loop = tmp_path / "model"
    os.symlink(loop, loop)
    assert _predict(loop, tmp_path / "out") == 2
    assert _error_line(capsys) == f"error: {loop}: symlink loop (following its links never reaches a file)"
