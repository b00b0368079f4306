"""The one loader: every layout resolves through `read_checkpoint`, each file is read once, and the
entry points (EGTR, Predictor, evaluation, the CLI) accept the same paths."""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil

import pytest
import torch
from tests.models.helpers import TINY

from egtr import EGTR, CheckpointError, EGTRConfig, Predictor
from egtr.models.checkpoint import read_checkpoint
from egtr.preprocessing import PreprocessorConfig

RECORDED = PreprocessorConfig(96, 160)


@pytest.fixture()
def tiny_model() -> EGTR:
    torch.manual_seed(0)
    return EGTR(EGTRConfig(**TINY)).eval()


def _lightning_checkpoint(model: EGTR, path: pathlib.Path) -> None:
    """What `egtr train` writes: Lightning's layout with the model under `model.` and its config inside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "epoch": 2,
        "global_step": 10,
        "state_dict": {f"model.{key}": value for key, value in model.state_dict().items()},
        "egtr_model_config": model.config.to_dict(),
    }
    torch.save(payload, path)


@pytest.fixture()
def training_run(tmp_path, tiny_model) -> pathlib.Path:
    """An `egtr train` run folder: summary.json, model/, and a pass folder main/ with its checkpoints."""
    run = tmp_path / "run"
    tiny_model.save_pretrained(run / "model", preprocessor=RECORDED)
    (run / "summary.json").write_text(json.dumps({"passes": []}))
    tiny_model.config.save(run / "main" / "config.json")
    RECORDED.save(run / "main")
    _lightning_checkpoint(tiny_model, run / "main" / "checkpoints" / "epoch=02-validation_loss=0.5000.ckpt")
    _lightning_checkpoint(tiny_model, run / "main" / "checkpoints" / "last.ckpt")
    return run


def _same_weights(a: EGTR, b: EGTR) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize(
    ("relative", "layout"),
    [
        ("", "training-run"),
        ("model", "egtr-directory"),
        ("main", "training-pass"),
        ("main/checkpoints/last.ckpt", "checkpoint-file"),
        ("main/checkpoints/epoch=02-validation_loss=0.5000.ckpt", "checkpoint-file"),
    ],
)
def test_every_layout_of_a_training_run_loads_the_same_model(training_run, tiny_model, relative, layout):
    checkpoint = read_checkpoint(training_run / relative)
    assert checkpoint.layout == layout
    assert checkpoint.preprocessor == RECORDED
    assert _same_weights(EGTR.from_checkpoint(checkpoint), tiny_model)
    predictor = Predictor.from_pretrained(training_run / relative, device="cpu")
    assert predictor.preprocessor == RECORDED
    assert predictor.source is not None and predictor.source["layout"] == layout


def test_the_official_artifact_and_its_file(reference_dir):
    artifact = reference_dir / "artifact"
    assert read_checkpoint(artifact).layout == "official-artifact"
    file = next((artifact / "checkpoints").glob("*.ckpt"))
    checkpoint = read_checkpoint(file)
    assert checkpoint.layout == "checkpoint-file"
    assert checkpoint.weights_sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
    assert checkpoint.provenance()["weights_file"] == str(file)


def test_each_file_is_read_once(training_run, monkeypatch):
    reads: list[str] = []
    original = pathlib.Path.read_bytes

    def counting(self: pathlib.Path) -> bytes:
        reads.append(self.name)
        return original(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", counting)
    Predictor.from_pretrained(training_run / "main" / "checkpoints" / "last.ckpt", device="cpu")
    assert reads == ["last.ckpt"]
    reads.clear()
    Predictor.from_pretrained(training_run, device="cpu")
    assert reads == ["model.safetensors"]


def test_reading_a_lightning_checkpoint_does_not_need_lightning(training_run):
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['lightning'] = None; sys.modules['pytorch_lightning'] = None\n"
        "from egtr.models import read_checkpoint\n"
        f"print(read_checkpoint({str(training_run / 'main' / 'checkpoints' / 'last.ckpt')!r}).layout)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "checkpoint-file"


def test_config_json_given_as_the_model_says_to_pass_the_folder(training_run):
    with pytest.raises(CheckpointError, match=r"config.json: this is the model's configuration, not its weights"):
        read_checkpoint(training_run / "model" / "config.json")


def test_a_folder_without_a_model_says_what_was_expected(tmp_path):
    with pytest.raises(CheckpointError, match=r"not a model directory: no config\.json"):
        read_checkpoint(tmp_path)


def test_a_corrupt_weights_file_is_named(training_run):
    (training_run / "model" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"model.safetensors: not a readable safetensors file"):
        read_checkpoint(training_run / "model")


def test_save_and_reload_keeps_the_preprocessing(tmp_path, training_run):
    """A model saved by `save_pretrained` after loading prepares images exactly as before."""
    model = EGTR.from_pretrained(training_run)
    model.save_pretrained(tmp_path / "copy")
    assert Predictor.from_pretrained(tmp_path / "copy", device="cpu").preprocessor == RECORDED
    shutil.rmtree(tmp_path / "copy")
