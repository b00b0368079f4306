"""Relations for given boxes (PredCls / SGCls): the assignment, the Predictor API, the evaluation tasks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.training.conftest import IMAGE_SIZE, tiny_model_config, tiny_train_config

from egtr import EGTR
from egtr.config import LossConfig
from egtr.data import DataConfig
from egtr.data.synthetic import generate_synthetic_dataset
from egtr.inference import Predictor
from egtr.inference.given_boxes import GivenBoxesError, GivenObjects, assign_queries, check_given_objects
from egtr.inference.postprocess import postprocess_scene_graphs
from egtr.model_evaluation import evaluate_model
from egtr.preprocessing import PreprocessorConfig

# The learning test's recipe (tests/training/test_learning.py): a tiny model memorises four scenes.
NUM_TRAIN_IMAGES = 4
STEPS = 60
LEARNING_RATE = 2e-3


@pytest.fixture(scope="module")
def random_predictor() -> Predictor:
    torch.manual_seed(0)
    model = EGTR(tiny_model_config()).eval()
    return Predictor(model, preprocessor=PreprocessorConfig(64, 128), device="cpu", top_k=100)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)


BOXES = np.array([[1, 2, 30, 40], [40, 10, 79, 60], [10, 10, 20, 20], [30, 30, 60, 63]], np.float32)


@pytest.fixture(scope="module")
def trained_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset root, exported model directory) of a tiny model trained on the four scenes it is evaluated on."""
    base = tmp_path_factory.mktemp("given")
    root = generate_synthetic_dataset(base / "world", NUM_TRAIN_IMAGES, 2, 1, IMAGE_SIZE, seed=3)
    data = DataConfig.for_synthetic(str(root), image_size=IMAGE_SIZE, train_sizes=(IMAGE_SIZE,))
    config = tiny_train_config(
        root,
        base / "run",
        max_epochs=STEPS,
        batch_size=NUM_TRAIN_IMAGES,
        limit_train_batches=None,
        lr=LEARNING_RATE,
        lr_backbone=0.0,
        lr_relation_head=LEARNING_RATE,
        early_stopping_patience=0,
        val_every_n_epochs=STEPS,
        data=dataclasses.replace(data, horizontal_flip_prob=0.0),
        loss=LossConfig(rel_loss_coefficient=1.0, connectivity_loss_coefficient=1.0),
    )
    from egtr.training import train_egtr

    torch.manual_seed(0)
    train_egtr(config)
    return root, base / "run" / "model"


@pytest.mark.slow
def test_predcls_recall_is_at_least_sgdet_recall_with_perfect_boxes(trained_world):
    root, model_dir = trained_world
    data = DataConfig.for_synthetic(str(root), image_size=IMAGE_SIZE, train_sizes=(IMAGE_SIZE,))
    metrics = {
        task: evaluate_model(model_dir, data, "train", task=task, detection=False, progress=False).metrics
        for task in ("sgdet", "sgcls", "predcls")
    }
    for k in (20, 50, 100):
        assert metrics["predcls"][f"(single)R@{k}"] >= metrics["sgdet"][f"(single)R@{k}"]
        assert metrics["predcls"][f"R@{k}"] >= metrics["sgdet"][f"R@{k}"]
    assert metrics["predcls"]["(single)R@20"] > 0.3, metrics["predcls"]
    assert metrics["sgcls"]["(single)R@20"] > 0, metrics["sgcls"]


def test_boxes_in_any_order_give_the_same_relations_permuted(random_predictor, image):
    labels = np.array([1, 2, 3, 4])
    for given_labels in (None, labels):
        graph = random_predictor(image, boxes=BOXES, labels=given_labels)
        order = np.array([2, 0, 3, 1])
        permuted = random_predictor(image, boxes=BOXES[order], labels=None if given_labels is None else labels[order])
        position = {int(old): new for new, old in enumerate(order)}  # old index -> index in the permuted list
        expected = [(position[r.subject], position[r.object], r.predicate, r.score) for r in graph.relations]
        assert [(r.subject, r.object, r.predicate, r.score) for r in permuted.relations] == expected
        assert [graph.objects[i].query for i in order] == [o.query for o in permuted.objects]


def test_the_graph_is_over_exactly_the_given_objects(random_predictor, image):
    partly_outside = BOXES.copy()
    partly_outside[1] = [40, 10, 95, 70]  # past the 80 x 64 image: used as given, not clipped
    graph = random_predictor(image, boxes=partly_outside, labels=[1, 2, 3, 4])
    assert [o.box for o in graph.objects] == [tuple(map(float, box)) for box in partly_outside]
    assert [o.label for o in graph.objects] == [1, 2, 3, 4] and {o.score for o in graph.objects} == {1.0}
    assert len({o.query for o in graph.objects}) == 4  # one query per box
    assert len(graph.relations) == 4 * 3  # every ordered pair once (graph constraint), no self pair
    assert all(r.subject != r.object for r in graph.relations)
    assert all(r.score == r.predicate_score for r in graph.relations)  # given labels weigh 1
    sgcls = random_predictor(image, boxes=BOXES)
    assert [o.box for o in sgcls.objects] == [tuple(map(float, box)) for box in BOXES]
    assert all(0 < o.score < 1 for o in sgcls.objects)
    unconstrained = random_predictor(image, boxes=BOXES, graph_constraint=False, top_k=30)
    assert len(unconstrained.relations) == 30


def test_zero_boxes_and_lists_of_images(random_predictor, image):
    empty = random_predictor(image, boxes=np.zeros((0, 4)))
    assert empty.objects == [] and empty.relations == []
    graphs = random_predictor([image, image], boxes=[BOXES, []], labels=[[0, 1, 2, 3], []])
    assert len(graphs[0].objects) == 4 and graphs[1].objects == []
    with pytest.raises(ValueError, match="one entry per image"):
        random_predictor([image, image], boxes=BOXES)
    with pytest.raises(ValueError, match="labels need boxes"):
        random_predictor(image, labels=[1])


@pytest.mark.parametrize(
    ("boxes", "labels", "message"),
    [
        ([[1, 2, 1, 5]], None, "box 0 .* is degenerate"),
        ([[5, 5, 9, 9], [10, 20, 30, 10]], None, "box 1 .* is degenerate"),
        ([[100, 10, 120, 20]], None, "box 0 .* outside the 80x64 image"),
        ([[-20, -20, 0, 0]], None, "outside"),
        ([[np.nan, 0, 1, 1]], None, "not finite"),
        ([[1, 2, 3]], None, r"\(M, 4\)"),
        ([[1, 2, 30, 40]], [8], "box 0 label: class index 8 is not in 0..7"),
        ([[1, 2, 30, 40]], ["unicorn"], "box 0 label: 'unicorn' is not a class name of the model"),
        ([[1, 2, 30, 40]], [1, 2], "2 labels for 1 boxes"),
        ([[1, 2, 30, 40]], [0.5], "0.5 is neither a class index nor a class name"),
        (np.tile([[0, 0, 5, 5]], (13, 1)), None, "13 boxes given but the model has only 12 object queries"),
    ],
)
def test_unusable_boxes_raise_clear_errors(random_predictor, image, boxes, labels, message):
    with pytest.raises(GivenBoxesError, match=message):
        random_predictor(image, boxes=boxes, labels=labels)


def test_labels_may_be_class_names_as_in_the_boxes_file(random_predictor, image):
    # Before: the Python API refused names ("labels must be integer class indices") that --boxes files accept.
    names = [random_predictor.class_names[3], random_predictor.class_names[5]]
    by_name = random_predictor(image, boxes=BOXES[:2], labels=names)
    by_index = random_predictor(image, boxes=BOXES[:2], labels=[3, 5])
    assert [item.label for item in by_name.objects] == [item.label for item in by_index.objects] == [3, 5]
    assert by_name.to_dict() == by_index.to_dict()


def test_assignment_prefers_the_query_with_the_box_and_the_label():
    # Query 0 sits on the box but predicts class 1; query 1 is slightly off but predicts class 0.
    pred_boxes = torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.52, 0.5, 0.4, 0.4], [0.1, 0.1, 0.1, 0.1]])
    logits = torch.full((3, 2), -6.0)
    logits[0, 1] = logits[1, 0] = 6.0
    given = check_given_objects([[30, 30, 70, 70]], None, (100, 100), 2)
    assert assign_queries(logits, pred_boxes, given, (100, 100)).tolist() == [0]
    assert assign_queries(logits, pred_boxes, given, (100, 100), assignment="iou").tolist() == [0]
    labelled = GivenObjects(given.boxes, np.array([0]))
    assert assign_queries(logits, pred_boxes, labelled, (100, 100)).tolist() == [1]
    with pytest.raises(ValueError, match="assignment"):
        assign_queries(logits, pred_boxes, given, (100, 100), assignment="greedy")


def test_postprocess_takes_given_object_scores_and_labels():
    generator = torch.Generator().manual_seed(0)
    logits, boxes = torch.randn(1, 3, 4, generator=generator), torch.rand(1, 3, 4, generator=generator)
    rel, connectivity = torch.rand(1, 3, 3, 2, generator=generator), torch.rand(1, 3, 3, 1, generator=generator)
    sizes = torch.tensor([[50, 60]])
    (given,) = postprocess_scene_graphs(
        logits, boxes, rel, connectivity, sizes, object_scores=torch.ones(1, 3), object_labels=torch.tensor([[3, 2, 1]])
    )
    assert given.labels.tolist() == [3, 2, 1] and given.scores.tolist() == [1.0, 1.0, 1.0]
    distinct = given.relations[:, 0] != given.relations[:, 1]  # self pairs score 0
    np.testing.assert_array_equal(given.relation_scores[distinct], given.predicate_scores[distinct])
    with pytest.raises(ValueError, match="both"):
        postprocess_scene_graphs(logits, boxes, rel, connectivity, sizes, object_scores=torch.ones(1, 3))


# ------------------------------------------------------------------ the boxes file and the command line
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("model")
    EGTR(tiny_model_config()).eval().save_pretrained(directory)
    return directory


@pytest.fixture
def photos(tmp_path: Path, image) -> list[Path]:
    from PIL import Image

    paths = [tmp_path / "a.png", tmp_path / "sub" / "b.png"]
    paths[1].parent.mkdir()
    for path in paths:
        Image.fromarray(image).save(path)
    return paths


def test_predict_with_a_boxes_file(model_dir, photos, tmp_path, capsys):
    import json

    from egtr.cli import main

    boxes_file = tmp_path / "boxes.json"
    boxes_file.write_text(
        json.dumps(
            {
                str(photos[0]): [
                    {"box": [1, 2, 30, 40], "label": 3},
                    {"box": [40, 10, 79, 60], "label_name": "class_5"},
                ],
                "b.png": {"objects": [{"box": [10, 10, 20, 20], "score": 0.3}, {"box": [0, 0, 60, 60]}]},
                "unused.png": [],
            }
        )
    )
    out = tmp_path / "out"
    args = [*map(str, photos), "--model", str(model_dir), "--out", str(out), "--no-draw", "--no-progress"]
    assert main(["predict", *args, "--boxes", str(boxes_file), "--size", "64", "--max-size", "128"]) == 0
    first = json.loads((out / "a.json").read_text())
    assert [o["box"] for o in first["objects"]] == [[1, 2, 30, 40], [40, 10, 79, 60]]
    assert [o["label"] for o in first["objects"]] == [3, 5]
    assert {(r["subject"], r["object"]) for r in first["relations"]} == {(0, 1), (1, 0)}
    second = json.loads((out / "b.json").read_text())
    assert [o["box"] for o in second["objects"]] == [[10, 10, 20, 20], [0, 0, 60, 60]]

    # Our own output, gathered into a list, is a boxes file too.
    gathered = tmp_path / "gathered.json"
    gathered.write_text(json.dumps([first | {"image_path": str(photos[0])}, second | {"image_path": "b.png"}]))
    assert main(["predict", *args, "--boxes", str(gathered), "--size", "64"]) == 0
    assert json.loads((out / "a.json").read_text())["objects"] == first["objects"]

    # Given boxes are for image files written as files; the bulk formats refuse them instead of ignoring them.
    assert main(["predict", *args, "--boxes", str(boxes_file), "--output-format", "jsonl"]) == 2

    # A box outside an image: that image is reported and skipped (exit 1), the other one is still predicted.
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"a.png": [{"box": [100, 100, 120, 120]}], "b.png": []}))
    capsys.readouterr()
    assert main(["predict", *args, "--boxes", str(outside), "--size", "64"]) == 1
    # Before: "1 image(s) could not be read or written and were skipped", about boxes that were refused.
    error = [line for line in capsys.readouterr().err.splitlines() if not line.startswith(("INFO", "WARNING"))]
    assert error[0] == f"1 image(s) skipped because their given boxes (--boxes {outside}) were rejected:", error
    assert "box 0 [100, 100, 120, 120] lies outside the 80x64 image" in error[1], error


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "malformed JSON at line 1"),
        ('{"a.png": [{"box": [1, 2, 3]}]}', "record 'a.png' object 0: field 'box' must be 4 numbers"),
        ('{"a.png": [{"box": [1, 2, 3, 4], "label_name": "zebra"}]}', "'zebra' is not a class"),
        # Before: an index out of range skipped the image (exit 1) where an unknown name stopped the command.
        ('{"a.png": [{"box": [1, 2, 3, 4], "label": 99}]}', "object 0: field 'label': class index 99 is not in 0..7"),
        ('{"a.png": [{"box": [1, 2, 3, 4], "label": 1}, {"box": [1, 2, 3, 4]}]}', "object 1: has no 'label'"),
        ('{"b.png": []}', "no entry for image"),
        ('[{"objects": []}]', "record 0: needs a string field 'image_path'"),
        ('{"a.png": {"boxes": []}}', "field 'objects' must be a list"),
    ],
)
def test_bad_boxes_files_stop_with_exit_status_2(model_dir, photos, tmp_path, capsys, content, message):
    from egtr.cli import main

    boxes_file = tmp_path / "boxes.json"
    boxes_file.write_text(content)
    args = [str(photos[0]), "--model", str(model_dir), "--out", str(tmp_path / "out"), "--no-draw", "--no-progress"]
    assert main(["predict", *args, "--boxes", str(boxes_file)]) == 2
    error = capsys.readouterr().err
    assert message in error and str(boxes_file) in error and "Traceback" not in error


def test_evaluate_command_with_a_given_box_task(model_dir, tmp_path, capsys):
    import json

    from egtr.cli import main

    root = generate_synthetic_dataset(tmp_path / "world", 2, 1, 2, IMAGE_SIZE, seed=1)
    output = tmp_path / "predcls.json"
    common = ["evaluate", "--model", str(model_dir), "--data-root", str(root), "--split", "test", "--no-progress"]
    assert main([*common, "--task", "predcls", "--out", str(output), "--size", "64"]) == 0
    document = json.loads(output.read_text())
    assert document["settings"]["task"] == "predcls" and document["settings"]["given_boxes"]["assignment"]
    assert document["settings"]["detection_backend"] is None  # nothing to detect with given boxes
    for key in ("(single)R@20", "(single)mR@20", "R@100", "mR@100"):
        assert document["metrics"][key] is not None
    assert not any(key.startswith("bbox/") for key in document["metrics"])
    capsys.readouterr()
    assert main(["evaluate", "--predictions", str(output), "--task", "sgcls"]) == 2
    assert "--task applies to --model" in capsys.readouterr().err
