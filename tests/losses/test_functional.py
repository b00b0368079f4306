"""Tests of egtr.losses.functional: focal loss, query-space relation targets, top-k masks."""

from __future__ import annotations

import math

import pytest
import torch

from egtr.losses.functional import relation_targets_in_query_space, sigmoid_focal_loss, top_k_mask


def test_sigmoid_focal_loss_matches_the_formula():
    logit, alpha, gamma = 0.7, 0.25, 2.0
    probability = 1 / (1 + math.exp(-logit))
    positive = sigmoid_focal_loss(torch.tensor([logit]), torch.tensor([1.0]), alpha, gamma).item()
    negative = sigmoid_focal_loss(torch.tensor([logit]), torch.tensor([0.0]), alpha, gamma).item()
    assert positive == pytest.approx(alpha * (1 - probability) ** gamma * -math.log(probability), rel=1e-6)
    assert negative == pytest.approx((1 - alpha) * probability**gamma * -math.log(1 - probability), rel=1e-6)


def test_relation_targets_follow_the_matching_and_drop_unmatched_objects():
    # Image 0: objects 0, 1, 2 matched to queries 3, 0, (unmatched). Image 1: object 0 -> query 1.
    target_to_query = torch.tensor([[3, 0, -1], [1, -1, -1]])
    relations = torch.tensor([[0, 1, 2], [0, 1, 2], [1, 2, 0], [0, 0, 1]])  # a duplicate, one unmatched object
    batch_index = torch.tensor([0, 0, 0, 1])
    targets = relation_targets_in_query_space(relations, batch_index, target_to_query, 2, 4, 3)
    assert targets.shape == (2, 4, 4, 3)
    assert targets.sum().item() == 2
    assert targets[0, 3, 0, 2].item() == 1.0  # subject query 3, object query 0, predicate 2
    assert targets[1, 1, 1, 1].item() == 1.0


def test_relation_targets_without_relations_are_zero():
    targets = relation_targets_in_query_space(
        torch.zeros(0, 3, dtype=torch.int64),
        torch.zeros(0, dtype=torch.int64),
        torch.full((2, 1), -1),
        2,
        3,
        4,
    )
    assert targets.shape == (2, 3, 3, 4) and targets.sum() == 0


def test_top_k_mask_keeps_the_highest_candidates_and_caps_at_the_candidate_count():
    scores = torch.tensor([[5.0, 1.0, 4.0, 3.0, 9.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    candidates = torch.tensor([[True, True, True, True, False], [True, False, True, False, False]])
    chosen = top_k_mask(scores, candidates, torch.tensor([2, 10]))
    assert chosen.tolist() == [[True, False, True, False, False], [True, False, True, False, False]]
    assert not top_k_mask(scores, candidates, torch.tensor([0, 0])).any()
