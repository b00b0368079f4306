"""Open Images relation metrics against the original evaluator's outputs, and hand-made edge cases."""

import json
import math

import numpy as np
import pytest

from egtr.inference.postprocess import ScenePrediction, postprocess_open_images
from egtr.metrics import OpenImagesRelationMetrics, SceneGroundTruth
from egtr.metrics.open_images import voc_average_precision

from .conftest import REFERENCE

KEYS = ("w_rel_mAP", "w_phr_mAP", "microR@50", "score")


def test_reference_model_outputs(model_outputs, image_sizes_hw, vg_ground_truths, reference_sizes):
    expected = json.loads((REFERENCE / "eval_oi.json").read_text())["metrics"]
    predictions = postprocess_open_images(**model_outputs, image_sizes_hw=image_sizes_hw)
    result = (
        OpenImagesRelationMetrics(reference_sizes.num_rel_labels)
        .update(predictions, vg_ground_truths)
        .compute()
        .to_dict()
    )
    for key in KEYS:
        assert result[key] == expected[key], key


def test_reference_bulk(bulk, bulk_reference):
    metric = OpenImagesRelationMetrics(bulk["num_predicates"])
    for start in range(0, len(bulk["ground_truths"]), 100):  # chunked updates give the same numbers
        metric.update(bulk["open_images"][start : start + 100], bulk["ground_truths"][start : start + 100])
    result = metric.compute().to_dict()
    for key in KEYS:
        assert result[key] == bulk_reference["metrics"][key], key
    assert result["open_images/micro_recall@50"] == result["microR@50"]


# ----------------------------------------------------------------------------------------------- hand-made cases
GT_BOXES = [[0, 0, 4, 4], [20, 20, 39, 39]]


def _truth(boxes, labels, relations) -> SceneGroundTruth:
    return SceneGroundTruth(np.asarray(boxes, np.float32), np.asarray(labels), np.asarray(relations).reshape(-1, 3))


def _candidates(boxes, labels, relations, scores) -> ScenePrediction:
    scores = np.asarray(scores, np.float32)
    return ScenePrediction(
        np.asarray(boxes, np.float32),
        np.asarray(labels),
        np.ones(len(labels), np.float32),
        np.asarray(relations, np.int64).reshape(-1, 3),
        scores,
        scores,
    )


def _evaluate(predictions, truths, num_predicates=2):
    return OpenImagesRelationMetrics(num_predicates).update(predictions, truths).compute()


def test_relation_ap_needs_iou_strictly_above_half():
    truth = _truth(GT_BOXES, [1, 2], [[0, 1, 0]])
    # PySGG's IoU of [0, 0, 1, 2] with [0, 0, 4, 4]: intersection (1+1)(2+1) = 6, areas 2 and 16 -> 6 / 12 = 0.5.
    exactly_half = _candidates([[0, 0, 1, 2], GT_BOXES[1]], [1, 2], [[0, 1, 0]], [0.9])
    assert _evaluate([exactly_half], [truth]).relation_ap[0] == 0.0
    above = _candidates([[0, 0, 1, 3], GT_BOXES[1]], [1, 2], [[0, 1, 0]], [0.9])  # 8 / 11
    assert _evaluate([above], [truth]).relation_ap[0] == pytest.approx(1.0)


def test_each_ground_truth_is_matched_once_greedily():
    truth = _truth(GT_BOXES, [1, 2], [[0, 1, 0]])
    duplicate = _candidates(GT_BOXES, [1, 2], [[0, 1, 0], [0, 1, 0]], [0.9, 0.8])
    result = _evaluate([duplicate], [truth])
    assert result.relation_ap[0] == pytest.approx(1.0)  # TP then FP: precision 1 at recall 1
    wrong_first = _candidates(GT_BOXES, [1, 2], [[1, 0, 0], [0, 1, 0]], [0.9, 0.8])
    assert _evaluate([wrong_first], [truth]).relation_ap[0] == pytest.approx(
        0.5
    )  # FP then TP: precision 1/2 at recall 1


def test_detection_takes_the_first_best_ground_truth_without_fallback():
    # Two identical ground-truth relations (duplicated objects): both detections pick the first one, so the
    # second detection is a false positive and the second ground truth stays unmatched (the original's rule).
    truth = _truth(GT_BOXES + GT_BOXES, [1, 2, 1, 2], [[0, 1, 0], [2, 3, 0]])
    detections = _candidates(GT_BOXES, [1, 2], [[0, 1, 0], [0, 1, 0]], [0.9, 0.8])
    result = _evaluate([detections], [truth])
    assert result.relation_ap[0] == pytest.approx(0.5) and result.num_positives[0] == 2
    assert result.micro_recall[50] == pytest.approx(1.0)  # recall has no one-to-one constraint


def test_micro_recall_is_summed_over_images():
    one = _truth(GT_BOXES, [1, 2], [[0, 1, 0]])
    three = _truth(GT_BOXES, [1, 2], [[0, 1, 0], [0, 1, 1], [1, 0, 1]])
    hit = _candidates(GT_BOXES, [1, 2], [[0, 1, 0]], [0.5])
    result = _evaluate([hit, hit], [one, three])
    assert result.micro_recall[50] == 2 / (4 + 1e-12)
    assert result.per_image_recall[50] == (1.0 + 1 / 3) / 2


def test_phrase_ap_uses_the_union_box():
    truth = _truth(GT_BOXES, [1, 2], [[0, 1, 0]])
    # The subject box is poor but the union box of subject and object is nearly the same.
    poor_subject = _candidates([[0, 0, 1, 1], GT_BOXES[1]], [1, 2], [[0, 1, 0]], [0.9])
    result = _evaluate([poor_subject], [truth])
    assert result.relation_ap[0] == 0.0 and result.phrase_ap[0] == pytest.approx(1.0)


def test_weighted_map_and_score():
    truth = _truth(GT_BOXES, [1, 2], [[0, 1, 0], [0, 1, 1], [1, 0, 1]])
    prediction = _candidates(GT_BOXES, [1, 2], [[0, 1, 1], [1, 0, 1]], [0.9, 0.8])
    result = _evaluate([prediction], [truth])
    assert result.relation_ap.tolist() == pytest.approx([0.0, 1.0])  # recall divides by npos + 1e-12
    assert result.weighted_relation_map == pytest.approx(2 / 3)
    assert result.relation_map == pytest.approx(0.5)
    assert result.score == pytest.approx(0.4 * 2 / 3 + 0.4 * 2 / 3 + 0.2 * 2 / 3)


def test_no_ground_truth_relations_gives_nan_maps():
    truth = _truth(GT_BOXES, [1, 2], np.zeros((0, 3)))
    result = _evaluate([_candidates(GT_BOXES, [1, 2], [[0, 1, 0]], [0.9])], [truth])
    assert math.isnan(result.weighted_relation_map) and result.micro_recall[50] == 0.0


def test_voc_average_precision():
    assert voc_average_precision(np.array([]), np.array([])) == 0.0
    assert voc_average_precision(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(
        0.5 + 0.5 * 2 / 3
    )
