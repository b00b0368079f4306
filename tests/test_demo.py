"""`egtr demo`: the quick variant end to end (every artifact, better than untrained), reuse, restart, settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from egtr.cli import main
from egtr.demo import (
    OUTPUT_ENTRIES,
    STATE_FILE,
    STEPS,
    DemoResult,
    DemoSettings,
    clear_outputs,
    format_summary,
    run_demo,
)
from egtr.models.egtr import EGTR
from egtr.preprocessing import PreprocessorConfig, load_preprocessor_config


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory):
    """One `--quick` run through the CLI, shared by the tests below (it is the expensive part)."""
    out_dir = tmp_path_factory.mktemp("demo") / "out"
    assert main(["demo", "--quick", "--out", str(out_dir)]) == 0
    return out_dir


@pytest.mark.slow
def test_quick_demo_writes_every_artifact(quick_demo: Path) -> None:
    state = json.loads((quick_demo / STATE_FILE).read_text())
    assert set(state["steps"]) == set(STEPS)
    assert state["settings"] == DemoSettings.quick().to_dict()
    data = quick_demo / "data"
    for name in ("train.json", "val.json", "test.json", "rel.json", "synthetic.json"):
        assert (data / name).is_file(), name
    for run in ("detector", "egtr"):
        assert (quick_demo / run / "model" / "config.json").is_file(), run
        assert (quick_demo / run / "model" / "model.safetensors").is_file(), run
    for name in ("trained", "untrained"):
        metrics = json.loads((quick_demo / "evaluation" / f"test_{name}.json").read_text())["metrics"]
        assert "graph_constraint/recall@50" in metrics
    drawings = sorted((quick_demo / "drawings").glob("*.png"))
    assert len(drawings) == DemoSettings.quick().num_drawings
    assert len(list((quick_demo / "drawings").glob("*.json"))) == len(drawings)
    assert all(path.stat().st_size > 1000 for path in drawings)


@pytest.mark.slow
def test_quick_demo_beats_an_untrained_model(quick_demo: Path) -> None:
    metrics = json.loads((quick_demo / STATE_FILE).read_text())["steps"]["evaluate"]["metrics"]
    trained = metrics["trained"]["graph_constraint/recall@50"]
    untrained = metrics["untrained"]["graph_constraint/recall@50"]
    assert trained > untrained, (trained, untrained)


@pytest.mark.slow
def test_demo_model_loads_and_predicts(quick_demo: Path, tmp_path: Path) -> None:
    """The saved model is in our format: `EGTR.from_pretrained` and `egtr predict` work on it afterwards, at the
    size it was trained at without being told (its preprocessor_config.json)."""
    model_dir = quick_demo / "egtr" / "model"
    model = EGTR.from_pretrained(model_dir)
    assert model.config.class_names[0] == "circle"
    size = DemoSettings.quick().image_size
    assert load_preprocessor_config(model_dir) == PreprocessorConfig(size, 2 * size)
    image = max((quick_demo / "data" / "images").glob("*.png"))
    code = main(["predict", "--model", str(model_dir), "--out", str(tmp_path), "--no-progress", str(image)])
    assert code == 0
    assert (tmp_path / f"{image.stem}.json").is_file() and (tmp_path / f"{image.stem}.png").is_file()


@pytest.mark.slow
def test_second_run_reuses_every_step(quick_demo: Path, capsys: pytest.CaptureFixture) -> None:
    before = (quick_demo / "egtr" / "model" / "model.safetensors").stat().st_mtime_ns
    result = run_demo(quick_demo, quick=True)
    assert result.reused == list(STEPS)
    assert (quick_demo / "egtr" / "model" / "model.safetensors").stat().st_mtime_ns == before
    output = capsys.readouterr().out
    assert "Summary" in output and "(reused)" in output and str(result.model_dir) in output
    assert "--size" not in output  # the model directory records its size


@pytest.mark.slow
def test_other_settings_in_the_same_folder_are_refused(quick_demo: Path) -> None:
    with pytest.raises(ValueError, match="--restart"):
        run_demo(quick_demo, quick=False)
    assert main(["demo", "--out", str(quick_demo)]) == 2


def test_summary_hints_the_size_only_for_a_model_without_preprocessor_config(tmp_path: Path) -> None:
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "synthetic.json").write_text(json.dumps({"image_size": 128}))
    model_dir = tmp_path / "egtr" / "model"
    model_dir.mkdir(parents=True)
    result = DemoResult(tmp_path, model_dir, tmp_path / "data", metrics={}, untrained_metrics={}, drawings=[])
    assert "--size 128 --max-size 256" in format_summary(result)  # exported before the file existed
    PreprocessorConfig(128, 256).save(model_dir)
    summary = format_summary(result)
    assert "--size" not in summary and f"egtr predict --model {model_dir} --out" in summary


def test_clear_outputs_removes_only_the_demo_entries(tmp_path: Path) -> None:
    for name in OUTPUT_ENTRIES:
        if name.endswith(".json"):
            (tmp_path / name).write_text("{}")
        else:
            (tmp_path / name / "inner").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "mine").mkdir()
    clear_outputs(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mine", "notes.txt"]


def test_unreadable_state_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=STATE_FILE):
        run_demo(tmp_path, quick=True, echo=lambda line: None)


@pytest.mark.parametrize("settings", [DemoSettings.full(), DemoSettings.quick()])
def test_settings_build_valid_configs(settings: DemoSettings, tmp_path: Path) -> None:
    model_config = settings.model_config()
    assert not model_config.freeze_backbone_stem
    assert model_config.num_labels == 8 and model_config.num_rel_labels == 6
    data_config = settings.data_config(tmp_path)
    assert data_config.horizontal_flip_prob == 0.0  # "left of" / "touching" are directional
    assert data_config.train_sizes == (settings.image_size,) and data_config.eval_size == settings.image_size
