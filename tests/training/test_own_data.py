"""Your own data end to end, through the commands a user types: a Label Studio export of a small generated world
-> `egtr data import` -> `validate` -> `train --init-from` a model with other label counts -> `evaluate` ->
`predict`, with the dataset's own names in the outputs and no config beyond the data path and tiny sizes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.training.conftest import IMAGE_SIZE, tiny_model_config

from egtr import EGTR
from egtr.cli import main
from egtr.data.synthetic import generate_synthetic_dataset
from egtr.data.visual_genome import parse_vg_split


def label_studio_export(world: Path, path: Path) -> list[str]:
    """Write `world` (native layout) as Label Studio would export it: renamed uploads, percent boxes, region ids."""
    tasks = []
    for split in ("train", "val", "test"):
        annotations, classes, predicates = parse_vg_split(world, split)
        for image in annotations:
            result = []
            for index, ((x, y, w, h), label) in enumerate(zip(image.boxes_xywh, image.labels, strict=True)):
                value = {
                    "x": 100 * x / image.width,
                    "y": 100 * y / image.height,
                    "width": 100 * w / image.width,
                    "height": 100 * h / image.height,
                    "rotation": 0,
                    "rectanglelabels": [classes[label]],
                }
                result.append(
                    {
                        "id": f"r{index}",
                        "type": "rectanglelabels",
                        "original_width": image.width,
                        "original_height": image.height,
                        "value": value,
                    }
                )
            for subject, obj, predicate in image.relations.tolist():
                result.append(
                    {
                        "type": "relation",
                        "from_id": f"r{subject}",
                        "to_id": f"r{obj}",
                        "direction": "right",
                        "labels": [predicates[predicate]],
                    }
                )
            upload = f"/data/upload/7/{image.image_id:08x}-{image.file_name}"
            tasks.append({"id": image.image_id, "data": {"image": upload}, "annotations": [{"result": result}]})
    path.write_text(json.dumps(tasks))
    return list(classes)


def test_label_studio_import_validate_finetune_evaluate_predict(tmp_path: Path, capsys) -> None:
    """Own data from a Label Studio export through the command line: import, validate, fine-tune, evaluate, predict.

    Why this is long: one end-to-end scenario, each command reading what the one before wrote.
    """
    world = generate_synthetic_dataset(tmp_path / "world", 10, 2, 2, IMAGE_SIZE, seed=5)
    class_names = label_studio_export(world, tmp_path / "export.json")
    dataset = tmp_path / "dataset"
    code = main(
        [
            "data",
            "import",
            "label-studio",
            str(tmp_path / "export.json"),
            "--images",
            str(world / "images"),
            "--out",
            str(dataset),
            "--val-fraction",
            "0.15",
            "--test-fraction",
            "0.15",
        ]
    )
    assert code == 0, capsys.readouterr()
    assert main(["data", "validate", "--data-root", str(dataset)]) == 0

    # The initial model: another label set (5 classes, 3 predicates instead of 8 and 6), as the VG artifact has.
    initial = EGTR(tiny_model_config(num_labels=5, num_rel_labels=3))
    initial.save_pretrained(tmp_path / "initial")
    run = tmp_path / "run"
    sizes = [f"data.train_sizes=[{IMAGE_SIZE}]", f"data.eval_size={IMAGE_SIZE}", "data.train_intermediate_prob=0"]
    code = main(
        [
            "train",
            "--data-root",
            str(dataset),
            "--init-from",
            str(tmp_path / "initial"),
            "--out",
            str(run),
            "--max-epochs",
            "1",
            "--finetune-epochs",
            "0",
            "--batch-size",
            "2",
            "--num-workers",
            "0",
            "--accelerator",
            "cpu",
            "limit_train_batches=2",
            "limit_val_batches=1",
            "sanity_val_steps=0",
            "progress_bar=false",
            "evaluate_split=null",
            "freeze_backbone=true",
            "lr=1e-4",
            *sizes,
        ]
    )
    assert code == 0
    report = json.loads((run / "initialization.json").read_text())["init_from"]
    assert report["reinitialized"]["class_embed.0.weight"] == "the file has 5 classes, this model 8"
    # Label Studio exports no label list: the predicates are the ones used (5 of the world's 6 here).
    predicate_names = json.loads((dataset / "rel.json").read_text())["rel_categories"][1:]
    expected = f"the file has 3 predicates, this model {len(predicate_names)}"
    assert report["reinitialized"]["rel_predictor.layers.2.weight"] == expected
    assert "proj_q.0.weight" in report["kept"] and "model.encoder.layers.0.fc1.weight" in report["kept"]
    assert (run / "main" / "version_0" / "metrics.csv").is_file()
    model = EGTR.from_pretrained(run / "model")
    assert model.config.num_labels == 8 and model.config.class_names == sorted(class_names)
    assert model.config.d_model == initial.config.d_model  # the architecture came from the initial model

    evaluation = tmp_path / "evaluation.json"
    code = main(
        [
            "evaluate",
            "--model",
            str(run / "model"),
            "--data-root",
            str(dataset),
            "--split",
            "test",
            "--device",
            "cpu",
            "--no-detection",
            "--no-progress",
            "--out",
            str(evaluation),
        ]
    )
    assert code == 0 and evaluation.is_file()
    image = next((dataset / "images").iterdir())
    code = main(
        [
            "predict",
            str(image),
            "--model",
            str(run / "model"),
            "--out",
            str(tmp_path / "predictions"),
            "--device",
            "cpu",
            "--no-progress",
            "--top-k",
            "5",
        ]
    )
    assert code == 0
    graph = json.loads((tmp_path / "predictions" / f"{image.stem}.json").read_text())
    assert graph["objects"] and {item["label_name"] for item in graph["objects"]} <= set(class_names)
    assert {item["predicate_name"] for item in graph["relations"]} <= set(predicate_names)
    assert list((tmp_path / "predictions").glob(f"{image.stem}*.png"))
