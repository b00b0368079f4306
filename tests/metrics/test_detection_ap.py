"""COCO-style detection AP (both styles of the original) against the reference numbers, with both backends.

The reference numbers were produced by pycocotools; the numpy backend must reproduce them bit for bit.
"""

import json

import numpy as np
import pytest

from egtr.inference.postprocess import DetectionPrediction, postprocess_detections, postprocess_open_images
from egtr.metrics import DetectionAP, SceneGroundTruth
from egtr.metrics.detection import BACKENDS

from .conftest import REFERENCE


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    if request.param == "pycocotools":
        pytest.importorskip("pycocotools")
    return request.param


def test_vg_style_with_the_split_json(
    model_outputs, image_sizes_hw, vg_ground_truths, vg_ground_truth_json, vg_reference, backend
):
    detections = postprocess_detections(model_outputs["logits"], model_outputs["pred_boxes"], image_sizes_hw)
    metric = DetectionAP(style="coco", coco_ground_truth=vg_ground_truth_json["coco_gt"], backend=backend)
    result = metric.update(detections, vg_ground_truths).compute()
    assert result.stats.tolist() == vg_reference["detection"]["coco_stats"]
    assert result.to_dict()["AP50"] == vg_reference["detection"]["AP50"]


def test_vg_style_with_ground_truth_built_from_the_boxes(
    model_outputs, image_sizes_hw, vg_ground_truths, vg_reference, reference_sizes, backend
):
    detections = postprocess_detections(model_outputs["logits"], model_outputs["pred_boxes"], image_sizes_hw)
    result = (
        DetectionAP(reference_sizes.num_labels, style="coco", backend=backend)
        .update(detections, vg_ground_truths)
        .compute()
    )
    np.testing.assert_allclose(result.stats, vg_reference["detection"]["coco_stats"], rtol=1e-12, atol=0)


def test_open_images_style(
    model_outputs, image_sizes_hw, vg_ground_truths, bulk, bulk_reference, reference_sizes, backend
):
    expected = json.loads((REFERENCE / "eval_oi.json").read_text())["metrics"]
    predictions = postprocess_open_images(**model_outputs, image_sizes_hw=image_sizes_hw)
    result = (
        DetectionAP(reference_sizes.num_labels, style="open_images", backend=backend)
        .update(predictions, vg_ground_truths)
        .compute()
        .to_dict()
    )
    bulk_result = DetectionAP(bulk["num_classes"], style="open_images", backend=backend)
    bulk_result = bulk_result.update(bulk["open_images"], bulk["ground_truths"]).compute().to_dict()
    for name in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert result[f"bbox/{name}"] == expected[f"bbox/{name}"]
        assert bulk_result[f"bbox/{name}"] == bulk_reference["metrics"][f"bbox/{name}"]


def test_perfect_and_empty_detections(backend):
    truth = SceneGroundTruth(
        np.array([[10, 10, 60, 80], [100, 50, 200, 90]], np.float32), np.array([0, 2]), np.zeros((0, 3))
    )
    perfect = DetectionPrediction(truth.boxes, truth.labels, np.array([0.9, 0.8], np.float32))
    assert DetectionAP(3, backend=backend).update([perfect], [truth]).compute().ap50 == pytest.approx(1.0)
    empty = DetectionPrediction(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32))
    assert DetectionAP(3, backend=backend).update([empty], [truth]).compute().ap50 == 0.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="style"):
        DetectionAP(3, style="voc")
    with pytest.raises(ValueError, match="num_classes"):
        DetectionAP()
    with pytest.raises(ValueError, match="backend"):
        DetectionAP(3, backend="torchmetrics")
    metric = DetectionAP(style="coco", coco_ground_truth={"images": [], "annotations": [], "categories": []})
    truth = SceneGroundTruth(np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="image_id"):
        metric.update([DetectionPrediction(np.zeros((0, 4)), np.zeros(0), np.zeros(0))], [truth])


@pytest.mark.parametrize("style", ["coco", "open_images"])
def test_backends_agree_bit_for_bit_on_random_scenes(style):
    """Many images, all area ranges, more detections than maxDets and tied scores: the two backends agree."""
    pytest.importorskip("pycocotools")
    generator = np.random.default_rng(3)
    truths, detections = [], []
    for _ in range(40):
        num_objects = int(generator.integers(0, 8))
        corners = generator.uniform(0, 400, (num_objects, 2))
        boxes = np.concatenate([corners, corners + generator.uniform(4, 200, (num_objects, 2))], 1)
        labels = generator.integers(0, 5, num_objects)
        truths.append(SceneGroundTruth(boxes.astype(np.float32), labels, np.zeros((0, 3), np.int64)))
        num_detections = 120
        copies = generator.integers(0, max(num_objects, 1), num_detections)
        predicted = generator.uniform(0, 500, (num_detections, 4)).astype(np.float32)
        predicted[:, 2:] = predicted[:, :2] + generator.uniform(4, 200, (num_detections, 2))
        if num_objects:
            jittered = boxes[copies] + generator.normal(0, 6, (num_detections, 4))
            predicted[: num_detections // 2] = jittered[: num_detections // 2]
        scores = np.round(generator.uniform(0, 1, num_detections), 1).astype(np.float32)  # many exact ties
        detections.append(DetectionPrediction(predicted, generator.integers(0, 5, num_detections), scores))
    stats = [DetectionAP(5, style=style, backend=b).update(detections, truths).compute().stats for b in BACKENDS]
    assert stats[0].tolist() == stats[1].tolist()
    assert 0 < stats[0][1] < 1
