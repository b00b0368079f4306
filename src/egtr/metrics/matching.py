"""Vectorised triplet matching over many images at once (the `_compute_pred_matches` rule of neural-motifs).

A predicted triplet (i, j, p) matches a ground-truth triplet (s, o, q) of the same image iff the subject classes,
the predicates and the object classes are equal and both IoUs (+1-pixel convention, float64) are >= the threshold.
With `phrase=True` the IoU of the subject-object union boxes is used instead. One prediction may match several
ground truths and one ground truth several predictions (no one-to-one constraint), as in the original.

Instead of looping over ground truths per image, all triplets of a batch of images are flattened; candidate pairs
with equal (image, subject class, predicate, object class) are found by a sort + binary search on an integer key,
and the IoUs are computed only for those pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from egtr.metrics.core import SceneGroundTruth, paired_iou_inclusive, union_boxes

NO_MATCH = np.iinfo(np.int64).max  # rank of a ground truth that no prediction matches


@dataclass
class FlatTriplets:
    """Triplets of several images in flat arrays (T = total number of triplets).

    Attributes:
        image_index: (T,) int64 position of the triplet's image in the batch.
        rank: (T,) int64 row of the triplet in its image (the ranking position for predictions).
        subject_labels, object_labels, predicates: (T,) int64.
        subject_boxes, object_boxes: (T, 4) xyxy boxes (float32 or float64 values).
        counts: (I,) int64 number of triplets of each image.
    """

    image_index: np.ndarray
    rank: np.ndarray
    subject_labels: np.ndarray
    object_labels: np.ndarray
    predicates: np.ndarray
    subject_boxes: np.ndarray
    object_boxes: np.ndarray
    counts: np.ndarray


def _flatten(boxes_list, labels_list, relations_list, what: str) -> FlatTriplets:
    object_counts = np.array([len(labels) for labels in labels_list], dtype=np.int64)
    relation_counts = np.array([len(relations) for relations in relations_list], dtype=np.int64)
    object_offsets = np.concatenate([[0], np.cumsum(object_counts)[:-1]]).astype(np.int64)
    relation_offsets = np.concatenate([[0], np.cumsum(relation_counts)[:-1]]).astype(np.int64)
    boxes = np.concatenate([np.asarray(b).reshape(-1, 4) for b in boxes_list]) if boxes_list else np.zeros((0, 4))
    labels = (
        np.concatenate([np.asarray(x, dtype=np.int64).reshape(-1) for x in labels_list])
        if labels_list
        else np.zeros(0, np.int64)
    )
    relations = (
        np.concatenate([np.asarray(r, dtype=np.int64).reshape(-1, 3) for r in relations_list])
        if relations_list
        else np.zeros((0, 3), np.int64)
    )
    image_index = np.repeat(np.arange(len(relation_counts), dtype=np.int64), relation_counts)
    if len(boxes) != len(labels):
        raise ValueError(f"{what}: {len(boxes)} boxes but {len(labels)} labels in total")
    local_indices = relations[:, :2]
    out_of_range = (local_indices < 0).any(1) | (local_indices >= object_counts[image_index, None]).any(1)
    if out_of_range.any():
        image = int(image_index[np.argmax(out_of_range)])
        raise ValueError(
            f"{what} of image {image} of the batch: field 'relations' indexes an object outside "
            f"0..{object_counts[image] - 1}"
        )
    subjects = relations[:, 0] + object_offsets[image_index]
    objects = relations[:, 1] + object_offsets[image_index]
    return FlatTriplets(
        image_index=image_index,
        rank=np.arange(len(relations), dtype=np.int64) - relation_offsets[image_index],
        subject_labels=labels[subjects],
        object_labels=labels[objects],
        predicates=relations[:, 2].copy(),
        subject_boxes=boxes[subjects],
        object_boxes=boxes[objects],
        counts=relation_counts,
    )


def flatten_predictions(predictions: Sequence, top_k: int | None = None) -> FlatTriplets:
    """Flatten ranked predictions (objects with `boxes`, `labels`, `relations`), keeping the first `top_k`."""
    return _flatten(
        [p.boxes for p in predictions],
        [p.labels for p in predictions],
        [np.asarray(p.relations).reshape(-1, 3)[:top_k] for p in predictions],
        "prediction",
    )


def flatten_ground_truths(ground_truths: Sequence[SceneGroundTruth]) -> FlatTriplets:
    """Flatten ground truths; their relations are used as given (de-duplicate them first if needed)."""
    return _flatten(
        [g.boxes for g in ground_truths],
        [g.labels for g in ground_truths],
        [g.relations for g in ground_truths],
        "ground truth",
    )


def label_compatible_pairs(predicted: FlatTriplets, ground_truth: FlatTriplets) -> tuple[np.ndarray, np.ndarray]:
    """All (prediction, ground truth) row pairs of the same image with equal subject class, predicate and object
    class, sorted by prediction then ground truth (boxes are not compared here).

    Each triplet becomes one mixed-radix integer key of (image, subject class, predicate, object class); a sort of
    the ground-truth keys and two binary searches then give every prediction's equal-key range, without a loop.

    Returns:
        (prediction rows (P,), ground-truth rows (P,)) int64.
    """
    empty = np.zeros(0, dtype=np.int64)
    if len(predicted.predicates) == 0 or len(ground_truth.predicates) == 0:
        return empty, empty
    num_images = int(max(predicted.image_index.max(), ground_truth.image_index.max())) + 1
    num_labels = 1 + int(
        max(
            predicted.subject_labels.max(),
            predicted.object_labels.max(),
            ground_truth.subject_labels.max(),
            ground_truth.object_labels.max(),
        )
    )
    num_predicates = int(max(predicted.predicates.max(), ground_truth.predicates.max())) + 1
    if num_images * num_labels * num_labels * num_predicates >= 2**62:
        raise ValueError("too many images x classes x predicates for one batch; evaluate in smaller chunks")

    def encode(triplets: FlatTriplets) -> np.ndarray:
        key = triplets.image_index * num_labels + triplets.subject_labels
        key = key * num_predicates + triplets.predicates
        return key * num_labels + triplets.object_labels

    ground_truth_keys = encode(ground_truth)
    order = np.argsort(ground_truth_keys, kind="stable")
    sorted_keys = ground_truth_keys[order]
    predicted_keys = encode(predicted)
    first = np.searchsorted(sorted_keys, predicted_keys, side="left")
    counts = np.searchsorted(sorted_keys, predicted_keys, side="right") - first
    # Expand every prediction into its label-compatible ground truths.
    prediction_rows = np.repeat(np.arange(len(predicted_keys), dtype=np.int64), counts)
    within = np.arange(len(prediction_rows), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return prediction_rows, order[first[prediction_rows] + within].astype(np.int64)


def match_triplets(
    predicted: FlatTriplets, ground_truth: FlatTriplets, iou_threshold: float = 0.5, phrase: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """All (prediction, ground truth) pairs that match, as flat row indices sorted by prediction then ground truth.

    Args:
        predicted: flattened predictions.
        ground_truth: flattened ground truths of the same images (same `image_index` numbering).
        iou_threshold: minimum IoU (inclusive, `>=`) of subject and object boxes.
        phrase: compare the union boxes instead (phrase detection).

    Returns:
        (prediction rows (P,), ground-truth rows (P,)) int64.
    """
    prediction_rows, ground_truth_rows = label_compatible_pairs(predicted, ground_truth)
    if len(prediction_rows) == 0:
        return prediction_rows, ground_truth_rows

    if phrase:
        ground_truth_union = union_boxes(
            ground_truth.subject_boxes[ground_truth_rows], ground_truth.object_boxes[ground_truth_rows]
        )
        predicted_union = union_boxes(predicted.subject_boxes[prediction_rows], predicted.object_boxes[prediction_rows])
        keep = paired_iou_inclusive(ground_truth_union, predicted_union) >= iou_threshold
    else:
        keep = (
            paired_iou_inclusive(
                ground_truth.subject_boxes[ground_truth_rows], predicted.subject_boxes[prediction_rows]
            )
            >= iou_threshold
        )
        keep &= (
            paired_iou_inclusive(ground_truth.object_boxes[ground_truth_rows], predicted.object_boxes[prediction_rows])
            >= iou_threshold
        )
    prediction_rows, ground_truth_rows = prediction_rows[keep], ground_truth_rows[keep]
    resort = np.lexsort((ground_truth_rows, prediction_rows))
    return prediction_rows[resort], ground_truth_rows[resort]


def first_match_ranks(
    predicted: FlatTriplets, ground_truth: FlatTriplets, iou_threshold: float = 0.5, phrase: bool = False
) -> np.ndarray:
    """For each ground-truth triplet, the best (lowest) rank of a prediction that matches it.

    A ground truth is recalled at K iff its rank is < K, so one pass serves every K.

    Returns:
        (G,) int64 ranks; `NO_MATCH` where no prediction matches.
    """
    ranks = np.full(len(ground_truth.predicates), NO_MATCH, dtype=np.int64)
    prediction_rows, ground_truth_rows = match_triplets(predicted, ground_truth, iou_threshold, phrase)
    np.minimum.at(ranks, ground_truth_rows, predicted.rank[prediction_rows])
    return ranks


def predictions_to_ground_truth(
    predicted: FlatTriplets, ground_truth: FlatTriplets, image: int, iou_threshold: float = 0.5
) -> list[list[int]]:
    """The original's per-image `pred_to_gt`: for each prediction of `image`, the matched ground-truth rows.

    Ground-truth rows are local to the image (0..M-1), ascending. Meant for inspection and tests.
    """
    prediction_rows, ground_truth_rows = match_triplets(predicted, ground_truth, iou_threshold)
    in_image = predicted.image_index[prediction_rows] == image
    result: list[list[int]] = [[] for _ in range(int(predicted.counts[image]))]
    for prediction_row, ground_truth_row in zip(prediction_rows[in_image], ground_truth_rows[in_image]):
        result[int(predicted.rank[prediction_row])].append(int(ground_truth.rank[ground_truth_row]))
    return result
