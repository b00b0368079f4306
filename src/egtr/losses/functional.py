"""Tensor helpers of the EGTR losses: focal loss, query-space relation targets, and relation sampling masks.

Everything here is vectorised over the batch and stays on the device (no host synchronisation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Element-wise sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017).

    `FL = BCEWithLogits(x, t) (1 - p_t)^gamma alpha_t` with `p_t = p t + (1-p)(1-t)` and
    `alpha_t = alpha t + (1-alpha)(1-t)`.

    Args:
        logits: (...) logits.
        targets: (...) targets in [0, 1], same shape.
        alpha: weight of the positives (negative value: no alpha weighting).
        gamma: focusing exponent.

    Returns:
        (...) loss, not reduced.
    """
    probabilities = logits.sigmoid()
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    probability_of_truth = probabilities * targets + (1 - probabilities) * (1 - targets)
    loss = cross_entropy * ((1 - probability_of_truth) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def relation_targets_in_query_space(
    relations: torch.Tensor,
    relation_batch_index: torch.Tensor,
    target_to_query: torch.Tensor,
    batch_size: int,
    num_queries: int,
    num_rel_labels: int,
) -> torch.Tensor:
    """Dense multi-hot relation targets indexed by (subject query, object query, predicate).

    The original builds an (N, N, R) tensor per image in ground-truth index space and permutes it into
    matched-query order. Here the matched query of each endpoint is looked up directly: a relation whose
    subject or object is not matched (more ground-truth objects than queries) is dropped, as in the original's
    permutation.

    Args:
        relations: (M, 3) int64 `[subject, object, predicate]` of all images, subject/object as indices into
            the image's own ground-truth objects.
        relation_batch_index: (M,) int64 image of each relation.
        target_to_query: (B, T_max) int64: for each image and ground-truth object, its matched query or -1.
        batch_size: B.
        num_queries: N.
        num_rel_labels: R.

    Returns:
        (B, N, N, R) float32 tensor with 1 at every matched relation (duplicates collapse to 1).
    """
    device = target_to_query.device
    # One spare row/column (index N) absorbs relations with an unmatched endpoint, which avoids a
    # data-dependent boolean mask (a host sync) and keeps every write a deterministic "set to 1".
    targets = torch.zeros(batch_size, num_queries + 1, num_queries + 1, num_rel_labels, device=device)
    if relations.numel():
        subject_query = target_to_query[relation_batch_index, relations[:, 0]]  # (M,)
        object_query = target_to_query[relation_batch_index, relations[:, 1]]  # (M,)
        subject_query = torch.where(subject_query < 0, num_queries, subject_query)
        object_query = torch.where(object_query < 0, num_queries, object_query)
        # A device-side value: a Python scalar would be copied from the host on every call.
        targets.index_put_((relation_batch_index, subject_query, object_query, relations[:, 2]), targets.new_ones(()))
    return targets[:, :num_queries, :num_queries]


def top_k_mask(scores: torch.Tensor, candidates: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per row, mark the k highest-scoring candidate entries.

    Args:
        scores: (B, E) scores (detached).
        candidates: (B, E) bool, entries that may be chosen.
        k: (B,) int64 number to keep per row (clipped to the number of candidates automatically).

    Returns:
        (B, E) bool mask of the chosen entries.
    """
    keyed = scores.masked_fill(~candidates, float("-inf"))
    order = keyed.argsort(dim=1, descending=True)  # (B, E)
    ranks = torch.arange(scores.shape[1], device=scores.device).expand_as(scores)
    chosen_in_sorted_order = ranks < k[:, None]
    chosen = torch.zeros_like(candidates).scatter(1, order, chosen_in_sorted_order)
    return chosen & candidates


def sample_relation_entries(
    relation_logits: torch.Tensor,
    relation_targets: torch.Tensor,
    matched: torch.Tensor,
    negatives_per_positive: int | None,
    nonmatching_per_positive: int | None,
    negatives_largest: bool,
    nonmatching_largest: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Training-time selection of relation entries (reference §3.3).

    Per image, with P+ = number of positive entries:
      * all positives (target 1; they lie in the matched block);
      * negatives: non-positive entries of the matched block (self-pairs included), `min(ratio P+, #)` of
        them, the highest-logit ones (hard negatives) or a uniformly random subset;
      * non-matching: entries whose subject or object query is unmatched, `min(ratio P+, #)`, highest-logit or
        random.
    A ratio of None keeps all candidates of that kind; an image without positives contributes no negatives.

    Args:
        relation_logits: (B, N, N, R) relation logits (the sampling scores of the "largest" modes).
        relation_targets: (B, N, N, R) multi-hot targets in query space (unsmoothed).
        matched: (B, N) bool, queries matched to a ground-truth object.
        negatives_per_positive: negatives kept per positive, or None for all.
        nonmatching_per_positive: non-matching entries kept per positive, or None for all.
        negatives_largest: hardest negatives if True, random ones if False.
        nonmatching_largest: hardest non-matching entries if True, random ones if False.
        generator: optional random generator of the random modes.

    Returns:
        (B, N, N, R) bool mask of the selected entries.
    """
    batch_size = relation_logits.shape[0]
    scores = relation_logits.detach().reshape(batch_size, -1)  # (B, N*N*R)
    positives = relation_targets.reshape(batch_size, -1) == 1
    matched_pairs = matched[:, :, None] & matched[:, None, :]  # (B, N, N)
    in_matched_block = matched_pairs[..., None].expand_as(relation_targets).reshape(batch_size, -1)
    num_positives = positives.sum(dim=1)  # (B,)
    selected = positives.clone()
    for ratio, largest, candidates in (
        (negatives_per_positive, negatives_largest, in_matched_block & ~positives),
        (nonmatching_per_positive, nonmatching_largest, ~in_matched_block),
    ):
        if ratio is None:
            selected |= candidates
            continue
        keep = num_positives * ratio  # (B,) 0 when the image has no positive or the ratio is 0
        # Top-k of i.i.d. uniform keys is a uniformly random k-subset.
        sampling_scores = scores if largest else torch.rand(scores.shape, device=scores.device, generator=generator)
        selected |= top_k_mask(sampling_scores, candidates, keep)
    return selected.reshape(relation_targets.shape)
