"""Issue #13 items 7-9: data faults caught before training, messages that quote the files, odd file names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.training.conftest import tiny_train_config

from egtr import EGTR, EGTRConfig, Predictor
from egtr.cli import main
from egtr.data.validate import validate_dataset
from egtr.inference.files import predict_files
from egtr.preprocessing import PreprocessorConfig
from egtr.training import run_training
from egtr.training.data_checks import DatasetCheckError

from .conftest import VG_CLASSES, VG_PREDICATES, photo, vg_specs, write_vg

NOT_UTF8 = "bad\udcff.jpg"  # the name b"bad\xff.jpg" on disk, as Python (and a JSON "\udcff" escape) spells it


def _planted_faults(root: Path) -> Path:
    """The faults `egtr train` used to accept and die on mid-epoch (or accept silently)."""
    specs = vg_specs()
    specs["train"].append(
        {"id": 20, "file_name": "missing.jpg", "image": None, "objects": [(1, [0.0, 0.0, 10.0, 10.0])]}
    )
    specs["test"].append(dict(specs["train"][0], file_name="copy.jpg"))  # image id 7 in train and in test
    write_vg(root, specs, VG_CLASSES, VG_PREDICATES)
    train = json.loads((root / "train.json").read_text())
    train["annotations"][1]["id"] = train["annotations"][0]["id"]  # duplicate annotation id
    (root / "train.json").write_text(json.dumps(train))
    rel = json.loads((root / "rel.json").read_text())
    rel["train"]["99"] = [[0, 1, 1]]  # relations for an image that is not in the split
    (root / "rel.json").write_text(json.dumps(rel))
    return root


def test_training_refuses_a_faulty_dataset_before_the_first_step(tmp_path: Path, capsys):
    root = _planted_faults(tmp_path / "vg")
    config = tiny_train_config(root, tmp_path / "run")
    with pytest.raises(DatasetCheckError) as error:
        run_training(config)
    report = str(error.value)
    for fault in (
        "missing.jpg, train.json, image 20, field file_name: image file not found",
        "image 7, field id: 7 is also in split 'train'",
        "field id: duplicate annotation id",
        "rel.json, train['99'], field train: relations for an image id that is not in the split",
    ):
        assert fault in report, report
    assert "error(s)" in report.splitlines()[0] and "before training" in report.splitlines()[0]
    assert not (tmp_path / "run" / "config.json").exists()  # stopped before anything was built or written

    config_file = tmp_path / "config.json"
    config.save(config_file)
    assert main(["train", "--config", str(config_file)]) == 2
    output = capsys.readouterr().err
    # Before: "error: ERROR: ..." and the deprecated `egtr data validate ROOT` spelling.
    assert output.startswith(f"error: {root}: ") and "error: ERROR" not in output and "Traceback" not in output
    assert f"`egtr data validate --data-root {root}` repeats the check" in output
    assert "missing.jpg" in output and "rel.json, train['99']" in output  # the full report, not its first line


def test_loader_errors_quote_the_file_that_holds_the_fault(tmp_path: Path):
    # Before: "train.json, image 7: relation 1 has predicate -1 outside 0..2" for a predicate 0 in rel.json.
    from egtr.data import DataError, VisualGenomeDataset

    root = write_vg(tmp_path / "vg", vg_specs(), VG_CLASSES, VG_PREDICATES)
    rel = json.loads((root / "rel.json").read_text())
    rel["train"]["7"].append([0, 1, 0])
    (root / "rel.json").write_text(json.dumps(rel))
    with pytest.raises(DataError) as error:
        VisualGenomeDataset(root, "train")
    assert str(error.value) == (
        "rel.json, train['7']: relation 1 [0, 1, 0] has predicate 0; rel.json rel_categories (after __background__) "
        "has 1..3"
    )


def test_negative_widths_are_quoted_as_written(tmp_path: Path):
    specs = vg_specs()
    specs["train"][0]["objects"].append((1, [50.0, 60.0, -20.0, 30.0]))
    root = write_vg(tmp_path / "vg", specs, VG_CLASSES, VG_PREDICATES)
    problems = [str(p) for p in validate_dataset(root, splits=("train",), decode_images=False)]
    assert any("empty box [50.0, 60.0, -20.0, 30.0]" in problem for problem in problems), problems


def test_a_file_name_that_is_not_utf8_is_reported_and_printable(tmp_path: Path, capsys):
    specs = vg_specs()
    specs["train"][0]["file_name"] = NOT_UTF8
    root = write_vg(tmp_path / "vg", specs, VG_CLASSES, VG_PREDICATES)
    assert (root / "images" / NOT_UTF8).is_file()  # the file exists: only its name is the problem
    problems = validate_dataset(root, splits=("train",), decode_images=False)
    (problem,) = [p for p in problems if p.severity == "error"]
    assert "the file name 'bad\\udcff.jpg' is" in str(problem) and "not valid UTF-8" in str(problem)
    str(problem).encode("utf-8")  # before: printing it to a UTF-8 terminal raised UnicodeEncodeError
    assert main(["data", "validate", "--data-root", str(root), "--split", "train", "--no-decode"]) == 1
    capsys.readouterr().out.encode("utf-8")


def test_predict_goes_on_after_a_file_name_that_is_not_utf8(tmp_path: Path):
    # Before: matplotlib's TypeError on the title, and the next image was never processed.
    images = tmp_path / "images"
    images.mkdir()
    photo("coffee").resize((96, 64)).save(images / NOT_UTF8)
    photo("astronaut").resize((64, 64)).save(images / "good.jpg")
    model = EGTR(EGTRConfig(backbone="resnet18", d_model=64, encoder_layers=1, decoder_layers=1, num_queries=4)).eval()
    predictor = Predictor(model, device="cpu", preprocessor=PreprocessorConfig(shortest_edge=64, longest_edge=64))
    report = predict_files(predictor, [images / NOT_UTF8, images / "good.jpg"], tmp_path / "out", progress=False)
    assert report.failures == {}
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == sorted(
        [NOT_UTF8.replace(".jpg", ".json"), NOT_UTF8.replace(".jpg", ".png"), "good.json", "good.png"]
    )
