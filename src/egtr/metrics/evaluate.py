"""Evaluate post-processed predictions (in memory or from a predictions file) with every applicable metric.

Which metrics run depends on what the predictions hold:

* `graph_constraint` relation set -> `SceneGraphRecall` with the graph constraint (`(single)R@K`, ...);
* `no_graph_constraint` set -> `SceneGraphRecall` without it (`R@K`, `mR@K`);
* `open_images` set -> `OpenImagesRelationMetrics` (`microR@50`, `w_rel_mAP`, `w_phr_mAP`, `score`);
* detection AP: with `detections` (the VG path), the COCO-style AP of those (`AP50`, `bbox/*`); otherwise, with an
  `open_images` set, the Open Images detection AP over all predicted objects (`bbox/*`).

Predictions and ground truths are paired by position; where both carry image ids they must agree.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from egtr.fileio import write_json
from egtr.metrics.core import Metric, SceneGroundTruth, ScenePrediction
from egtr.metrics.detection import DetectionAP, DetectionAPResult
from egtr.metrics.open_images import OpenImagesRelationMetrics, OpenImagesRelationResult
from egtr.metrics.predictions_file import SavedPredictions, load_ground_truths, load_predictions
from egtr.metrics.scene_graph_recall import DEFAULT_KS, SceneGraphRecall, SceneGraphRecallResult

# Images per update: large enough to vectorise well, small enough to bound the memory of the matching.
DEFAULT_CHUNK_SIZE = 4096

MetricResult = SceneGraphRecallResult | OpenImagesRelationResult | DetectionAPResult


@dataclass
class EvaluationReport:
    """Everything one evaluation produced.

    Attributes:
        metrics: flat {name: number}: the original's keys and the clearer `<group>/<metric>` names.
        results: result objects by group (`graph_constraint`, `no_graph_constraint`, `open_images`, `detection`).
        settings: the settings used (K values, thresholds, the predictions' metadata, ...).
    """

    metrics: dict[str, float] = field(default_factory=dict)
    results: dict[str, MetricResult] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json_dict(self, predicate_names: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON-ready dict (NaN -> null) with the metrics, the per-predicate tables and the settings."""
        if predicate_names is None:
            metadata = self.settings.get("predictions_metadata") or {}
            predicate_names = self.settings.get("predicate_names") or metadata.get("predicate_names")
        document: dict[str, Any] = {"metrics": {k: _json_number(v) for k, v in self.metrics.items()}}
        for name in ("graph_constraint", "no_graph_constraint"):
            recall = self.results.get(name)
            if isinstance(recall, SceneGraphRecallResult):
                document[f"per_predicate_recall/{name}"] = recall.per_predicate_table(predicate_names)
        result = self.results.get("open_images")
        if isinstance(result, OpenImagesRelationResult):
            document["per_predicate_ap/open_images"] = [
                {
                    "predicate": p,
                    "num_positives": int(n),
                    "relation_ap": _json_number(r),
                    "phrase_ap": _json_number(q),
                }
                for p, (n, r, q) in enumerate(zip(result.num_positives, result.relation_ap, result.phrase_ap))
            ]
        document["settings"] = self.settings
        return document

    def save_json(self, path: str | Path, predicate_names: Sequence[str] | None = None) -> Path:
        return write_json(path, self.to_json_dict(predicate_names), allow_nan=False)

    def format_table(self) -> str:
        """Readable summary: one block per metric group."""
        blocks = [str(result) for result in self.results.values()]
        return "\n".join(blocks)


def _json_number(value: float | np.floating) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def _check_pairing(image_ids: np.ndarray, ground_truths: Sequence[SceneGroundTruth], source: str) -> None:
    if len(image_ids) != len(ground_truths):
        raise ValueError(f"{source}: {len(image_ids)} predicted images but {len(ground_truths)} ground truths")
    for index, (image_id, truth) in enumerate(zip(image_ids.tolist(), ground_truths)):
        if image_id >= 0 and truth.image_id is not None and int(truth.image_id) != image_id:
            raise ValueError(
                f"{source}: record {index} has image_id {image_id} but its ground truth has {truth.image_id}"
            )


def evaluate_predictions(
    predictions: SavedPredictions,
    ground_truths: Sequence[SceneGroundTruth],
    num_predicates: int,
    num_classes: int | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    iou_threshold: float = 0.5,
    seen_triplets: np.ndarray | None = None,
    coco_ground_truth: dict | str | Path | None = None,
    detection: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    source: str = "predictions",
    detection_backend: str = "numpy",
) -> EvaluationReport:
    """Run every metric that applies to `predictions` (see the module docstring).

    Why this is long: the documented arguments; the code (about 60 lines) runs each metric in turn.

    Args:
        predictions: loaded or collected predictions.
        ground_truths: one per image, same order.
        num_predicates: R.
        num_classes: C (for the detection AP when no COCO json is given).
        ks: recall K values.
        iou_threshold: matching threshold.
        seen_triplets: optional (S, 3) [subject class, object class, predicate] seen in training (zero-shot recall).
        coco_ground_truth: optional COCO json of the split for the VG detection AP.
        detection: run the detection AP when possible.
        chunk_size: images per metric update.
        source: name used in error messages.
        detection_backend: the COCOeval implementation (`egtr.metrics.detection.BACKENDS`).

    Returns:
        The `EvaluationReport`.
    """
    _check_pairing(np.asarray(predictions.image_ids), ground_truths, source)
    report = EvaluationReport()
    timings: dict[str, float] = {}
    for name in ("graph_constraint", "no_graph_constraint"):
        if name not in predictions.scene_graphs:
            continue
        started = time.perf_counter()
        recall = SceneGraphRecall(num_predicates, ks, name == "graph_constraint", iou_threshold, seen_triplets)
        _update_in_chunks(recall, predictions.scene_graphs[name], ground_truths, chunk_size)
        report.results[name] = recall.compute()
        timings[name] = time.perf_counter() - started
    if "open_images" in predictions.scene_graphs:
        started = time.perf_counter()
        open_images = OpenImagesRelationMetrics(num_predicates, iou_threshold=iou_threshold)
        _update_in_chunks(open_images, predictions.scene_graphs["open_images"], ground_truths, chunk_size)
        report.results["open_images"] = open_images.compute()
        timings["open_images"] = time.perf_counter() - started
    if detection:
        started = time.perf_counter()
        if predictions.detections is not None and (num_classes is not None or coco_ground_truth is not None):
            coco_ap = DetectionAP(
                num_classes, style="coco", coco_ground_truth=coco_ground_truth, backend=detection_backend
            )
            report.results["detection"] = coco_ap.update(predictions.detections, ground_truths).compute()
        elif "open_images" in predictions.scene_graphs:
            if num_classes is None:
                raise ValueError("num_classes is needed for the Open Images detection AP")
            open_images_ap = DetectionAP(num_classes, style="open_images", backend=detection_backend)
            objects = predictions.scene_graphs["open_images"]
            report.results["detection"] = open_images_ap.update(objects, ground_truths).compute()
        if "detection" in report.results:
            timings["detection"] = time.perf_counter() - started
    for result in report.results.values():
        report.metrics.update(result.to_dict())
    report.settings = {
        "ks": list(ks),
        "iou_threshold": iou_threshold,
        "num_predicates": num_predicates,
        "num_classes": num_classes,
        "num_images": len(ground_truths),
        "zero_shot": seen_triplets is not None,
        "coco_ground_truth": str(coco_ground_truth) if isinstance(coco_ground_truth, (str, Path)) else None,
        "relation_sets": sorted(predictions.scene_graphs),
        "detection_backend": detection_backend if "detection" in report.results else None,
        "predictions_metadata": predictions.metadata,
        "seconds": timings,
    }
    return report


def _update_in_chunks(
    metric: Metric, predictions: Sequence[ScenePrediction], ground_truths: Sequence[SceneGroundTruth], chunk_size: int
) -> None:
    for start in range(0, len(ground_truths), chunk_size):
        metric.update(predictions[start : start + chunk_size], ground_truths[start : start + chunk_size])


def evaluate_predictions_file(
    path: str | Path,
    ground_truth: Sequence[SceneGroundTruth] | str | Path,
    num_predicates: int | None = None,
    num_classes: int | None = None,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    iou_threshold: float = 0.5,
    seen_triplets: np.ndarray | None = None,
    coco_ground_truth: dict | str | Path | None = None,
    detection: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> EvaluationReport:
    """Evaluate a predictions file (see `egtr.metrics.predictions_file`) against a ground truth.

    Args:
        path: the predictions `.npz`.
        ground_truth: a list of `SceneGroundTruth` or the path of a ground-truth `.npz`.
        num_predicates: R; default: `num_rel_labels` of the file's metadata.
        num_classes: C; default: `num_labels` of the file's metadata.
        ks, iou_threshold, seen_triplets, coco_ground_truth, detection, chunk_size: as for `evaluate_predictions`.

    Returns:
        The `EvaluationReport`; its settings name the file.
    """
    predictions = load_predictions(path)
    ground_truths = load_ground_truths(ground_truth) if isinstance(ground_truth, (str, Path)) else list(ground_truth)
    num_predicates = num_predicates if num_predicates is not None else predictions.metadata.get("num_rel_labels")
    num_classes = num_classes if num_classes is not None else predictions.metadata.get("num_labels")
    if num_predicates is None:
        raise ValueError(f"{path}: the metadata has no 'num_rel_labels'; pass num_predicates")
    report = evaluate_predictions(
        predictions,
        ground_truths,
        int(num_predicates),
        num_classes,
        ks=ks,
        iou_threshold=iou_threshold,
        seen_triplets=seen_triplets,
        coco_ground_truth=coco_ground_truth,
        detection=detection,
        chunk_size=chunk_size,
        source=str(path),
    )
    report.settings["predictions_file"] = str(path)
    if isinstance(ground_truth, (str, Path)):
        report.settings["ground_truth_file"] = str(ground_truth)
    return report
