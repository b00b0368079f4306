"""Issue #26: `egtr convert`, the model card, and what `push_to_hub` / `egtr hub push` upload.

The Hub cannot be reached from the test machines: `HfApi.create_repo` and `HfApi.upload_folder` are replaced by
recorders, which keep the files and the card as they were at the moment of the upload. The upload itself (HTTP,
authentication) is huggingface_hub's and is not exercised here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from tests.models.helpers import TINY

from egtr import EGTR, EGTRConfig
from egtr.cli import main
from egtr.models import read_checkpoint

HUB_FOLDER_FILES = ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
REPORT = {
    "metrics": {"R@50": 0.25, "graph_constraint/R@50": 0.25, "graph_constraint/mR@50": 0.125},
    "settings": {"dataset": {"kind": "vg", "split": "val", "num_images": 40}},
}


def _same_weights(first: EGTR, second: EGTR) -> bool:
    return all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


@pytest.fixture
def training_run(tmp_path: Path) -> Path:
    """A run folder as `egtr train` leaves it: summary.json, model/, evaluation_val.json."""
    run = tmp_path / "run"
    config = EGTRConfig(**TINY, class_names=["cup", "table", "plate", "spoon", "hand"])
    config.predicate_names = ["on", "near", "holding"]
    EGTR(config).save_pretrained(run / "model")
    (run / "summary.json").write_text(json.dumps({"passes": []}))
    (run / "evaluation_val.json").write_text(json.dumps(REPORT))
    return run


def test_convert_writes_a_folder_that_loads_with_a_card_quoting_the_runs_evaluation(training_run: Path, capsys):
    out = training_run.parent / "hub"
    assert main(["convert", str(training_run), "--out", str(out), "--repo-id", "acme/tiny-egtr"]) == 0
    assert sorted(path.name for path in out.iterdir()) == HUB_FOLDER_FILES
    assert _same_weights(EGTR.from_pretrained(out), EGTR.from_pretrained(training_run))
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: egtr\nlicense: apache-2.0\n")
    assert "| backbone | resnet18 |" in card and "| classes / predicates | 5 / 3 |" in card
    assert "## Class names (5)\n\n`cup`, `table`, `plate`, `spoon`, `hand`" in card
    assert "## Predicate names (3)\n\n`on`, `near`, `holding`" in card
    assert "vg val (40 images), from `evaluation_val.json`:" in card
    assert "| graph_constraint/R@50 | 0.2500 |" in card and "| R@50 |" not in card  # clear names only
    assert 'Predictor.from_pretrained("acme/tiny-egtr")' in card and "--model acme/tiny-egtr" in card
    assert "converted" in capsys.readouterr().out


def test_convert_of_the_released_artifact_in_float16_keeps_its_weights(reference_dir: Path, tmp_path: Path):
    # The released checkpoints store float16 values: stored in float16 again, they load back bit for bit.
    out = tmp_path / "hub"
    assert main(["convert", str(reference_dir / "artifact"), "--out", str(out), "--dtype", "float16"]) == 0
    converted = read_checkpoint(out)
    assert converted.layout == "egtr-directory"
    assert _same_weights(EGTR.from_checkpoint(converted), EGTR.from_pretrained(reference_dir / "artifact"))
    stored = load_file(out / "model.safetensors")
    assert {value.dtype for value in stored.values() if value.is_floating_point()} == {torch.float16}
    card = (out / "README.md").read_text()
    assert "No evaluation report came with this model" in card and "float16 (loaded as float32)" in card


def test_convert_refuses_the_detector_and_a_folder_in_use(tmp_path: Path, training_run: Path, capsys):
    detector = tmp_path / "detector"
    detector.mkdir()
    shutil.copy(training_run / "model" / "config.json", detector / "config.json")
    torch.save({"model.encoder.x": torch.zeros(1)}, detector / "pytorch_model.bin")
    assert main(["convert", str(detector), "--out", str(tmp_path / "a")]) == 2
    assert (
        "this is a pre-trained detector (config.json + pytorch_model.bin, no relation head)" in capsys.readouterr().err
    )
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    assert main(["convert", str(training_run), "--out", str(tmp_path / "busy")]) == 2
    assert "already exists and is not an empty folder" in capsys.readouterr().err


class RecordingHub:
    """Stands in for `HfApi`'s two calls; keeps what the folder held when it was uploaded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.files: list[str] = []
        self.card = ""

    def create_repo(self, repo_id: str, **kwargs: object) -> None:  # bound to the recorder, not to the HfApi
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs: object) -> SimpleNamespace:
        folder = Path(str(kwargs["folder_path"]))
        self.files = sorted(path.name for path in folder.iterdir())
        self.card = (folder / "README.md").read_text()
        self.calls.append(("upload_folder", {key: value for key, value in kwargs.items() if key != "folder_path"}))
        return SimpleNamespace(commit_url="https://huggingface.co/acme/tiny-egtr/commit/abc")


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> RecordingHub:
    huggingface_hub = pytest.importorskip("huggingface_hub", reason="the hub extra is not installed")
    recorder = RecordingHub()
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", recorder.create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", recorder.upload_folder)
    return recorder


def test_hub_push_uploads_the_folder_and_card_to_the_named_repository(training_run: Path, hub: RecordingHub, capsys):
    argv = ["hub", "push", str(training_run), "acme/tiny-egtr", "--revision", "dev", "--private", "--message", "v1"]
    assert main(argv) == 0
    assert hub.files == HUB_FOLDER_FILES
    assert "| graph_constraint/mR@50 | 0.1250 |" in hub.card
    assert hub.calls == [
        ("create_repo", {"repo_id": "acme/tiny-egtr", "private": True, "exist_ok": True}),
        ("upload_folder", {"repo_id": "acme/tiny-egtr", "revision": "dev", "commit_message": "v1"}),
    ]
    assert capsys.readouterr().out.strip().endswith("https://huggingface.co/acme/tiny-egtr/commit/abc")


def test_model_push_to_hub_uploads_the_in_memory_model(hub: RecordingHub):
    torch.manual_seed(0)
    model = EGTR(EGTRConfig(**TINY))
    url = model.push_to_hub("acme/tiny-egtr")
    assert url == "https://huggingface.co/acme/tiny-egtr/commit/abc"
    assert hub.files == HUB_FOLDER_FILES and "an in-memory EGTR model" in hub.card
    assert hub.calls[1][1]["commit_message"].startswith("EGTR model (egtr ")


def test_a_refused_upload_is_one_line(training_run: Path, hub: RecordingHub, monkeypatch, capsys):
    from unittest.mock import MagicMock

    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError

    def refuse(api: object, **kwargs: object) -> None:
        raise HfHubHTTPError("403 Forbidden: you have no write access to acme\nmore", response=MagicMock())

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", refuse)
    assert main(["hub", "push", str(training_run), "acme/tiny-egtr"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the INFO lines of loading the model
    assert error == "error: acme/tiny-egtr: the upload failed: 403 Forbidden: you have no write access to acme"
