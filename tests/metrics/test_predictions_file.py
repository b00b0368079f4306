"""The predictions / ground-truth files: round trip, evaluation from a file, determinism, clear errors."""

import json

import numpy as np
import pytest

from egtr.inference.postprocess import postprocess_detections, postprocess_open_images, postprocess_scene_graphs
from egtr.metrics import (
    PredictionsWriter,
    evaluate_predictions_file,
    load_ground_truths,
    load_predictions,
    save_ground_truths,
)

from .conftest import REFERENCE


def _metadata(sizes) -> dict[str, int]:
    return {"num_rel_labels": sizes.num_rel_labels, "num_labels": sizes.num_labels}


@pytest.fixture
def written(tmp_path, model_outputs, image_sizes_hw, vg_ground_truths, reference_sizes):
    writer = PredictionsWriter(metadata={**_metadata(reference_sizes), "top_k": 100})
    for image in range(reference_sizes.batch_size):  # one image per batch, to exercise the concatenation
        batch = {k: v[image : image + 1] for k, v in model_outputs.items()}
        sizes = image_sizes_hw[image : image + 1]
        writer.add(
            [image + 1],
            sizes.numpy(),
            {
                "graph_constraint": postprocess_scene_graphs(**batch, image_sizes_hw=sizes),
                "no_graph_constraint": postprocess_scene_graphs(**batch, image_sizes_hw=sizes, graph_constraint=False),
            },
            detections=postprocess_detections(batch["logits"], batch["pred_boxes"], sizes),
        )
    predictions_path = writer.save(tmp_path / "predictions.npz")
    truth_path = save_ground_truths(tmp_path / "truth.npz", vg_ground_truths)
    return predictions_path, truth_path


def test_round_trip(written, model_outputs, image_sizes_hw, vg_ground_truths, reference_sizes):
    predictions_path, truth_path = written
    loaded = load_predictions(predictions_path)
    image_ids = list(range(1, reference_sizes.batch_size + 1))
    assert loaded.image_ids.tolist() == image_ids and loaded.metadata["top_k"] == 100
    expected = postprocess_scene_graphs(**model_outputs, image_sizes_hw=image_sizes_hw)
    for saved, original in zip(loaded.scene_graphs["graph_constraint"], expected):
        for field in (
            "boxes",
            "labels",
            "scores",
            "relations",
            "relation_scores",
            "predicate_scores",
            "pair_predicate_scores",
        ):
            np.testing.assert_array_equal(getattr(saved, field), getattr(original, field))
    assert loaded.scene_graphs["no_graph_constraint"][0].pair_predicate_scores is None
    assert len(loaded.detections[1].scores) == 100
    for saved, original in zip(load_ground_truths(truth_path), vg_ground_truths):
        np.testing.assert_array_equal(saved.boxes, original.boxes)
        np.testing.assert_array_equal(saved.relations, original.relations)
        assert saved.image_id == original.image_id


def test_evaluate_file_reproduces_the_reference(written, vg_reference, vg_ground_truth_json, reference_sizes):
    predictions_path, truth_path = written
    report = evaluate_predictions_file(predictions_path, truth_path, coco_ground_truth=vg_ground_truth_json["coco_gt"])
    for key, value in vg_reference["metrics"].items():
        assert report.metrics[key] == value, key
    assert report.metrics["AP50"] == vg_reference["detection"]["AP50"]
    again = evaluate_predictions_file(predictions_path, truth_path, coco_ground_truth=vg_ground_truth_json["coco_gt"])
    assert again.metrics == report.metrics  # deterministic
    document = report.to_json_dict()
    settings = document["settings"]
    assert (
        settings["num_predicates"] == reference_sizes.num_rel_labels
        and settings["predictions_metadata"]["top_k"] == 100
    )
    assert document["per_predicate_recall/graph_constraint"][0]["R@20"] is None  # predicate 0 has no ground truth
    assert "R@50" in report.format_table()


def test_open_images_file(tmp_path, model_outputs, image_sizes_hw, vg_ground_truths, reference_sizes):
    writer = PredictionsWriter(metadata=_metadata(reference_sizes))
    writer.add(
        list(range(1, reference_sizes.batch_size + 1)),
        image_sizes_hw.numpy(),
        {"open_images": postprocess_open_images(**model_outputs, image_sizes_hw=image_sizes_hw)},
    )
    report = evaluate_predictions_file(writer.save(tmp_path / "oi"), vg_ground_truths)
    expected = json.loads((REFERENCE / "eval_oi.json").read_text())["metrics"]  # the original's numbers
    for key in ("score", "w_rel_mAP", "w_phr_mAP", "microR@50", "bbox/AP50"):
        assert report.metrics[key] == expected[key], key


def test_errors_name_the_file_and_field(tmp_path, written, vg_ground_truths):
    predictions_path, _ = written
    arrays = dict(np.load(predictions_path))
    arrays["graph_constraint__offsets"] = arrays["graph_constraint__offsets"][:-1]
    broken = tmp_path / "broken.npz"
    np.savez(broken, **arrays)
    with pytest.raises(ValueError, match=r"broken\.npz: field 'graph_constraint__offsets'"):
        load_predictions(broken)
    shuffled = list(reversed(vg_ground_truths))
    with pytest.raises(ValueError, match="record 0 has image_id 1"):
        evaluate_predictions_file(predictions_path, shuffled)
    with pytest.raises(ValueError, match="unknown relation sets"):
        PredictionsWriter().add([1], np.zeros((1, 2)), {"graph": []})
