"""Shared pieces of the evaluators: the `Metric` interface, the prediction and ground-truth records, box overlaps.

The overlaps are plain numpy (float64), replacing the Cython `bbox_overlaps` of the original `lib/fpn` (which no
longer imports with numpy >= 1.24, quirk Q21) with the same arithmetic.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from egtr.box_ops import scale_boxes_to_pixels


class Metric(ABC):
    """An accumulating evaluator (the `update` / `reset` / `compute` interface of supervision's `Metric`)."""

    @abstractmethod
    def update(self, *args: Any, **kwargs: Any) -> Metric:
        """Add a batch of predictions and ground truths; returns self."""

    @abstractmethod
    def reset(self) -> None:
        """Forget everything added so far."""

    @abstractmethod
    def compute(self) -> Any:
        """Return a result dataclass for everything added since the last reset."""


@dataclass
class ScenePrediction:
    """The scene graph predicted for one image (`egtr.inference.postprocess` makes it, the evaluators read it).

    Attributes:
        boxes: (N, 4) float32 xyxy boxes in original-image pixels, one per object query.
        labels: (N,) int64 object classes (0-based).
        scores: (N,) float32 object scores (softmax max).
        relations: (K, 3) int64 [subject index, object index, predicate], ranked best first.
        relation_scores: (K,) float32 triplet score `rel * (s_subject * s_object)` used for the ranking.
        predicate_scores: (K,) float32 predicate score `rel` alone (clamped relation x connectivity).
        pair_predicate_scores: (K, R) float32 full `rel[i, j, :]` of each kept pair (graph-constraint mode only).
    """

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    relations: np.ndarray
    relation_scores: np.ndarray
    predicate_scores: np.ndarray
    pair_predicate_scores: np.ndarray | None = None


@dataclass
class DetectionPrediction:
    """Object detections of one image (COCO-style evaluation).

    Attributes:
        boxes: (D, 4) float32 xyxy pixels.
        labels: (D,) int64 0-based classes.
        scores: (D,) float32 scores, best first.
    """

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray


@dataclass
class SceneGroundTruth:
    """The annotated scene graph of one image.

    Attributes:
        boxes: (G, 4) xyxy boxes in original-image pixels (float32 or float64).
        labels: (G,) int64 0-based object classes.
        relations: (M, 3) int64 [subject index, object index, predicate], indices into `boxes`.
        image_id: optional dataset image id (used by the COCO-style detection evaluation).
    """

    boxes: np.ndarray
    labels: np.ndarray
    relations: np.ndarray
    image_id: int | None = None

    def validate(self, where: str = "ground truth") -> SceneGroundTruth:
        """Raise ValueError naming `where` and the field if the arrays do not fit together; returns self."""
        boxes, labels, relations = np.asarray(self.boxes), np.asarray(self.labels), np.asarray(self.relations)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"{where}: field 'boxes' must be (G, 4), got {boxes.shape}")
        if labels.shape != (boxes.shape[0],):
            raise ValueError(f"{where}: field 'labels' must be ({boxes.shape[0]},), got {labels.shape}")
        if relations.ndim != 2 or relations.shape[1] != 3:
            raise ValueError(f"{where}: field 'relations' must be (M, 3), got {relations.shape}")
        if relations.size and (relations[:, :2].min() < 0 or relations[:, :2].max() >= boxes.shape[0]):
            raise ValueError(f"{where}: field 'relations' has an object index outside 0..{boxes.shape[0] - 1}")
        if relations.size and relations[:, 2].min() < 0:
            raise ValueError(f"{where}: field 'relations' has a negative predicate")
        return self


def unique_relations(relations: np.ndarray) -> np.ndarray:
    """Sorted, de-duplicated (M, 3) relations: what the original gets from `dense_target.nonzero()`."""
    relations = np.asarray(relations, dtype=np.int64).reshape(-1, 3)
    return np.unique(relations, axis=0) if len(relations) else relations


def ground_truth_from_target(target: Mapping[str, Any]) -> SceneGroundTruth:
    """Build the evaluation ground truth from a dataset target dict (the data conventions of the project).

    Boxes go from normalised cxcywh to original-size xyxy pixels with the same float32 arithmetic as the original
    (`rescale_bboxes`); relations are de-duplicated and sorted like `target["rel"].nonzero()`.

    Args:
        target: dict with `boxes` (n, 4) normalised cxcywh, `class_labels` (n,), `relations` (M, 3),
            `orig_size` (2,) [h, w] and optionally `image_id`.

    Returns:
        The `SceneGroundTruth` of the image.
    """
    boxes = torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(1, -1, 4)
    orig_size = torch.as_tensor(target["orig_size"]).reshape(1, 2)
    pixel_boxes = scale_boxes_to_pixels(boxes, orig_size)[0].cpu().numpy()
    image_id = target.get("image_id")
    return SceneGroundTruth(
        boxes=pixel_boxes,
        labels=torch.as_tensor(target["class_labels"]).cpu().numpy().astype(np.int64),
        relations=unique_relations(torch.as_tensor(target["relations"]).cpu().numpy()),
        image_id=None if image_id is None else int(image_id),
    )


def paired_iou_inclusive(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of row-aligned xyxy boxes with the pixel-inclusive (+1) convention, float64 (reference §8).

    Same arithmetic as the Cython `bbox_overlaps(boxes_a, boxes_b)` of the original: widths are
    `x2 - x1 + 1`, the union is `(area_a + area_b) - intersection`, and the IoU is 0 when the boxes do not overlap.

    Args:
        boxes_a: (T, 4) boxes (the ground truth in the original's argument order).
        boxes_b: (T, 4) boxes (the predictions).

    Returns:
        (T,) float64 IoUs.
    """
    boxes_a = np.asarray(boxes_a, dtype=np.float64)
    boxes_b = np.asarray(boxes_b, dtype=np.float64)
    intersection_width = np.minimum(boxes_a[:, 2], boxes_b[:, 2]) - np.maximum(boxes_a[:, 0], boxes_b[:, 0]) + 1
    intersection_height = np.minimum(boxes_a[:, 3], boxes_b[:, 3]) - np.maximum(boxes_a[:, 1], boxes_b[:, 1]) + 1
    area_a = (boxes_a[:, 2] - boxes_a[:, 0] + 1) * (boxes_a[:, 3] - boxes_a[:, 1] + 1)
    area_b = (boxes_b[:, 2] - boxes_b[:, 0] + 1) * (boxes_b[:, 3] - boxes_b[:, 1] + 1)
    intersection = intersection_width * intersection_height
    overlapping = (intersection_width > 0) & (intersection_height > 0)
    union = area_a + area_b - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(overlapping, intersection / np.where(overlapping, union, 1.0), 0.0)


def pairwise_iou_inclusive(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) -> (N, M) IoU with the +1 convention (see `paired_iou_inclusive`)."""
    boxes_a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    boxes_b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    rows = np.repeat(np.arange(len(boxes_a)), len(boxes_b))
    columns = np.tile(np.arange(len(boxes_b)), len(boxes_a))
    return paired_iou_inclusive(boxes_a[rows], boxes_b[columns]).reshape(len(boxes_a), len(boxes_b))


def paired_iou_open_images(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Row-aligned IoU of PySGG's `bbox_iou`, used by the Open Images relation/phrase AP (quirk Q4, kept).

    float32 arithmetic; +1 on the intersection width/height but **not** on the areas.

    Args:
        boxes_a: (T, 4) xyxy boxes (the detections).
        boxes_b: (T, 4) xyxy boxes (the ground truth).

    Returns:
        (T,) float32 IoUs.
    """
    boxes_a = np.asarray(boxes_a, dtype=np.float32)
    boxes_b = np.asarray(boxes_b, dtype=np.float32)
    one = np.float32(1)
    width = np.maximum(np.minimum(boxes_a[:, 2], boxes_b[:, 2]) - np.maximum(boxes_a[:, 0], boxes_b[:, 0]) + one, 0)
    height = np.maximum(np.minimum(boxes_a[:, 3], boxes_b[:, 3]) - np.maximum(boxes_a[:, 1], boxes_b[:, 1]) + one, 0)
    intersection = width * height
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]) * (boxes_b[:, 3] - boxes_b[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return (intersection / (area_a + area_b - intersection)).astype(np.float32)


def union_boxes(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Row-wise enclosing box of two (T, 4) xyxy box arrays (the phrase box of subject and object)."""
    return np.concatenate(
        [np.minimum(boxes_a[:, :2], boxes_b[:, :2]), np.maximum(boxes_a[:, 2:], boxes_b[:, 2:])], axis=1
    )
