"""Saved predictions and ground truths (`.npz`), and their evaluation without a model.

Predictions file (format version 1), a numpy `.npz` of flat arrays plus offsets; image i owns the rows
`[offsets[i], offsets[i + 1])` of the arrays of each group. I = number of images.

| key | shape, dtype | meaning |
|---|---|---|
| `format_version` | () int64 | 1 |
| `metadata` | () str | JSON: the settings that produced the file (top_k, checkpoint hash, code version, ...) |
| `image_ids` | (I,) int64 | dataset image ids (-1 where unknown) |
| `image_sizes_hw` | (I, 2) int64 | original [height, width] (the pixel frame of every box) |
| `objects__offsets` | (I+1,) int64 | per-image slices of the object arrays |
| `objects__boxes` | (sum N, 4) float32 | xyxy pixel boxes of the object queries |
| `objects__labels` / `objects__scores` | (sum N,) int64 / float32 | softmax argmax class / max score |
| `<set>__offsets` | (I+1,) int64 | per-image slices of a relation set |
| `<set>__relations` | (sum K, 3) int64 | [subject, object, predicate], object indices local to the image, best first |
| `<set>__relation_scores` | (sum K,) float32 | triplet scores (ranking) |
| `<set>__predicate_scores` | (sum K,) float32 | predicate scores alone |
| `<set>__pair_predicate_scores` | (sum K, R) float32 | optional, graph-constraint sets only |
| `detections__offsets`, `__boxes`, `__labels`, `__scores` | | optional: COCO-style detections (sigmoid top-100) |

Relation sets: `graph_constraint`, `no_graph_constraint` (from `postprocess_scene_graphs`) and `open_images`
(from `postprocess_open_images`); each is optional. All share the objects.

Ground-truth file: `format_version`, `image_ids`, `objects__offsets`, `objects__boxes` (pixel xyxy),
`objects__labels`, `relations__offsets`, `relations__relations` (local indices).

Evaluation of a saved file is deterministic: the same file and ground truth give the same numbers, bit for bit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from egtr.metrics.core import DetectionPrediction, SceneGroundTruth, ScenePrediction

FORMAT_VERSION = 1
RELATION_SETS = ("graph_constraint", "no_graph_constraint", "open_images")


def _offsets(counts: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))]).astype(np.int64)


def _stack(arrays: Sequence[np.ndarray], shape_tail: tuple[int, ...], dtype: type[np.generic]) -> np.ndarray:
    if not arrays:
        return np.zeros((0, *shape_tail), dtype=dtype)
    return np.concatenate([np.asarray(a, dtype=dtype).reshape(-1, *shape_tail) for a in arrays])


class PredictionsWriter:
    """Collects post-processed predictions batch by batch and writes one predictions file.

    Example:
        >>> writer = PredictionsWriter(metadata={"top_k": 100})
        >>> writer.add(image_ids, image_sizes_hw, {"graph_constraint": constrained}, detections=detections)
        >>> writer.save("predictions.npz")
    """

    def __init__(self, metadata: Mapping[str, object] | None = None) -> None:
        self.metadata = dict(metadata or {})
        self._image_ids: list[int] = []
        self._image_sizes: list[np.ndarray] = []
        self._objects: list[ScenePrediction] = []
        self._sets: dict[str, list[ScenePrediction]] = {}
        self._detections: list[DetectionPrediction] = []

    def add(
        self,
        image_ids: Sequence[int | None],
        image_sizes_hw: np.ndarray,
        scene_graphs: dict[str, Sequence[ScenePrediction]],
        detections: Sequence[DetectionPrediction] | None = None,
    ) -> None:
        """Add one batch.

        Args:
            image_ids: (B,) dataset ids (None where unknown).
            image_sizes_hw: (B, 2) original [height, width].
            scene_graphs: relation set name (one of `RELATION_SETS`) -> B predictions; the objects are taken
                from the first set, every set of one file must hold the same sets for every batch.
            detections: optional B detections.
        """
        unknown = set(scene_graphs) - set(RELATION_SETS)
        if unknown:
            raise ValueError(f"unknown relation sets {sorted(unknown)}; expected some of {RELATION_SETS}")
        if not scene_graphs:
            raise ValueError("give at least one relation set")
        if self._objects and set(scene_graphs) != set(self._sets):
            raise ValueError(f"every batch must hold the relation sets {sorted(self._sets)}")
        batch_size = len(image_ids)
        for name, predictions in scene_graphs.items():
            if len(predictions) != batch_size:
                raise ValueError(f"relation set {name!r} has {len(predictions)} predictions for {batch_size} images")
            self._sets.setdefault(name, []).extend(predictions)
        if detections is not None:
            if len(detections) != batch_size:
                raise ValueError(f"{len(detections)} detections for {batch_size} images")
            self._detections.extend(detections)
        self._objects.extend(next(iter(scene_graphs.values())))
        self._image_ids.extend(-1 if image_id is None else int(image_id) for image_id in image_ids)
        self._image_sizes.append(np.asarray(image_sizes_hw, dtype=np.int64).reshape(batch_size, 2))

    def to_saved_predictions(self) -> SavedPredictions:
        """The collected predictions as a `SavedPredictions` (what `load_predictions` of the saved file gives)."""
        return SavedPredictions(
            image_ids=np.asarray(self._image_ids, dtype=np.int64),
            image_sizes_hw=_stack(self._image_sizes, (2,), np.int64),
            scene_graphs={name: list(predictions) for name, predictions in self._sets.items()},
            detections=list(self._detections) if self._detections else None,
            metadata=dict(self.metadata),
        )

    def save(self, path: str | Path) -> Path:
        """Write the file (`.npz`); returns its path."""
        if self._detections and len(self._detections) != len(self._image_ids):
            raise ValueError("detections were given for some batches but not all")
        arrays: dict[str, np.ndarray] = {
            "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
            "metadata": np.array(json.dumps(self.metadata, sort_keys=True)),
            "image_ids": np.asarray(self._image_ids, dtype=np.int64),
            "image_sizes_hw": _stack(self._image_sizes, (2,), np.int64),
            "objects__offsets": _offsets([len(p.labels) for p in self._objects]),
            "objects__boxes": _stack([p.boxes for p in self._objects], (4,), np.float32),
            "objects__labels": _stack([p.labels for p in self._objects], (), np.int64),
            "objects__scores": _stack([p.scores for p in self._objects], (), np.float32),
        }
        for name, predictions in self._sets.items():
            arrays[f"{name}__offsets"] = _offsets([len(p.relations) for p in predictions])
            arrays[f"{name}__relations"] = _stack([p.relations for p in predictions], (3,), np.int64)
            arrays[f"{name}__relation_scores"] = _stack([p.relation_scores for p in predictions], (), np.float32)
            arrays[f"{name}__predicate_scores"] = _stack([p.predicate_scores for p in predictions], (), np.float32)
            pair_scores = [p.pair_predicate_scores for p in predictions if p.pair_predicate_scores is not None]
            if predictions and len(pair_scores) == len(predictions):  # saved only when every image has them
                num_predicates = pair_scores[0].shape[1]
                arrays[f"{name}__pair_predicate_scores"] = _stack(pair_scores, (num_predicates,), np.float32)
        if self._detections:
            arrays["detections__offsets"] = _offsets([len(d.labels) for d in self._detections])
            arrays["detections__boxes"] = _stack([d.boxes for d in self._detections], (4,), np.float32)
            arrays["detections__labels"] = _stack([d.labels for d in self._detections], (), np.int64)
            arrays["detections__scores"] = _stack([d.scores for d in self._detections], (), np.float32)
        path = Path(path)
        # Plain arrays only, read back with allow_pickle=False; naming the keyword also keeps numpy's stub from
        # matching `**arrays` against it.
        np.savez(path, allow_pickle=False, **arrays)
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


@dataclass
class SavedPredictions:
    """The content of a predictions file.

    Attributes:
        image_ids: (I,) int64 (-1 where unknown).
        image_sizes_hw: (I, 2) int64.
        scene_graphs: relation set name -> I `ScenePrediction`s.
        detections: I `DetectionPrediction`s, or None.
        metadata: the settings stored with the file.
    """

    image_ids: np.ndarray
    image_sizes_hw: np.ndarray
    scene_graphs: dict[str, list[ScenePrediction]]
    detections: list[DetectionPrediction] | None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.image_ids)


def _checked_offsets(data: Any, key: str, num_images: int, num_rows: int, path: Path) -> np.ndarray:
    offsets = np.asarray(data[key], dtype=np.int64)
    if offsets.shape != (num_images + 1,) or offsets[0] != 0 or offsets[-1] != num_rows or np.any(np.diff(offsets) < 0):
        raise ValueError(f"{path}: field {key!r} is not a valid (I+1,) offset array for {num_rows} rows")
    return offsets


def _require(data: Any, keys: Sequence[str], path: Path) -> None:
    missing = [key for key in keys if key not in data.files]
    if missing:
        raise ValueError(f"{path}: missing field(s) {missing}")


def load_predictions(path: str | Path) -> SavedPredictions:
    """Read a predictions file written by `PredictionsWriter.save`."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as data:
        _require(data, ("format_version", "image_ids", "objects__offsets", "objects__boxes"), path)
        if int(data["format_version"]) != FORMAT_VERSION:
            raise ValueError(
                f"{path}: field 'format_version' is {int(data['format_version'])}, expected {FORMAT_VERSION}"
            )
        image_ids = data["image_ids"]
        num_images = len(image_ids)
        boxes, labels, scores = data["objects__boxes"], data["objects__labels"], data["objects__scores"]
        objects = _checked_offsets(data, "objects__offsets", num_images, len(labels), path)
        scene_graphs = {}
        for name in RELATION_SETS:
            if f"{name}__offsets" not in data.files:
                continue
            relations = data[f"{name}__relations"]
            offsets = _checked_offsets(data, f"{name}__offsets", num_images, len(relations), path)
            relation_scores = data[f"{name}__relation_scores"]
            predicate_scores = data[f"{name}__predicate_scores"]
            pair_scores = (
                data[f"{name}__pair_predicate_scores"] if f"{name}__pair_predicate_scores" in data.files else None
            )
            scene_graphs[name] = [
                ScenePrediction(
                    boxes=boxes[objects[i] : objects[i + 1]],
                    labels=labels[objects[i] : objects[i + 1]],
                    scores=scores[objects[i] : objects[i + 1]],
                    relations=relations[offsets[i] : offsets[i + 1]],
                    relation_scores=relation_scores[offsets[i] : offsets[i + 1]],
                    predicate_scores=predicate_scores[offsets[i] : offsets[i + 1]],
                    pair_predicate_scores=None if pair_scores is None else pair_scores[offsets[i] : offsets[i + 1]],
                )
                for i in range(num_images)
            ]
        detections = None
        if "detections__offsets" in data.files:
            detection_labels = data["detections__labels"]
            offsets = _checked_offsets(data, "detections__offsets", num_images, len(detection_labels), path)
            detection_boxes, detection_scores = data["detections__boxes"], data["detections__scores"]
            detections = [
                DetectionPrediction(
                    detection_boxes[offsets[i] : offsets[i + 1]],
                    detection_labels[offsets[i] : offsets[i + 1]],
                    detection_scores[offsets[i] : offsets[i + 1]],
                )
                for i in range(num_images)
            ]
        metadata = json.loads(str(data["metadata"])) if "metadata" in data.files else {}
        image_sizes = data["image_sizes_hw"] if "image_sizes_hw" in data.files else np.zeros((num_images, 2), np.int64)
    return SavedPredictions(image_ids, image_sizes, scene_graphs, detections, metadata)


def save_ground_truths(path: str | Path, ground_truths: Sequence[SceneGroundTruth]) -> Path:
    """Write ground truths (pixel xyxy boxes) to a `.npz` file; returns its path."""
    path = Path(path)
    np.savez(
        path,
        format_version=np.array(FORMAT_VERSION, dtype=np.int64),
        image_ids=np.asarray([-1 if g.image_id is None else int(g.image_id) for g in ground_truths], dtype=np.int64),
        objects__offsets=_offsets([len(g.labels) for g in ground_truths]),
        objects__boxes=_stack([g.boxes for g in ground_truths], (4,), np.float32),
        objects__labels=_stack([g.labels for g in ground_truths], (), np.int64),
        relations__offsets=_offsets([len(g.relations) for g in ground_truths]),
        relations__relations=_stack([g.relations for g in ground_truths], (3,), np.int64),
    )
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def load_ground_truths(path: str | Path) -> list[SceneGroundTruth]:
    """Read a ground-truth file written by `save_ground_truths` (each record validated)."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as data:
        _require(
            data,
            (
                "image_ids",
                "objects__offsets",
                "objects__boxes",
                "objects__labels",
                "relations__offsets",
                "relations__relations",
            ),
            path,
        )
        image_ids = data["image_ids"]
        boxes, labels, relations = (
            data["objects__boxes"],
            data["objects__labels"],
            data["relations__relations"],
        )
        objects = _checked_offsets(data, "objects__offsets", len(image_ids), len(labels), path)
        relation_offsets = _checked_offsets(data, "relations__offsets", len(image_ids), len(relations), path)
        ground_truths = []
        for i, image_id in enumerate(image_ids.tolist()):
            truth = SceneGroundTruth(
                boxes[objects[i] : objects[i + 1]],
                labels[objects[i] : objects[i + 1]],
                relations[relation_offsets[i] : relation_offsets[i + 1]],
                None if image_id < 0 else image_id,
            )
            ground_truths.append(truth.validate(f"{path}: image {i}"))
    return ground_truths
