"""Post-processing against the original `evaluate_batch` / `post_process` selections, and its tie rules."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from egtr.inference.postprocess import (
    postprocess_detections,
    postprocess_open_images,
    postprocess_scene_graphs,
    rank_top_k,
    select_open_images_candidates,
)

REFERENCE = Path(__file__).parent / "fixtures" / "reference"


@pytest.fixture(scope="module")
def outputs() -> dict[str, torch.Tensor]:
    arrays = np.load(REFERENCE / "outputs.npz")
    return {k: torch.from_numpy(arrays[k]) for k in ("logits", "pred_boxes", "pred_rel", "pred_connectivity")}


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((REFERENCE / "eval_vg.json").read_text())


@pytest.fixture(scope="module")
def sizes() -> torch.Tensor:
    ground_truth = json.loads((REFERENCE / "eval_vg_gt.json").read_text())
    return torch.tensor([image["orig_size_hw"] for image in ground_truth["images"]])


def test_graph_constraint_selection_is_the_reference(outputs, reference, sizes):
    predictions = postprocess_scene_graphs(**outputs, image_sizes_hw=sizes, graph_constraint=True)
    for prediction, expected in zip(predictions, reference["per_image"]):
        assert prediction.labels.tolist() == expected["pred_classes"]
        # Object scores are float32 softmax maxima, 1 / sum_c exp(l_c - max l): the order in which torch's
        # CPU kernel adds the C exponentials decides their last bits. The recorded scores are not the correctly
        # rounded softmax (28 of the 60 differ by 1 ulp from float64 rounded to float32). The kernel adds a row
        # shorter than one SIMD vector left to right and a longer row lane by lane; a left-to-right sum reproduces
        # 59 of the 60 recorded scores, as a CPU with 16 float lanes (AVX-512) would for C = 12. On an 8-lane AVX2
        # CPU (CI) the lane-wise sum differs by up to 2 ulp (6e-8). Labels, boxes, the selected pairs and their
        # order stay exact: the fixture's score gaps are far wider than a few ulp.
        np.testing.assert_array_max_ulp(prediction.scores, np.float32(expected["obj_scores"]), maxulp=4)
        np.testing.assert_array_equal(prediction.boxes, np.float32(expected["pred_boxes_xyxy"]))
        assert prediction.relations[:, :2].tolist() == expected["single"]["pred_rel_inds"]
        rel_scores = np.float32(expected["single"]["rel_scores"])
        np.testing.assert_array_equal(prediction.pair_predicate_scores, rel_scores)
        assert prediction.relations[:, 2].tolist() == rel_scores.argmax(1).tolist()
        np.testing.assert_array_equal(prediction.predicate_scores, rel_scores.max(1))
        subjects, objects = prediction.relations[:, 0], prediction.relations[:, 1]
        products = prediction.predicate_scores * (prediction.scores[subjects] * prediction.scores[objects])
        np.testing.assert_array_equal(prediction.relation_scores, products)
        assert np.all(np.diff(prediction.relation_scores) <= 0) and np.all(subjects != objects)
        assert prediction.boxes.dtype == np.float32 and prediction.relations.dtype == np.int64


def test_no_graph_constraint_selection_is_the_reference(outputs, reference, sizes):
    predictions = postprocess_scene_graphs(**outputs, image_sizes_hw=sizes, graph_constraint=False)
    for prediction, expected in zip(predictions, reference["per_image"]):
        assert prediction.relations.tolist() == expected["multiple"]["pred_rel_inds"]
        np.testing.assert_array_equal(prediction.predicate_scores, np.float32(expected["multiple"]["rel_scores"]))
        assert prediction.pair_predicate_scores is None
        assert len(set(map(tuple, prediction.relations[:, :2].tolist()))) < 100  # pairs repeat with other predicates


def test_detections_are_the_reference(outputs, reference, sizes):
    detections = postprocess_detections(outputs["logits"], outputs["pred_boxes"], sizes)
    for detection, expected in zip(detections, reference["detection"]["post_process"]):
        assert detection.labels.tolist() == expected["labels"]
        np.testing.assert_array_equal(detection.scores, np.float32(expected["scores"]))
        np.testing.assert_array_equal(detection.boxes, np.float32(expected["boxes_xyxy"]))


def test_open_images_candidates_follow_pysgg(outputs, sizes):
    predictions = postprocess_open_images(**outputs, image_sizes_hw=sizes)
    relation = outputs["pred_rel"].clamp(0, 1) * outputs["pred_connectivity"].clamp(0, 1)
    _, num_queries, _, num_predicates = relation.shape
    for image, prediction in enumerate(predictions):
        # Brute force with numpy, as `eval_rel_results` does: all N*N pairs (diagonal included), top-2 predicates.
        pair_scores = relation[image].reshape(-1, num_predicates).numpy()
        scores = prediction.scores
        pair_object = np.repeat(scores, num_queries) * np.tile(scores, num_queries)
        top2 = -np.sort(-pair_scores, axis=1)[:, :2]
        candidates = pair_object[:, None] * top2
        order = np.argsort(-candidates.ravel())[:100]
        np.testing.assert_array_equal(prediction.relation_scores, candidates.ravel()[order])
        np.testing.assert_array_equal(prediction.relations[:, 0] * num_queries + prediction.relations[:, 1], order // 2)
        labels = np.argsort(-pair_scores, axis=1)[:, :2].ravel()[order]
        assert prediction.relations[:, 2].tolist() == labels.tolist()
    without_self = postprocess_open_images(**outputs, image_sizes_hw=sizes, include_self_pairs=False)
    assert all(np.all(p.relations[:, 0] != p.relations[:, 1]) for p in without_self)


def test_open_images_candidates_drop_low_scores():
    pairs = torch.tensor([[[0, 1], [1, 0]]])
    pair_scores = torch.tensor([[[0.9, 0.1, 0.0], [1e-6, 0.0, 0.0]]])
    relations, triplet_scores, predicate_scores = select_open_images_candidates(pairs, pair_scores, torch.ones(1, 2))[0]
    assert relations.tolist() == [[0, 1, 0], [0, 1, 1]]  # the 1e-6 pair and zero scores are cut (<= 1e-5)
    np.testing.assert_array_equal(triplet_scores, np.float32([0.9, 0.1]))
    np.testing.assert_array_equal(predicate_scores, np.float32([0.9, 0.1]))  # object scores are 1


def test_rank_top_k_breaks_ties_by_index():
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.1], [0.2, 0.2, 0.2, 0.2, 0.2]])
    assert rank_top_k(scores, 3).tolist() == [[1, 0, 2], [0, 1, 2]]
    assert rank_top_k(scores, 10).shape == (2, 5)


def test_self_pairs_removed_and_bad_shapes(outputs, sizes):
    num_queries = outputs["logits"].shape[1]
    all_pairs = num_queries * num_queries
    predictions = postprocess_scene_graphs(**outputs, image_sizes_hw=sizes, top_k=all_pairs, graph_constraint=True)
    # Every ordered pair is ranked; the N self-pairs score 0 and come last.
    assert all(len(p.relations) == all_pairs and np.all(p.relation_scores[-num_queries:] == 0) for p in predictions)
    with pytest.raises(ValueError, match="image_sizes_hw"):
        postprocess_scene_graphs(**outputs, image_sizes_hw=sizes[:1])


def test_nan_scores_are_an_error():
    with pytest.raises(ValueError, match="NaN"):
        rank_top_k(torch.tensor([[0.1, float("nan")]]), 1)
