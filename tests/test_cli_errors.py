"""Issue #23 B: errors that name their cause, as one `error: ...` line with exit 2 and no traceback."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
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


@pytest.mark.parametrize(
    ("command", "wrong"),
    [
        (["predict", str(ASTRONAUT), "--model", "no-such-model"], "exists and is a file, not a folder"),
        (["train", "--data-root", "no-such-data"], "exists and is a file, not a folder"),
        (["demo"], "exists and is a file, not a folder"),
        (["data", "synth"], "exists and is a file, not a folder"),
        (["data", "import", "coco-relations", "no-such-source"], "exists and is a file, not a folder"),
    ],
)
def test_an_out_that_is_a_file_is_refused_before_any_work(command: list[str], wrong: str, tmp_path: Path, capsys):
    # Before: the model loaded (here it does not even exist) and then raw errno text, exit 1.
    out = tmp_path / "results"
    out.write_text("not a folder")
    assert main([*command, "--out", str(out)]) == 2
    assert _error_line(capsys) == f"error: --out {out}: {wrong}"


@pytest.mark.parametrize("command", [["evaluate", "--model", "no-such-model"], ["benchmark", "--model", "nowhere"]])
def test_an_out_file_that_is_a_folder_is_refused_before_any_work(command: list[str], tmp_path: Path, capsys):
    assert main([*command, "--out", str(tmp_path)]) == 2
    assert _error_line(capsys) == f"error: --out {tmp_path}: is a folder; give a file name"


@pytest.fixture
def read_only_folder(tmp_path: Path):
    """A folder nothing can be written in: a read-only tmpfs where the tests run as root, else mode 0555."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode:
        pytest.skip("root, but no tmpfs can be mounted here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_read_only_out_is_refused_before_the_model_loads(read_only_folder: Path, capsys):
    # Before: every image computed, then each result discarded with "[Errno 30] Read-only file system", exit 1.
    assert main(["predict", str(ASTRONAUT), "--model", "no-such-model", "--out", str(read_only_folder)]) == 2
    error = _error_line(capsys)
    assert error.startswith(f"error: --out {read_only_folder}: cannot write in {read_only_folder} ("), error
    sub = read_only_folder / "sub"  # a folder to create there
    assert main(["predict", str(ASTRONAUT), "--model", "no-such-model", "--out", str(sub)]) == 2
    assert _error_line(capsys).startswith(f"error: --out {sub}: cannot write in {sub} (")
