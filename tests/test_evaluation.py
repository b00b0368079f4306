"""`evaluate_model` and `egtr evaluate` end to end: synthetic dataset, tiny untrained model, saved predictions."""

import json

import numpy as np
import pytest
import torch

from egtr.cli import main
from egtr.config import EGTRConfig
from egtr.data import DataConfig
from egtr.data.synthetic import CLASS_NAMES, PREDICATE_NAMES, generate_synthetic_dataset
from egtr.fileio import file_sha256
from egtr.metrics import evaluate_predictions_file
from egtr.model_evaluation import evaluate_model
from egtr.models import EGTR


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = generate_synthetic_dataset(
        tmp_path_factory.mktemp("world"), num_train=4, num_val=1, num_test=4, image_size=96
    )
    torch.manual_seed(0)
    config = EGTRConfig(
        backbone="resnet18",
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        num_queries=10,
        num_labels=len(CLASS_NAMES),
        num_rel_labels=len(PREDICATE_NAMES),
    )
    model_dir = root / "tiny_model"
    EGTR(config).save_pretrained(model_dir)
    return root, model_dir


def test_evaluate_model_records_everything_and_is_reproducible_from_the_file(world, tmp_path):
    root, model_dir = world
    data_config = DataConfig.for_synthetic(str(root), image_size=96)
    report = evaluate_model(
        model_dir,
        data_config,
        "test",
        batch_size=2,
        seen_triplets="train",
        predictions_path=tmp_path / "predictions.npz",
        progress=False,
    )
    metrics = report.metrics
    for key in (
        "(single)R@20",
        "(single)mR@100",
        "R@50",
        "mR@50",
        "AP50",
        "graph_constraint/zero_shot_recall@50",
    ):
        assert key in metrics
    assert all(0.0 <= metrics[key] <= 1.0 for key in ("(single)R@100", "R@100", "AP50"))
    assert metrics["(single)R@20"] <= metrics["(single)R@50"] <= metrics["(single)R@100"]
    settings = report.settings
    assert settings["checkpoint_sha256"] == file_sha256(model_dir / "model.safetensors")
    assert settings["image_size"] == {"shorter_side": 96, "max_longer_side": 192}
    assert settings["top_k"] == 100 and settings["ks"] == [20, 50, 100] and settings["dataset"]["num_images"] == 4
    assert settings["code_version"]["egtr"] and settings["coco_ground_truth"].endswith("test.json")
    # The saved file (with the ground truth written next to it) gives the same numbers without the model.
    again = evaluate_predictions_file(
        tmp_path / "predictions.npz",
        tmp_path / "predictions.ground_truth.npz",
        coco_ground_truth=root / "test.json",
        seen_triplets=_train_triplets(root),
    )
    assert again.metrics == metrics
    document = report.to_json_dict()
    assert document["per_predicate_recall/graph_constraint"][0]["name"] == PREDICATE_NAMES[0]
    json.dumps(document, allow_nan=False)


def _train_triplets(root):
    from egtr.data import build_dataset
    from egtr.model_evaluation import seen_triplets_of

    return seen_triplets_of(build_dataset(DataConfig.for_synthetic(str(root), image_size=96), "train", train=False))


def test_open_images_modes_on_any_layout(world):
    root, model_dir = world
    report = evaluate_model(
        model_dir,
        DataConfig.for_synthetic(str(root), image_size=96),
        "val",
        modes=["open_images"],
        progress=False,
    )
    assert {"w_rel_mAP", "w_phr_mAP", "microR@50", "score", "bbox/AP50"} <= set(report.metrics)


def test_cli_evaluate_model_then_predictions(world, tmp_path):
    root, model_dir = world
    first, second = tmp_path / "model.json", tmp_path / "file.json"
    predictions = tmp_path / "saved.npz"
    common = ["--size", "96", "--max-size", "192", "--no-progress"]
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(model_dir),
                "--data-root",
                str(root),
                "--device",
                "cpu",
                "--max-images",
                "3",
                "--save-predictions",
                str(predictions),
                "--output",
                str(first),
                *common,
            ]
        )
        == 0
    )
    assert (
        main(
            ["evaluate", "--predictions", str(predictions), "--data-root", str(root), "--output", str(second), *common]
        )
        == 0
    )
    from_model, from_file = json.loads(first.read_text()), json.loads(second.read_text())
    assert from_model["metrics"] == from_file["metrics"]
    assert from_model["settings"]["dataset"]["num_images"] == 3
    assert np.isfinite(from_model["metrics"]["(single)R@50"])


def test_cli_evaluate_takes_the_preprocessing_of_the_model_directory(world, tmp_path, capsys):
    from egtr.preprocessing import PREPROCESSOR_NAME, PreprocessorConfig

    root, model_dir = world
    recorded = tmp_path / "recorded"
    EGTR.from_pretrained(model_dir).save_pretrained(recorded)
    PreprocessorConfig(128, 160, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).save(recorded)
    common = [
        "evaluate",
        "--data-root",
        str(root),
        "--device",
        "cpu",
        "--max-images",
        "1",
        "--no-detection",
        "--no-progress",
    ]

    def settings(*arguments):
        output = tmp_path / "metrics.json"
        assert main([*common, *arguments, "--output", str(output)]) == 0
        return json.loads(output.read_text())["settings"]

    from_file = settings("--model", str(recorded))
    assert from_file["image_size"] == {"shorter_side": 128, "max_longer_side": 160}
    assert from_file["image_normalization"] == {"mean": [0.5] * 3, "std": [0.25] * 3}
    assert settings("--model", str(recorded), "--size", "112")["image_size"] == {
        "shorter_side": 112,
        "max_longer_side": 160,
    }
    # A model without the file (like the official artifacts) keeps the paper's preprocessing.
    assert settings("--model", str(model_dir), "--max-size", "200")["image_size"] == {
        "shorter_side": 800,
        "max_longer_side": 200,
    }

    (recorded / PREPROCESSOR_NAME).write_text(
        json.dumps({"size": {"shortest_edge": 128, "longest_edge": 160}, "image_mean": "imagenet"})
    )
    assert main([*common, "--model", str(recorded)]) == 2
    error = capsys.readouterr().err
    assert str(recorded / PREPROCESSOR_NAME) in error and "field 'image_mean'" in error


def test_cli_evaluate_needs_a_source(capsys):
    assert main(["evaluate", "--data-root", "somewhere"]) == 2  # argparse's usage error
    assert "one of the arguments --model --predictions is required" in capsys.readouterr().err


def test_a_training_run_directory_is_evaluated_through_its_exported_model(world, tmp_path):
    root, model_dir = world
    run = tmp_path / "run"
    EGTR.from_pretrained(model_dir).save_pretrained(run / "model")
    (run / "summary.json").write_text("{}")
    (run / "config.json").write_text("{}")  # the run's TrainConfig, not a model config
    report = evaluate_model(
        run, DataConfig.for_synthetic(str(root), image_size=96), "val", detection=False, progress=False
    )
    assert report.settings["weights_file"] == str(run / "model" / "model.safetensors")


def test_a_lightning_checkpoint_of_egtr_train(world, tmp_path):
    root, model_dir = world
    model = EGTR.from_pretrained(model_dir)
    # The layout `egtr train` writes: the Lightning state dict (module attribute `model`) + the model config.
    payload = {
        "state_dict": {f"model.{key}": value for key, value in model.state_dict().items()},
        "egtr_model_config": model.config.to_dict(),
    }
    torch.save(payload, tmp_path / "epoch=00-validation_loss=1.0000.ckpt")
    report = evaluate_model(
        tmp_path / "epoch=00-validation_loss=1.0000.ckpt",
        DataConfig.for_synthetic(str(root), image_size=96),
        "val",
        detection=False,
        progress=False,
    )
    reference = evaluate_model(
        model_dir, DataConfig.for_synthetic(str(root), image_size=96), "val", detection=False, progress=False
    )
    assert report.metrics == reference.metrics


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_cli_evaluate_through_an_exported_model_gives_the_torch_metrics(world, tmp_path, runtime, monkeypatch):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install 'egtr[onnx]'")
    pytest.importorskip("openvino", reason="the openvino extra is not installed: pip install 'egtr[openvino]'")
    root, model_dir = world
    monkeypatch.setenv("EGTR_CACHE", str(root / "cache"))  # the export is made once for both runtimes
    common = ["evaluate", "--model", str(model_dir), "--data-root", str(root), "--size", "96", "--max-size", "192"]
    common += ["--no-progress", "--save-predictions"]
    assert main([*common, str(tmp_path / "torch.npz"), "--out", str(tmp_path / "torch.json")]) == 0
    arguments = [str(tmp_path / "exported.npz"), "--out", str(tmp_path / "exported.json"), "--runtime", runtime]
    assert main([*common, *arguments]) == 0
    torch_report, exported_report = (
        json.loads((tmp_path / f"{name}.json").read_text()) for name in ("torch", "exported")
    )
    assert exported_report["settings"]["runtime"]["runtime"] == runtime
    assert exported_report["settings"]["checkpoint_sha256"] == torch_report["settings"]["checkpoint_sha256"]
    for key, value in torch_report["metrics"].items():
        assert exported_report["metrics"][key] == pytest.approx(value, abs=1e-6), key
    torch_predictions, exported_predictions = np.load(tmp_path / "torch.npz"), np.load(tmp_path / "exported.npz")
    for key in torch_predictions.files:
        expected, got = torch_predictions[key], exported_predictions[key]
        if expected.dtype.kind == "f":
            np.testing.assert_allclose(got, expected, atol=1e-4)
        elif (
            expected.dtype.kind in "iub"
        ):  # the untrained model has near-ties (1e-7 apart) that float reordering may swap: a handful at most
            assert expected.shape == got.shape and (got == expected).mean() >= 0.99, key
