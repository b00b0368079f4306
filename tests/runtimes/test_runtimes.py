"""Inference in three parts, any runtime: exported graphs reproduce the original code and PyTorch, in every command."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

import egtr
from egtr.cli import main
from egtr.fileio import current_umask
from egtr.inference import ModelInputs, OnnxRuntimeModel, OpenVinoModel, Predictor
from egtr.inference.export import ExportedModel
from egtr.inference.runtimes import OUTPUT_NAMES

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install 'egtr[onnx]'")
pytest.importorskip("openvino", reason="the openvino extra is not installed: pip install 'egtr[openvino]'")

PHOTOS = sorted((Path(egtr.__file__).parent / "assets").glob("*.jpg"))
SMALL = ["--size", "128", "--max-size", "192", "--no-progress"]


def _runtime(kind: str, onnx_folder: Path, openvino_folder: Path):
    if kind == "onnxruntime":
        return OnnxRuntimeModel(ExportedModel.read(onnx_folder))
    if kind == "openvino":
        return OpenVinoModel(ExportedModel.read(openvino_folder))
    return OpenVinoModel(ExportedModel.read(onnx_folder))  # OpenVINO reading the ONNX file directly


@pytest.fixture(scope="module")
def torch_model(reference_dir):
    return egtr.EGTR.from_pretrained(reference_dir / "artifact").eval()


@pytest.mark.parametrize("kind", ["onnxruntime", "openvino", "openvino-reading-onnx"])
def test_each_runtime_reproduces_the_original_code_and_pytorch_at_three_sizes(
    kind, exported_reference, exported_reference_openvino, torch_model, reference_inputs, reference_outputs
):
    runtime = _runtime(kind, exported_reference, exported_reference_openvino)
    # 1. the original code's outputs (tests/fixtures/reference: a padded batch of two at 160x224)
    outputs = runtime(
        ModelInputs(
            torch.from_numpy(reference_inputs["pixel_values"]), torch.from_numpy(reference_inputs["pixel_mask"])
        )
    )
    for name in OUTPUT_NAMES:
        assert np.abs(getattr(outputs, name).numpy() - reference_outputs[name]).max() <= 1e-4, name
    # 2. two more sizes in the same session (the graph's height, width and batch are really dynamic), padding included
    generator = torch.Generator().manual_seed(1)
    for batch, height, width in [(1, 97, 301), (3, 256, 130)]:
        pixel_values = torch.randn(batch, 3, height, width, generator=generator)
        pixel_mask = torch.ones(batch, height, width, dtype=torch.int64)
        pixel_mask[-1, height // 2 :, :] = 0
        pixel_values[-1, :, height // 2 :, :] = 0
        outputs = runtime(ModelInputs(pixel_values, pixel_mask))
        with torch.inference_mode():
            expected = torch_model(pixel_values, pixel_mask)
        for name in OUTPUT_NAMES:
            difference = (getattr(outputs, name) - getattr(expected, name)).abs().max().item()
            assert difference <= 1e-4, (name, batch, height, width, difference)


def test_the_export_folder_is_complete_and_says_what_it_is(exported_reference, exported_reference_openvino):
    onnx_files = sorted(path.name for path in exported_reference.iterdir())
    assert onnx_files == ["config.json", "export.json", "model.onnx", "preprocessor_config.json"]
    assert {"model.xml", "model.bin"} <= {path.name for path in exported_reference_openvino.iterdir()}
    manifest = json.loads((exported_reference / "export.json").read_text())
    assert manifest["opset"] >= 17 and manifest["dynamic"] == ["batch", "height", "width"]
    assert manifest["source"]["layout"] == "official-artifact" and len(manifest["source"]["weights_sha256"]) == 64
    assert max(manifest["verification"]["max_abs_difference"].values()) <= 1e-4
    assert manifest["verification"]["against"] == "torch"
    converted = json.loads((exported_reference_openvino / "export.json").read_text())
    assert converted["verification"]["against"] == "onnxruntime"
    assert converted["source"] == manifest["source"]
    mode = stat.S_IMODE(exported_reference.stat().st_mode)
    assert mode == 0o777 & ~current_umask()  # like a plain mkdir, not mkdtemp's 0700


def _triplets_and_scores(folder: Path) -> dict[str, tuple[list, list, list]]:
    results = {}
    for path in sorted(folder.glob("*.json")):
        graph = json.loads(path.read_text())
        triplets = [(r["subject"], r["predicate"], r["object"]) for r in graph["relations"]]
        boxes = [o["box"] for o in graph["objects"]]
        results[path.name] = (triplets, [r["score"] for r in graph["relations"]], boxes)
    return results


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_predict_json_of_the_shipped_photos_is_the_same_in_every_runtime(
    runtime, exported_reference, reference_dir, tmp_path
):
    common = ["predict", *map(str, PHOTOS), "--no-draw", *SMALL]
    assert main([*common, "--model", str(reference_dir / "artifact"), "--out", str(tmp_path / "torch")]) == 0
    code = main([*common, "--model", str(exported_reference), "--runtime", runtime, "--out", str(tmp_path / runtime)])
    assert code == 0
    expected, got = _triplets_and_scores(tmp_path / "torch"), _triplets_and_scores(tmp_path / runtime)
    assert expected.keys() == got.keys() and len(expected) == len(PHOTOS)
    for name, (triplets, scores, boxes) in expected.items():
        assert got[name][0] == triplets  # the same triplets in the same order
        np.testing.assert_allclose(got[name][1], scores, atol=1e-4)
        np.testing.assert_allclose(got[name][2], boxes, atol=1e-2)  # pixels


def test_given_boxes_through_onnx_runtime(exported_reference, reference_dir):
    options = {"device": "cpu", "size": 128, "max_size": 192, "top_k": 10}
    boxes = [[10.0, 20.0, 200.0, 300.0], [150.0, 40.0, 380.0, 260.0], [5.0, 5.0, 100.0, 90.0]]
    expected = Predictor.from_pretrained(reference_dir / "artifact", **options)(
        PHOTOS[0], boxes=boxes, labels=[1, 2, 3]
    )
    onnx = Predictor.from_pretrained(exported_reference, **options)
    assert onnx.runtime.name == "onnxruntime"
    got = onnx(PHOTOS[0], boxes=boxes, labels=[1, 2, 3])
    assert got.triplets() == expected.triplets()
    assert [o.query for o in got.objects] == [o.query for o in expected.objects]
    np.testing.assert_allclose([r.score for r in got.relations], [r.score for r in expected.relations], atol=1e-4)


def test_bulk_records_through_onnx_runtime(exported_reference, reference_dir, tmp_path):
    common = ["predict", *map(str, PHOTOS), "--output-format", "jsonl", *SMALL]
    assert main([*common, "--model", str(reference_dir / "artifact"), "--out", str(tmp_path / "torch")]) == 0
    assert main([*common, "--model", str(exported_reference), "--out", str(tmp_path / "onnx")]) == 0

    def records(folder: Path) -> dict[str, dict]:
        lines = [json.loads(line) for line in (folder / "shards" / "list-000000.jsonl").read_text().splitlines()]
        return {Path(record["image_path"]).name: record for record in lines}

    expected, got = records(tmp_path / "torch"), records(tmp_path / "onnx")
    assert expected.keys() == got.keys() and len(expected) == len(PHOTOS)
    for name, record in expected.items():
        relations = [(r["subject"], r["predicate"], r["object"]) for r in record["relations"]]
        assert [(r["subject"], r["predicate"], r["object"]) for r in got[name]["relations"]] == relations
        np.testing.assert_allclose(
            [r["score"] for r in got[name]["relations"]], [r["score"] for r in record["relations"]], atol=1e-4
        )
    settings = json.loads(next((tmp_path / "onnx").rglob("settings.json")).read_text())
    assert settings["prediction"]["runtime"] == "onnxruntime"


def test_benchmark_runs_an_exported_model(exported_reference, tmp_path, capsys):
    out = tmp_path / "benchmark.json"
    arguments = ["benchmark", "--model", str(exported_reference), "--warmup", "1", "--runs", "1", "--out", str(out)]
    assert main([*arguments, "--size", "128", "--max-size", "192"]) == 0
    result = json.loads(out.read_text())
    assert result["settings"]["runtime"] == "onnxruntime" and result["parameters"] is None
    assert "runtime: onnxruntime" in capsys.readouterr().out


def test_a_checkpoint_asked_for_another_runtime_is_exported_once_into_the_cache(
    exported_reference, reference_dir, tmp_path, monkeypatch
):
    import shutil

    import egtr.inference.loading as loading

    exports = []

    def fake_export(checkpoint, folder, format):  # the export itself is tested above; here: when it happens
        exports.append((checkpoint.weights_sha256, Path(folder), format))
        shutil.copytree(exported_reference, folder)
        return ExportedModel.read(folder)

    monkeypatch.setenv("EGTR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(loading, "export_model", fake_export)
    first = Predictor.from_pretrained(reference_dir / "artifact", runtime="openvino", device="cpu")
    second = Predictor.from_pretrained(reference_dir / "artifact", runtime="onnxruntime", device="cpu")
    assert [first.runtime.name, second.runtime.name] == ["openvino", "onnxruntime"]
    assert len(exports) == 1 and exports[0][1].is_relative_to(tmp_path / "cache") and exports[0][2] == "onnx"
    assert first.source["layout"] == "official-artifact"  # the model the user gave, not the cache folder


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--runtime", "torch"], "runs in onnxruntime or openvino, not torch"),
        (["--dtype", "bfloat16", "--runtime", "onnxruntime"], "onnxruntime runtime runs float32"),
        (["--device", "cuda", "--runtime", "onnxruntime"], "has no CUDAExecutionProvider"),
    ],
)
def test_a_runtime_that_cannot_run_the_model_is_one_line(exported_reference, tmp_path, capsys, arguments, message):
    code = main(["predict", str(PHOTOS[0]), "--model", str(exported_reference), "--out", str(tmp_path), *arguments])
    error = capsys.readouterr().err
    assert code == 2 and message in error and len(error.strip().splitlines()) == 1


def test_export_refuses_a_folder_in_use_and_an_old_opset(exported_reference, reference_dir, tmp_path, capsys):
    artifact = str(reference_dir / "artifact")
    assert main(["export", "--model", artifact, "--out", str(exported_reference)]) == 2
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert main(["export", "--model", artifact, "--out", str(tmp_path / "x"), "--opset", "16"]) == 2
    assert "opset 17 or later" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main(["export", "--model", str(exported_reference), "--out", str(tmp_path / "y")]) == 2
    assert "only an ONNX folder converts (to openvino)" in capsys.readouterr().err


def test_a_missing_extra_names_the_pip_command(exported_reference, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    code = main(["predict", str(PHOTOS[0]), "--model", str(exported_reference), "--out", str(tmp_path)])
    error = capsys.readouterr().err
    assert code == 2
    assert error.strip() == 'error: --runtime onnxruntime needs the onnx extra: pip install "egtr[onnx]"'


def test_the_old_module_paths_still_work_with_a_deprecation_warning():
    import importlib
    import sys

    for old, new in [
        ("egtr.postprocess", "egtr.inference.postprocess"),
        ("egtr.predict_files", "egtr.inference.files"),
    ]:
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
            module = importlib.import_module(old)
        assert module is importlib.import_module(new)


def test_commands_that_need_pytorch_weights_say_what_an_exported_folder_is(exported_reference, capsys):
    assert main(["info", "--model", str(exported_reference)]) == 2
    error = capsys.readouterr().err
    assert "an `egtr export` folder" in error and "need the original model" in error


def test_a_precision_the_runtime_cannot_run_is_refused_before_a_checkpoint_is_exported(
    reference_dir, tmp_path, monkeypatch, capsys
):
    import egtr.inference.loading as loading

    def no_export(*args, **kwargs):
        raise AssertionError("the checkpoint was exported before the settings were checked")

    monkeypatch.setenv("EGTR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(loading, "export_model", no_export)
    arguments = ["--runtime", "onnxruntime", "--dtype", "bfloat16", "--out", str(tmp_path / "out")]
    assert main(["predict", str(PHOTOS[0]), "--model", str(reference_dir / "artifact"), *arguments]) == 2
    assert "the onnxruntime runtime runs float32 graphs" in capsys.readouterr().err
