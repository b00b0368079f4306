"""Tests of egtr.losses.matcher: reference costs and assignment, invariances, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from egtr.config import LossConfig
from egtr.losses.matcher import HungarianMatcher, focal_class_cost


def _random_batch(generator: torch.Generator, batch_size: int, num_queries: int, num_classes: int, sizes: list[int]):
    logits = torch.randn(batch_size, num_queries, num_classes, generator=generator)
    centers = torch.rand(batch_size, num_queries, 2, generator=generator) * 0.6 + 0.2
    sizes_wh = torch.rand(batch_size, num_queries, 2, generator=generator) * 0.3 + 0.05
    pred_boxes = torch.cat([centers, sizes_wh], dim=-1)
    targets = []
    for count in sizes:
        target_centers = torch.rand(count, 2, generator=generator) * 0.6 + 0.2
        target_sizes = torch.rand(count, 2, generator=generator) * 0.3 + 0.05
        targets.append(
            {
                "boxes": torch.cat([target_centers, target_sizes], dim=-1),
                "class_labels": torch.randint(num_classes, (count,), generator=generator),
            }
        )
    return logits, pred_boxes, targets


def test_reference_cost_matrices_assignment_and_costs(reference_outputs, reference_targets, reference_matching):
    matcher = HungarianMatcher.from_loss_config(LossConfig())
    logits, boxes = reference_outputs["logits"], reference_outputs["pred_boxes"]
    matrices = matcher.cost_matrices(logits, boxes, reference_targets)
    indices, costs = matcher(logits, boxes, reference_targets)
    for image in range(len(reference_targets)):
        # The shift adds ~30 to every entry, so float32 rounding of ~2e-6 is absolute, not relative.
        np.testing.assert_allclose(
            matrices[image].numpy(), reference_matching[f"cost_matrix_{image}"], rtol=1e-5, atol=1e-5
        )
        np.testing.assert_array_equal(indices[image][0].numpy(), reference_matching[f"query_idx_{image}"])
        np.testing.assert_array_equal(indices[image][1].numpy(), reference_matching[f"target_idx_{image}"])
        np.testing.assert_allclose(
            costs[image].numpy(), reference_matching[f"matching_costs_{image}"], rtol=1e-5, atol=1e-5
        )
    np.testing.assert_allclose(matcher.nonmatching_cost, reference_matching["nonmatching_cost"], rtol=1e-6)


def test_shift_constants_match_the_reference():
    matcher = HungarianMatcher()
    assert matcher.minimum_cost == pytest.approx(-29.63102, abs=1e-5)
    assert matcher.logit_smoothing == pytest.approx(-32.23619, abs=1e-5)
    assert matcher.nonmatching_cost == pytest.approx(28.605171, abs=1e-5)
    # 1 - sigmoid(nonmatching cost) is exactly 0 in float32: unmatched queries get relation weight 0.
    assert 1.0 - torch.tensor(matcher.nonmatching_cost).sigmoid().item() == 0.0


def test_perfect_match_costs_logit_of_smoothing():
    matcher = HungarianMatcher()
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2]]])
    logits = torch.full((1, 1, 3), -30.0)
    logits[0, 0, 1] = 40.0  # p -> 1 for the target class
    _, costs = matcher(logits, boxes, [{"boxes": boxes[0], "class_labels": torch.tensor([1])}])
    assert costs[0].item() == pytest.approx(matcher.logit_smoothing, abs=1e-4)


def test_batched_and_per_image_matching_agree():
    generator = torch.Generator().manual_seed(0)
    sizes = [3, 0, 7, 1]
    logits, boxes, targets = _random_batch(generator, 4, 20, 6, sizes)
    matcher = HungarianMatcher()
    batched_indices, batched_costs = matcher(logits, boxes, targets)
    for image in range(len(sizes)):
        single_indices, single_costs = matcher(
            logits[image : image + 1], boxes[image : image + 1], targets[image : image + 1]
        )
        assert torch.equal(batched_indices[image][0], single_indices[0][0])
        assert torch.equal(batched_indices[image][1], single_indices[0][1])
        torch.testing.assert_close(batched_costs[image], single_costs[0], rtol=0, atol=0)
        assert len(batched_indices[image][0]) == sizes[image]


def test_empty_targets_give_empty_assignment():
    generator = torch.Generator().manual_seed(1)
    logits, boxes, targets = _random_batch(generator, 2, 5, 4, [0, 0])
    indices, costs = HungarianMatcher()(logits, boxes, targets)
    assert [len(query) for query, _ in indices] == [0, 0]
    assert [cost.numel() for cost in costs] == [0, 0]


def test_more_targets_than_queries_matches_every_query():
    generator = torch.Generator().manual_seed(2)
    logits, boxes, targets = _random_batch(generator, 1, 4, 3, [9])
    ((query, target),) = HungarianMatcher()(logits, boxes, targets)[0]
    assert sorted(query.tolist()) == [0, 1, 2, 3]
    assert len(set(target.tolist())) == 4


def test_shift_does_not_change_the_assignment():
    generator = torch.Generator().manual_seed(3)
    logits, boxes, targets = _random_batch(generator, 3, 15, 5, [4, 6, 2])
    shifted = HungarianMatcher(smoothing=1e-14)(logits, boxes, targets)
    plain = HungarianMatcher(smoothing=0.0)(logits, boxes, targets)
    for (shifted_query, shifted_target), (plain_query, plain_target), shifted_cost, plain_cost in zip(
        shifted[0], plain[0], shifted[1], plain[1]
    ):
        assert torch.equal(shifted_query, plain_query) and torch.equal(shifted_target, plain_target)
        expected_shift = HungarianMatcher().logit_smoothing - HungarianMatcher().minimum_cost
        torch.testing.assert_close(
            shifted_cost - plain_cost, torch.full_like(plain_cost, expected_shift), atol=1e-4, rtol=0
        )


def test_class_cost_is_lowest_for_confident_positive():
    probabilities = torch.tensor([0.01, 0.5, 0.99])
    cost = focal_class_cost(probabilities)
    assert cost[2] < cost[1] < cost[0]


def test_non_finite_prediction_is_a_clear_error():
    generator = torch.Generator().manual_seed(4)
    logits, boxes, targets = _random_batch(generator, 1, 3, 2, [2])
    boxes[0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        HungarianMatcher()(logits, boxes, targets)


def test_invalid_cost_weights_and_smoothing_are_rejected():
    with pytest.raises(ValueError):
        HungarianMatcher(class_cost=0, bbox_cost=0, giou_cost=0)
    with pytest.raises(ValueError):
        HungarianMatcher(smoothing=1.5)
