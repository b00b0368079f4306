"""Open Images V6 relation metrics: micro R@50, wmAP_rel, wmAP_phr and score_wtd (reference §6.2).

Reproduces `eval_rel_results` and `ap_eval_rel.py` of the original (from PySGG, after Ji Zhang et al.,
"Graphical Contrastive Losses for Scene Graph Parsing", CVPR 2019, and the VOC AP code of Fast R-CNN):

* candidates: the top-100 triplets of `egtr.inference.postprocess.postprocess_open_images` (top-2 predicates per pair,
  score > 1e-5), ranked best first;
* micro R@K = (sum over images of ground truths matched by the top-K) / (total ground truths + 1e-12), matching
  as in `egtr.metrics.matching` (labels equal, IoU >= 0.5 for both boxes, +1-pixel IoU). "microR@50" is the
  paper's Open Images recall;
* relation AP per predicate c: the detections of class c from all images sorted by score; a detection is a true
  positive when, among the ground truths of class c of its image with equal subject and object labels, the best
  `min(IoU_subject, IoU_object)` is **> 0.5 (strict)** and that ground truth (the first with the best IoU) was not
  taken by a higher-scored detection (greedy, each ground truth once). The IoU is PySGG's `bbox_iou` in float32,
  +1 on the intersection but not on the areas (quirk Q4, kept). AP = all-point interpolated area (VOC 2010+);
* phrase AP: the same with the IoU of the subject-object union boxes;
* w_rel_mAP / w_phr_mAP = sum_c AP_c * npos_c / sum npos; score = 0.4 w_rel + 0.4 w_phr + 0.2 microR@50.

The best ground truth of every detection is found for all detections at once (it does not depend on the greedy
state); the greedy step then reduces to "the first detection, in score order, of each ground truth".

Decisions where the original has none: with no ground-truth relation at all the mAPs are NaN (the original
divides by zero). The per-image R@K reported here (`per_image_recall`, not in the original's output) is the mean
over images with at least one ground-truth relation, like the VG recall.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from egtr.metrics.core import Metric, SceneGroundTruth, paired_iou_open_images, union_boxes, unique_relations
from egtr.metrics.matching import (
    FlatTriplets,
    first_match_ranks,
    flatten_ground_truths,
    flatten_predictions,
    label_compatible_pairs,
)

DEFAULT_RECALL_KS = (20, 50, 100)


@dataclass
class OpenImagesRelationResult:
    """Open Images relation metrics.

    Attributes:
        micro_recall: {K: micro R@K}.
        per_image_recall: {K: mean per-image R@K over images with relations}.
        weighted_relation_map / weighted_phrase_map: wmAP_rel / wmAP_phr.
        relation_map / phrase_map: unweighted means of the per-predicate APs.
        relation_ap / phrase_ap: (R,) per-predicate APs.
        num_positives: (R,) ground-truth relations per predicate.
        score: 0.4 wmAP_rel + 0.4 wmAP_phr + 0.2 microR@50.
        num_images: images seen.
    """

    micro_recall: dict[int, float]
    per_image_recall: dict[int, float]
    weighted_relation_map: float
    weighted_phrase_map: float
    relation_map: float
    phrase_map: float
    relation_ap: np.ndarray
    phrase_ap: np.ndarray
    num_positives: np.ndarray
    score: float
    num_images: int

    def to_dict(self) -> dict[str, float]:
        """The original's keys (`w_rel_mAP`, `w_phr_mAP`, `microR@50`, `score`) plus `open_images/...` names."""
        flat = {
            "w_rel_mAP": self.weighted_relation_map,
            "w_phr_mAP": self.weighted_phrase_map,
            "microR@50": self.micro_recall[50],
            "score": self.score,
            "open_images/weighted_relation_map": self.weighted_relation_map,
            "open_images/weighted_phrase_map": self.weighted_phrase_map,
            "open_images/relation_map": self.relation_map,
            "open_images/phrase_map": self.phrase_map,
            "open_images/score_wtd": self.score,
        }
        for k, value in self.micro_recall.items():
            flat[f"open_images/micro_recall@{k}"] = value
        for k, value in self.per_image_recall.items():
            flat[f"open_images/per_image_recall@{k}"] = value
        return flat

    def __str__(self) -> str:
        return (
            f"Open Images relations ({self.num_images} images): microR@50 {100 * self.micro_recall[50]:.2f}  "
            f"wmAP_rel {100 * self.weighted_relation_map:.2f}  wmAP_phr {100 * self.weighted_phrase_map:.2f}  "
            f"score_wtd {100 * self.score:.2f}  (per-image R@50 {100 * self.per_image_recall[50]:.2f})"
        )


class OpenImagesRelationMetrics(Metric):
    """Accumulating Open Images V6 relation evaluator.

    Args:
        num_predicates: R.
        recall_ks: K values of the micro / per-image recall (must include 50).
        iou_threshold: recall matching threshold (inclusive) and AP threshold (strict).
    """

    def __init__(self, num_predicates: int, recall_ks: Sequence[int] = DEFAULT_RECALL_KS, iou_threshold: float = 0.5):
        self.num_predicates = int(num_predicates)
        self.recall_ks = tuple(int(k) for k in recall_ks)
        if 50 not in self.recall_ks:
            raise ValueError("recall_ks must include 50 (score_wtd uses micro R@50)")
        self.iou_threshold = iou_threshold
        self.reset()

    def reset(self) -> None:
        self._num_images = 0
        self._predictions: list[FlatTriplets] = []
        self._prediction_scores: list[np.ndarray] = []
        self._truths: list[FlatTriplets] = []
        self._truth_ranks: list[np.ndarray] = []

    def update(self, predictions: Sequence, ground_truths: Sequence[SceneGroundTruth]) -> OpenImagesRelationMetrics:
        """Add a batch: per image the ranked candidates (`relations`, `relation_scores`, `boxes`, `labels`).

        Args:
            predictions: per image, an object like `ScenePrediction` from `postprocess_open_images`.
            ground_truths: per image, the `SceneGroundTruth` (relations are de-duplicated like the original's).
        """
        if len(predictions) != len(ground_truths):
            raise ValueError(f"got {len(predictions)} predictions but {len(ground_truths)} ground truths")
        deduplicated = [SceneGroundTruth(g.boxes, g.labels, unique_relations(g.relations)) for g in ground_truths]
        flat_truth = flatten_ground_truths(deduplicated)
        if flat_truth.predicates.size and flat_truth.predicates.max() >= self.num_predicates:
            raise ValueError(
                f"ground truth: field 'relations' has predicate {int(flat_truth.predicates.max())} "
                f">= num_predicates={self.num_predicates}"
            )
        flat_predictions = flatten_predictions(predictions)
        self._truth_ranks.append(first_match_ranks(flat_predictions, flat_truth, self.iou_threshold))
        # Shift to global image numbers so that batches can be concatenated.
        flat_truth.image_index = flat_truth.image_index + self._num_images
        flat_predictions.image_index = flat_predictions.image_index + self._num_images
        self._truths.append(flat_truth)
        self._predictions.append(flat_predictions)
        self._prediction_scores.append(
            np.concatenate([np.asarray(p.relation_scores).reshape(-1) for p in predictions])
            if predictions
            else np.zeros(0, np.float32)
        )
        self._num_images += len(ground_truths)
        return self

    def compute(self) -> OpenImagesRelationResult:
        """Recalls and weighted mAPs of everything added since the last reset."""
        truth = _concatenate_flat(self._truths)
        predicted = _concatenate_flat(self._predictions)
        scores = np.concatenate(self._prediction_scores) if self._prediction_scores else np.zeros(0, np.float32)
        ranks = np.concatenate(self._truth_ranks) if self._truth_ranks else np.zeros(0, np.int64)
        total_truths = len(ranks)

        micro_recall, per_image_recall = {}, {}
        has_relations = truth.counts > 0
        for k in self.recall_ks:
            hits = ranks < k
            micro_recall[k] = float(int(hits.sum())) / (float(total_truths) + 1e-12)
            per_image_hits = np.bincount(truth.image_index[hits], minlength=self._num_images)[has_relations]
            per_image = per_image_hits / truth.counts[has_relations]
            per_image_recall[k] = float(np.mean(per_image)) if per_image.size else float("nan")

        num_positives = np.bincount(truth.predicates, minlength=self.num_predicates)
        relation_ap = self._average_precisions(predicted, scores, truth, phrase=False)
        phrase_ap = self._average_precisions(predicted, scores, truth, phrase=True)
        all_positives = int(num_positives.sum())
        weighted_relation_map = _weighted_sum(relation_ap, num_positives, all_positives)
        weighted_phrase_map = _weighted_sum(phrase_ap, num_positives, all_positives)
        score = weighted_relation_map * 0.4 + weighted_phrase_map * 0.4 + micro_recall[50] * 0.2
        return OpenImagesRelationResult(
            micro_recall=micro_recall,
            per_image_recall=per_image_recall,
            weighted_relation_map=weighted_relation_map,
            weighted_phrase_map=weighted_phrase_map,
            relation_map=float(relation_ap.mean()) if self.num_predicates else float("nan"),
            phrase_map=float(phrase_ap.mean()) if self.num_predicates else float("nan"),
            relation_ap=relation_ap,
            phrase_ap=phrase_ap,
            num_positives=num_positives,
            score=score,
            num_images=self._num_images,
        )

    def _average_precisions(
        self, predicted: FlatTriplets, scores: np.ndarray, truth: FlatTriplets, phrase: bool
    ) -> np.ndarray:
        best_overlap, best_truth = _best_ground_truth(predicted, truth, phrase)
        num_positives = np.bincount(truth.predicates, minlength=self.num_predicates)
        average_precisions = np.zeros(self.num_predicates)
        for predicate in range(self.num_predicates):
            members = np.flatnonzero(predicted.predicates == predicate)  # in (image, rank) order, like PySGG
            confidence = scores[members].astype(np.float64)
            order = members[np.argsort(-confidence)]  # numpy's default sort on the same array: same order
            # Strict > in float32, like the original.
            candidate = best_overlap[order] > np.float32(self.iou_threshold)
            true_positive = np.zeros(len(order))
            candidate_positions = np.flatnonzero(candidate)
            # Greedy: each ground truth goes to its first (highest-scored) detection.
            _, first = np.unique(best_truth[order][candidate_positions], return_index=True)
            true_positive[candidate_positions[first]] = 1.0
            false_positive = 1.0 - true_positive
            true_positive, false_positive = np.cumsum(true_positive), np.cumsum(false_positive)
            recall = true_positive / (float(num_positives[predicate]) + 1e-12)
            precision = true_positive / np.maximum(true_positive + false_positive, np.finfo(np.float64).eps)
            average_precisions[predicate] = voc_average_precision(recall, precision)
        return average_precisions


def voc_average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP (`get_ap` of the VOC code): area under the precision envelope."""
    recall_points = np.concatenate(([0.0], recall, [1.0]))
    precision_points = np.concatenate(([0.0], precision, [0.0]))
    precision_points = np.maximum.accumulate(precision_points[::-1])[::-1]  # envelope, right to left
    changes = np.where(recall_points[1:] != recall_points[:-1])[0]
    return float(np.sum((recall_points[changes + 1] - recall_points[changes]) * precision_points[changes + 1]))


def _best_ground_truth(predicted: FlatTriplets, truth: FlatTriplets, phrase: bool) -> tuple[np.ndarray, np.ndarray]:
    """For every detection, the best overlap with a same-image, same-labels ground truth and that ground truth.

    Returns:
        (T,) float32 best overlaps (0 without a candidate) and (T,) int64 ground-truth rows (-1 without one); among
        equal overlaps the first ground truth (lowest row) wins, as `torch.argmax` upstream.
    """
    num_detections = len(predicted.predicates)
    best_overlap = np.zeros(num_detections, dtype=np.float32)
    best_truth = np.full(num_detections, -1, dtype=np.int64)
    if num_detections == 0 or len(truth.predicates) == 0:
        return best_overlap, best_truth
    detection_rows, truth_rows = label_compatible_pairs(predicted, truth)
    if phrase:
        overlaps = paired_iou_open_images(
            union_boxes(predicted.subject_boxes[detection_rows], predicted.object_boxes[detection_rows]),
            union_boxes(truth.subject_boxes[truth_rows], truth.object_boxes[truth_rows]),
        )
    else:
        overlaps = np.minimum(
            paired_iou_open_images(predicted.subject_boxes[detection_rows], truth.subject_boxes[truth_rows]),
            paired_iou_open_images(predicted.object_boxes[detection_rows], truth.object_boxes[truth_rows]),
        )
    # Best per detection: sort by detection, then overlap descending, then ground-truth row ascending.
    ranking = np.lexsort((truth_rows, -overlaps, detection_rows))
    detection_rows, truth_rows, overlaps = detection_rows[ranking], truth_rows[ranking], overlaps[ranking]
    is_first = np.ones(len(detection_rows), dtype=bool)
    is_first[1:] = detection_rows[1:] != detection_rows[:-1]
    best_overlap[detection_rows[is_first]] = overlaps[is_first]
    best_truth[detection_rows[is_first]] = truth_rows[is_first]
    return best_overlap, best_truth


def _weighted_sum(average_precisions: np.ndarray, num_positives: np.ndarray, all_positives: int) -> float:
    if all_positives == 0:
        return float("nan")
    total = 0.0
    # A sequential sum in class order, like the original.
    for average_precision, positives in zip(average_precisions, num_positives):
        total += float(average_precision) * float(positives) / float(all_positives)
    return total


def _concatenate_flat(chunks: list[FlatTriplets]) -> FlatTriplets:
    if not chunks:
        empty_int, empty_boxes = np.zeros(0, np.int64), np.zeros((0, 4))
        return FlatTriplets(empty_int, empty_int, empty_int, empty_int, empty_int, empty_boxes, empty_boxes, empty_int)
    return FlatTriplets(
        *(np.concatenate([getattr(chunk, name) for chunk in chunks]) for name in FlatTriplets.__dataclass_fields__)
    )
