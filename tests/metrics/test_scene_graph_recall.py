"""VG recall (R@K, mR@K) against the original evaluator's outputs, and hand-made edge cases."""

import math

import numpy as np
import pytest

from egtr.inference.postprocess import ScenePrediction, postprocess_scene_graphs
from egtr.metrics import SceneGraphRecall, SceneGroundTruth
from egtr.metrics.matching import flatten_ground_truths, flatten_predictions, predictions_to_ground_truth

KS = (20, 50, 100)


@pytest.mark.parametrize("graph_constraint, name", [(True, "single"), (False, "multiple")])
def test_reference_model_outputs(
    model_outputs, image_sizes_hw, vg_ground_truths, vg_reference, reference_sizes, graph_constraint, name
):
    predictions = postprocess_scene_graphs(
        **model_outputs, image_sizes_hw=image_sizes_hw, graph_constraint=graph_constraint
    )
    num_predicates = reference_sizes.num_rel_labels
    result = (
        SceneGraphRecall(num_predicates, graph_constraint=graph_constraint)
        .update(predictions, vg_ground_truths)
        .compute()
    )
    flat = result.to_dict()
    prefix = "(single)" if graph_constraint else ""
    for k in KS:
        # Ratios of small integers, averaged in the same order: equal, not just close.
        assert flat[f"{prefix}R@{k}"] == vg_reference["metrics"][f"{prefix}R@{k}"]
        assert flat[f"{prefix}mR@{k}"] == vg_reference["metrics"][f"{prefix}mR@{k}"]
    for image, reference in enumerate(vg_reference["per_image"]):
        assert result.per_image_recall[image].tolist() == [reference[name]["recall"][f"R@{k}"] for k in KS]
        flat_predictions = flatten_predictions(predictions)
        flat_truth = flatten_ground_truths(vg_ground_truths)
        assert predictions_to_ground_truth(flat_predictions, flat_truth, image) == reference[name]["pred_to_gt"]
    per_predicate = vg_reference[f"per_predicate_recall_{name}"]
    for predicate in range(num_predicates):
        recalls = per_predicate[str(predicate)]
        for column, k in enumerate(KS):
            expected = np.mean(recalls[f"R@{k}"]) if recalls[f"R@{k}"] else math.nan
            np.testing.assert_equal(result.per_predicate_recall[predicate, column], expected)
        assert result.per_predicate_num_images[predicate] == len(recalls["R@20"])


@pytest.mark.parametrize("graph_constraint, name", [(True, "single"), (False, "multiple")])
def test_reference_bulk(bulk, bulk_reference, graph_constraint, name):
    mode = "graph_constraint" if graph_constraint else "no_graph_constraint"
    metric = SceneGraphRecall(bulk["num_predicates"], graph_constraint=graph_constraint)
    # Several updates must give exactly what one update gives.
    for start in range(0, len(bulk["ground_truths"]), 64):
        metric.update(bulk[mode][start : start + 64], bulk["ground_truths"][start : start + 64])
    result = metric.compute()
    prefix = "(single)" if graph_constraint else ""
    for k in KS:
        assert result.recall[k] == bulk_reference["metrics"][f"{prefix}R@{k}"]
        assert result.mean_recall[k] == bulk_reference["metrics"][f"{prefix}mR@{k}"]
    expected_per_image = np.array([bulk_reference["per_image_recall"][name][f"R@{k}"] for k in KS]).T
    np.testing.assert_array_equal(result.per_image_recall, expected_per_image)
    for predicate, recalls in bulk_reference[f"per_predicate_recall_{name}"].items():
        np.testing.assert_array_equal(
            result.per_predicate_recall[int(predicate)], [np.mean(recalls[f"R@{k}"]) for k in KS]
        )


# ----------------------------------------------------------------------------------------------- hand-made cases
def _prediction(boxes, labels, relations) -> ScenePrediction:
    relations = np.asarray(relations, dtype=np.int64).reshape(-1, 3)
    scores = np.linspace(1, 0.5, len(relations), dtype=np.float32)
    return ScenePrediction(
        np.asarray(boxes, dtype=np.float32),
        np.asarray(labels),
        np.ones(len(labels), np.float32),
        relations,
        scores,
        scores,
    )


def _truth(boxes, labels, relations) -> SceneGroundTruth:
    return SceneGroundTruth(
        np.asarray(boxes, dtype=np.float32), np.asarray(labels), np.asarray(relations).reshape(-1, 3)
    )


BOXES = [[0, 0, 9, 9], [20, 20, 39, 39]]


def _recall(predictions, truths, num_predicates=3, ks=(1, 2), **kwargs):
    return SceneGraphRecall(num_predicates, ks=ks, **kwargs).update(predictions, truths).compute()


def test_iou_exactly_half_matches():
    # [0, 0, 9, 4] covers 10 x 5 = 50 of the 10 x 10 = 100 pixels of [0, 0, 9, 9]: IoU = 0.5 exactly,
    # and >= 0.5 matches.
    truth = _truth(BOXES, [1, 2], [[0, 1, 0]])
    half = _prediction([[0, 0, 9, 4], [20, 20, 39, 39]], [1, 2], [[0, 1, 0]])
    assert _recall([half], [truth]).recall[1] == 1.0
    below = _prediction([[0, 0, 9, 3.99], [20, 20, 39, 39]], [1, 2], [[0, 1, 0]])
    assert _recall([below], [truth]).recall[1] == 0.0


def test_labels_and_predicate_must_be_equal():
    truth = _truth(BOXES, [1, 2], [[0, 1, 0]])
    for labels, relation in (
        ([1, 1], [0, 1, 0]),
        ([2, 2], [0, 1, 0]),
        ([1, 2], [0, 1, 1]),
        ([1, 2], [1, 0, 0]),
    ):
        assert _recall([_prediction(BOXES, labels, [relation])], [truth]).recall[2] == 0.0


def test_duplicate_ground_truth_triplets_count_once():
    truth = _truth(BOXES, [1, 2], [[0, 1, 0], [0, 1, 0], [0, 1, 1]])  # the first two are one relation
    result = _recall([_prediction(BOXES, [1, 2], [[0, 1, 0]])], [truth])
    assert result.recall[1] == 0.5


def test_one_prediction_matches_several_identical_ground_truth_objects():
    truth = _truth([*BOXES, [0, 0, 9, 9]], [1, 2, 1], [[0, 1, 0], [2, 1, 0]])
    assert _recall([_prediction(BOXES, [1, 2], [[0, 1, 0]])], [truth]).recall[1] == 1.0


def test_several_predicates_per_pair():
    truth = _truth(BOXES, [1, 2], [[0, 1, 0], [0, 1, 2]])
    constrained = _prediction(BOXES, [1, 2], [[0, 1, 2]])  # one predicate per pair caps the recall at 1/2
    assert _recall([constrained], [truth], graph_constraint=True).recall[2] == 0.5
    unconstrained = _prediction(BOXES, [1, 2], [[0, 1, 2], [0, 1, 0]])
    result = _recall([unconstrained], [truth], graph_constraint=False)
    assert (result.recall[1], result.recall[2]) == (0.5, 1.0)


def test_image_without_relations_is_left_out():
    with_relation = _truth(BOXES, [1, 2], [[0, 1, 0]])
    without = _truth(BOXES, [1, 2], np.zeros((0, 3), np.int64))
    prediction = _prediction(BOXES, [1, 2], [[0, 1, 0]])
    result = _recall([prediction, prediction], [with_relation, without])
    assert result.recall[1] == 1.0 and result.mean_recall[1] == 1.0 / 3
    assert result.num_images == 2 and result.num_images_without_relations == 1 and len(result.per_image_recall) == 1
    only_empty = _recall([prediction], [without])
    assert math.isnan(only_empty.recall[1]) and only_empty.mean_recall[1] == 0.0


def test_absent_predicate_counts_as_zero_in_mean_recall():
    truth = _truth(BOXES, [1, 2], [[0, 1, 0], [1, 0, 1]])
    result = _recall([_prediction(BOXES, [1, 2], [[0, 1, 0], [1, 0, 1]])], [truth], num_predicates=4)
    assert result.recall[2] == 1.0
    assert result.mean_recall[2] == 2 / 4  # predicates 2 and 3 have no ground truth: NaN, but the denominator is 4
    assert np.isnan(result.per_predicate_recall[2:]).all()
    assert result.f1[2] == pytest.approx(2 * 1.0 * 0.5 / 1.5)


def test_recall_at_k_only_uses_the_first_k_predictions():
    truth = _truth(BOXES, [1, 2], [[0, 1, 0]])
    prediction = _prediction(BOXES, [1, 2], [[0, 1, 1], [0, 1, 0]])
    result = _recall([prediction], [truth])
    assert (result.recall[1], result.recall[2]) == (0.0, 1.0)


def test_empty_predictions_give_zero():
    truth = _truth(BOXES, [1, 2], [[0, 1, 0]])
    result = _recall([_prediction(BOXES, [1, 2], np.zeros((0, 3)))], [truth])
    assert result.recall[2] == 0.0


def test_zero_shot_recall():
    truth = _truth(BOXES, [1, 2], [[0, 1, 0], [1, 0, 1]])
    seen = np.array([[1, 2, 0]])  # (subject class, object class, predicate): the second relation is unseen
    result = _recall([_prediction(BOXES, [1, 2], [[1, 0, 1]])], [truth], seen_triplets=seen)
    assert result.zero_shot_recall[1] == 1.0 and result.recall[1] == 0.5
    result = _recall([_prediction(BOXES, [1, 2], [[0, 1, 0]])], [truth], seen_triplets=seen)
    assert result.zero_shot_recall[2] == 0.0
    assert "graph_constraint/zero_shot_recall@2" in result.to_dict()


def test_output_keys_follow_the_original():
    truth = _truth(BOXES, [1, 2], [[0, 1, 0]])
    prediction = _prediction(BOXES, [1, 2], [[0, 1, 0]])
    constrained = SceneGraphRecall(3).update([prediction], [truth]).compute().to_dict()
    assert {
        "(single)R@20",
        "(single)R@50",
        "(single)R@100",
        "(single)mR@100",
        "graph_constraint/recall@50",
    } <= set(constrained)
    unconstrained = SceneGraphRecall(3, graph_constraint=False).update([prediction], [truth]).compute().to_dict()
    assert {"R@20", "mR@50", "no_graph_constraint/mean_recall@100"} <= set(unconstrained)


def test_reset_and_bad_input():
    metric = SceneGraphRecall(2, ks=(1,))
    truth = _truth(BOXES, [1, 2], [[0, 1, 0]])
    metric.update([_prediction(BOXES, [1, 2], [[0, 1, 0]])], [truth])
    metric.reset()
    metric.update([_prediction(BOXES, [1, 2], [[0, 1, 1]])], [truth])
    assert metric.compute().recall[1] == 0.0
    with pytest.raises(ValueError, match="predicate 5"):
        metric.update([_prediction(BOXES, [1, 2], [[0, 1, 0]])], [_truth(BOXES, [1, 2], [[0, 1, 5]])])
    with pytest.raises(ValueError, match="ground truths"):
        metric.update([], [truth])


def test_relation_indices_out_of_range_are_reported():
    truth = _truth(BOXES, [1, 2], [[0, 1, 0]])
    with pytest.raises(ValueError, match="prediction of image 0 of the batch: field 'relations'"):
        SceneGraphRecall(3).update([_prediction(BOXES, [1, 2], [[0, 2, 0]])], [truth])
