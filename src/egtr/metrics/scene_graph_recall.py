"""Visual Genome scene graph detection recall: R@K, mR@K, zero-shot R@K and F1@K (reference §6.1).

Reproduces `lib/evaluation/sg_eval.py` of the original (KERN / neural-motifs, Zellers et al. CVPR 2018;
mean recall: Tang et al. CVPR 2020 and Chen et al. CVPR 2019):

* R@K of an image = |ground-truth relations matched by the top-K predictions| / M; the reported R@K is the mean
  over images (`np.mean`, so the numbers are bit-identical to the original's).
* Matching: `egtr.metrics.matching` (labels equal, IoU >= 0.5 for subject and object, +1-pixel IoU).
* mR@K: for each predicate p, R_p@K = the mean over the images that have a ground truth with predicate p of the
  recall of those ground truths (by the same top-100 predictions); mR@K = sum of the defined R_p@K / R, i.e. a
  predicate without any ground truth in the split counts as 0 (the original's denominator is always R).
* The ground-truth relations are de-duplicated (the original reads them from a dense N x N x R target).
* Graph constraint or not is decided by the predictions given (`postprocess_scene_graphs(graph_constraint=...)`);
  the flag here only names the output keys: `(single)R@K` with the constraint, `R@K` without, as the original.

Decisions where the original has none:

* An image whose ground truth has no relation (the original asserts M > 0, quirk Q20) contributes nothing:
  it is left out of every mean (R@K, R_p@K, zero-shot) and counted in `num_images_without_relations`.
* Zero-shot R@K (Tang et al. 2020): over the ground-truth triplets (subject class, object class, predicate)
  absent from `seen_triplets` (usually the training split's); mean over the images that have one.
* F1@K = 2 R mR / (R + mR) (used by REACT / IETrans); 0 when both are 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from egtr.metrics.core import Metric, SceneGroundTruth, ScenePrediction, unique_relations
from egtr.metrics.matching import first_match_ranks, flatten_ground_truths, flatten_predictions

DEFAULT_KS = (20, 50, 100)


@dataclass
class SceneGraphRecallResult:
    """Recalls of one evaluation mode.

    Attributes:
        ks: the K values.
        graph_constraint: whether the predictions had one predicate per pair (naming only).
        recall: {K: R@K}.
        mean_recall: {K: mR@K}.
        per_predicate_recall: (R, len(ks)) R_p@K, NaN for predicates without ground truth.
        per_predicate_num_images: (R,) number of images with a ground truth of each predicate.
        per_image_recall: (I', len(ks)) recall of every image with relations, in update order.
        num_images: images seen.
        num_images_without_relations: images left out because their ground truth has no relation.
        zero_shot_recall: {K: zR@K}, or None without `seen_triplets` (NaN if no zero-shot ground truth).
        f1: {K: F1@K}.
    """

    ks: tuple[int, ...]
    graph_constraint: bool
    recall: dict[int, float]
    mean_recall: dict[int, float]
    per_predicate_recall: np.ndarray
    per_predicate_num_images: np.ndarray
    per_image_recall: np.ndarray
    num_images: int
    num_images_without_relations: int
    zero_shot_recall: dict[int, float] | None = None
    f1: dict[int, float] = field(default_factory=dict)

    @property
    def mode_name(self) -> str:
        return "graph_constraint" if self.graph_constraint else "no_graph_constraint"

    def to_dict(self) -> dict[str, float]:
        """Flat metrics: the original's keys (`(single)R@50`, `mR@50`, ...) plus clearer `<mode>/<metric>@K` names."""
        prefix = "(single)" if self.graph_constraint else ""
        flat: dict[str, float] = {}
        for k in self.ks:
            flat[f"{prefix}R@{k}"] = self.recall[k]
        for k in self.ks:
            flat[f"{prefix}mR@{k}"] = self.mean_recall[k]
        for k in self.ks:
            flat[f"{self.mode_name}/recall@{k}"] = self.recall[k]
            flat[f"{self.mode_name}/mean_recall@{k}"] = self.mean_recall[k]
            flat[f"{self.mode_name}/f1@{k}"] = self.f1[k]
            if self.zero_shot_recall is not None:
                flat[f"{self.mode_name}/zero_shot_recall@{k}"] = self.zero_shot_recall[k]
        return flat

    def per_predicate_table(self, predicate_names: Sequence[str] | None = None) -> list[dict]:
        """One row per predicate: name, number of images, R_p@K (None where undefined)."""
        rows = []
        for predicate, recalls in enumerate(self.per_predicate_recall):
            name = predicate_names[predicate] if predicate_names else f"predicate_{predicate}"
            row = {
                "predicate": predicate,
                "name": name,
                "num_images": int(self.per_predicate_num_images[predicate]),
            }
            row.update({f"R@{k}": (None if math.isnan(v) else float(v)) for k, v in zip(self.ks, recalls)})
            rows.append(row)
        return rows

    def __str__(self) -> str:
        mode = "graph constraint" if self.graph_constraint else "no graph constraint"
        lines = [
            f"Scene graph recall ({mode}, {self.num_images} images, "
            f"{self.num_images_without_relations} without relations)"
        ]
        lines.append("  " + "  ".join(f"R@{k} {100 * self.recall[k]:6.2f}" for k in self.ks))
        lines.append("  " + "  ".join(f"mR@{k} {100 * self.mean_recall[k]:6.2f}" for k in self.ks))
        lines.append("  " + "  ".join(f"F1@{k} {100 * self.f1[k]:6.2f}" for k in self.ks))
        if self.zero_shot_recall is not None:
            lines.append("  " + "  ".join(f"zR@{k} {100 * self.zero_shot_recall[k]:6.2f}" for k in self.ks))
        return "\n".join(lines)


class SceneGraphRecall(Metric):
    """Accumulating VG recall evaluator (R@K, mR@K, per-predicate recall, zero-shot recall, F1@K).

    Args:
        num_predicates: R, the number of predicate classes (the mR denominator).
        ks: K values (each <= the number of triplets the predictions keep).
        graph_constraint: naming of the outputs (see the module docstring).
        iou_threshold: subject and object IoU needed for a match (inclusive).
        seen_triplets: optional (S, 3) [subject class, object class, predicate] triplets seen in training; enables
            zero-shot recall.
    """

    def __init__(
        self,
        num_predicates: int,
        ks: Sequence[int] = DEFAULT_KS,
        graph_constraint: bool = True,
        iou_threshold: float = 0.5,
        seen_triplets: np.ndarray | None = None,
    ) -> None:
        self.num_predicates = int(num_predicates)
        self.ks = tuple(int(k) for k in ks)
        self.graph_constraint = graph_constraint
        self.iou_threshold = iou_threshold
        self.seen_triplets = None if seen_triplets is None else np.asarray(seen_triplets, dtype=np.int64).reshape(-1, 3)
        self.reset()

    def reset(self) -> None:
        self._num_images = 0
        self._image_relation_counts: list[np.ndarray] = []  # per update: (I_batch,) M of every image
        self._image_index: list[np.ndarray] = []  # per ground-truth relation: global image number
        self._predicates: list[np.ndarray] = []
        self._ranks: list[np.ndarray] = []
        self._zero_shot: list[np.ndarray] = []

    def update(
        self, predictions: Sequence[ScenePrediction], ground_truths: Sequence[SceneGroundTruth]
    ) -> SceneGraphRecall:
        """Match a batch of ranked predictions (`ScenePrediction`s, or alike) with their ground truths.

        Args:
            predictions: per image, an object with `boxes` (N, 4), `labels` (N,), `relations` (K, 3) ranked.
            ground_truths: per image, the `SceneGroundTruth` (pixel xyxy boxes, same coordinates).
        """
        if len(predictions) != len(ground_truths):
            raise ValueError(f"got {len(predictions)} predictions but {len(ground_truths)} ground truths")
        deduplicated = [SceneGroundTruth(g.boxes, g.labels, unique_relations(g.relations)) for g in ground_truths]
        flat_truth = flatten_ground_truths(deduplicated)
        if flat_truth.predicates.size and flat_truth.predicates.max() >= self.num_predicates:
            image = int(flat_truth.image_index[np.argmax(flat_truth.predicates >= self.num_predicates)])
            raise ValueError(
                f"ground truth of image {image} of the batch: field 'relations' has predicate "
                f"{int(flat_truth.predicates.max())} >= num_predicates={self.num_predicates}"
            )
        flat_predictions = flatten_predictions(predictions, top_k=max(self.ks))
        ranks = first_match_ranks(flat_predictions, flat_truth, self.iou_threshold)
        self._image_relation_counts.append(flat_truth.counts)
        self._image_index.append(flat_truth.image_index + self._num_images)
        self._predicates.append(flat_truth.predicates)
        self._ranks.append(ranks)
        if self.seen_triplets is not None:
            self._zero_shot.append(
                self._is_unseen(
                    self.seen_triplets, flat_truth.subject_labels, flat_truth.object_labels, flat_truth.predicates
                )
            )
        self._num_images += len(ground_truths)
        return self

    @staticmethod
    def _is_unseen(
        seen: np.ndarray, subject_labels: np.ndarray, object_labels: np.ndarray, predicates: np.ndarray
    ) -> np.ndarray:
        """Which ground-truth triplets are not among the `seen` (K, 3) training triplets."""
        radix = (
            int(
                max(
                    seen.max(initial=0),
                    subject_labels.max(initial=0),
                    object_labels.max(initial=0),
                    predicates.max(initial=0),
                )
            )
            + 1
        )
        seen_keys = (seen[:, 0] * radix + seen[:, 1]) * radix + seen[:, 2]
        keys = (subject_labels * radix + object_labels) * radix + predicates
        return ~np.isin(keys, seen_keys)

    @staticmethod
    def _concatenate(chunks: list[np.ndarray], dtype=np.int64) -> np.ndarray:
        return np.concatenate(chunks).astype(dtype) if chunks else np.zeros(0, dtype=dtype)

    def compute(self) -> SceneGraphRecallResult:
        """Average everything added since the last reset."""
        relation_counts = self._concatenate(self._image_relation_counts)  # (I,)
        image_index = self._concatenate(self._image_index)  # (G,)
        predicates = self._concatenate(self._predicates)
        ranks = self._concatenate(self._ranks)
        num_images, num_ks = self._num_images, len(self.ks)
        hits = np.stack([ranks < k for k in self.ks], axis=1)  # (G, len(ks))

        has_relations = relation_counts > 0
        per_image_hits = np.stack(
            [np.bincount(image_index, weights=hits[:, i], minlength=num_images) for i in range(num_ks)], 1
        )
        # Each ratio is a correctly rounded int / int, as the original's float(len(match)) / float(M).
        per_image_recall = per_image_hits[has_relations] / relation_counts[has_relations, None].astype(np.float64)
        recall = {k: _mean(per_image_recall[:, i]) for i, k in enumerate(self.ks)}

        # Per (image, predicate) counts; R_p@K is the mean over images (in order) that have predicate p.
        cell = image_index * self.num_predicates + predicates
        cell_counts = np.bincount(cell, minlength=num_images * self.num_predicates).reshape(
            num_images, self.num_predicates
        )
        per_predicate = np.full((self.num_predicates, num_ks), np.nan)
        for i in range(num_ks):
            cell_hits = np.bincount(cell, weights=hits[:, i], minlength=num_images * self.num_predicates)
            cell_hits = cell_hits.reshape(num_images, self.num_predicates)
            for predicate in range(self.num_predicates):
                present = cell_counts[:, predicate] > 0
                if present.any():
                    per_predicate[predicate, i] = np.mean(
                        cell_hits[present, predicate] / cell_counts[present, predicate]
                    )
        mean_recall = {}
        for i, k in enumerate(self.ks):
            total = 0.0
            for predicate in range(self.num_predicates):  # sequential sum, like the original
                if not math.isnan(per_predicate[predicate, -1]):
                    total += per_predicate[predicate, i]
            mean_recall[k] = total / self.num_predicates

        zero_shot_recall = None
        if self.seen_triplets is not None:
            unseen = self._concatenate(self._zero_shot, dtype=bool)
            zero_shot_counts = np.bincount(image_index[unseen], minlength=num_images)
            with_zero_shot = zero_shot_counts > 0
            zero_shot_recall = {}
            for i, k in enumerate(self.ks):
                zero_shot_hits = np.bincount(image_index[unseen], weights=hits[unseen, i], minlength=num_images)
                zero_shot_recall[k] = _mean(zero_shot_hits[with_zero_shot] / zero_shot_counts[with_zero_shot])

        f1 = {k: _f1(recall[k], mean_recall[k]) for k in self.ks}
        return SceneGraphRecallResult(
            ks=self.ks,
            graph_constraint=self.graph_constraint,
            recall=recall,
            mean_recall=mean_recall,
            per_predicate_recall=per_predicate,
            per_predicate_num_images=(cell_counts > 0).sum(0),
            per_image_recall=per_image_recall,
            num_images=num_images,
            num_images_without_relations=int((~has_relations).sum()),
            zero_shot_recall=zero_shot_recall,
            f1=f1,
        )


def _mean(values: np.ndarray) -> float:
    """np.mean as the original computes it; NaN (without a warning) for no values."""
    return float(np.mean(values)) if len(values) else float("nan")


def _f1(recall: float, mean_recall: float) -> float:
    if math.isnan(recall) or math.isnan(mean_recall):
        return float("nan")
    return 0.0 if recall + mean_recall == 0 else 2 * recall * mean_recall / (recall + mean_recall)
