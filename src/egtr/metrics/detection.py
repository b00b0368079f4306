"""COCO-style object detection AP, as the original evaluates its detector with pycocotools (reference §6).

The COCOeval implementation is a backend: `numpy` (default; `egtr.metrics.coco_bbox`, vectorised, bit-identical
to pycocotools, seconds instead of minutes on a full split) or `pycocotools` (the original's, kept as the reference;
`pip install pycocotools`).

Two styles, each reproducing one code path of the original:

* `style="coco"` (Visual Genome, `lib/evaluation/coco_eval.py`, DETR's `CocoEvaluator`): the detections of
  `egtr.inference.postprocess.postprocess_detections` (sigmoid top-100 over N x C), boxes as
  `[x1, y1, x2 - x1, y2 - y1]`,
  `category_id = label + 1`, against the split's COCO json (or, without one, a COCO ground truth built from the
  updates: `[x1, y1, w, h]`, area `w * h`, category ids `1..C`, annotation ids from 1). The paper's AP50 is
  `stats[1]` (IoU 0.5, all areas, 100 detections).
* `style="open_images"` (`oi_eval.py::eval_entites_detection`, from PySGG): every predicted object (argmax class,
  softmax score), boxes as `[x1, y1, x2 - x1 + 1, y2 - y1 + 1]` (float32), ground truth likewise with +1 and area
  `(w + 1)(h + 1)`, category ids `0..C-1`, image ids `0..I-1` in update order, ground-truth annotation ids from 0
  (pycocotools then treats a match with annotation id 0 as unmatched; kept, it is part of the reported numbers,
  and the numpy backend does the same).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from egtr.fileio import read_json
from egtr.metrics.coco_bbox import BoxAnnotations, coco_bbox_stats, coco_bbox_stats_of_arrays
from egtr.metrics.core import Metric, SceneGroundTruth

BACKENDS = ("numpy", "pycocotools")
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass
class DetectionAPResult:
    """The 12 COCOeval bbox statistics (`stats`), by name in `STAT_NAMES` order; -1 where undefined."""

    stats: np.ndarray
    style: str
    num_images: int

    @property
    def ap50(self) -> float:
        return float(self.stats[1])

    def to_dict(self) -> dict[str, float]:
        """`bbox/AP` ... `bbox/APl` (the Open Images keys), `AP50` for the VG style, and `detection/<stat>`."""
        flat = {f"bbox/{name}": float(value) for name, value in zip(STAT_NAMES[:6], self.stats[:6])}
        if self.style == "coco":
            flat["AP50"] = self.ap50
        flat.update({f"detection/{name}": float(value) for name, value in zip(STAT_NAMES, self.stats)})
        return flat

    def __str__(self) -> str:
        return f"Detection ({self.style}, {self.num_images} images): " + "  ".join(
            f"{name} {100 * value:.2f}" for name, value in zip(STAT_NAMES[:6], self.stats[:6])
        )


class DetectionAP(Metric):
    """Accumulating COCO-style detection evaluator.

    Args:
        num_classes: C (needed unless `coco_ground_truth` gives the categories).
        style: "coco" (VG) or "open_images"; see the module docstring.
        coco_ground_truth: "coco" style only: the split's COCO json (dict or path); images are then identified by
            `SceneGroundTruth.image_id`.
        backend: the COCOeval implementation, one of `BACKENDS` (see the module docstring).
    """

    def __init__(
        self,
        num_classes: int | None = None,
        style: str = "coco",
        coco_ground_truth: dict | str | Path | None = None,
        backend: str = "numpy",
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if style not in ("coco", "open_images"):
            raise ValueError(f"style must be 'coco' or 'open_images', got {style!r}")
        if coco_ground_truth is not None and style != "coco":
            raise ValueError("coco_ground_truth is only used with style='coco'")
        if isinstance(coco_ground_truth, (str, Path)):
            coco_ground_truth = read_json(coco_ground_truth)
        if coco_ground_truth is not None and not isinstance(coco_ground_truth, dict):
            raise ValueError(f"coco_ground_truth must be a COCO dict or a path, got {type(coco_ground_truth).__name__}")
        if coco_ground_truth is None and num_classes is None:
            raise ValueError("give num_classes or coco_ground_truth")
        self.num_classes = num_classes
        self.style = style
        self.backend = backend
        self.coco_ground_truth: dict[str, Any] | None = coco_ground_truth
        self.reset()

    def reset(self) -> None:
        self._results: list[np.ndarray] = []  # rows [image_id, x, y, w, h, score, category_id]
        self._truth_image_ids: list[np.ndarray] = []  # ground truth built from the updates, as arrays
        self._truth_boxes: list[np.ndarray] = []  # [x, y, w, h] float64
        self._truth_areas: list[np.ndarray] = []
        self._truth_labels: list[np.ndarray] = []
        self._image_ids: list[int] = []

    def update(self, detections: Sequence, ground_truths: Sequence[SceneGroundTruth]) -> DetectionAP:
        """Add a batch.

        Args:
            detections: per image, an object with `boxes` (D, 4) xyxy pixels, `labels` (D,), `scores` (D,);
                "coco" style: `postprocess_detections` output; "open_images": the `ScenePrediction` objects.
            ground_truths: per image, the `SceneGroundTruth` (boxes and labels are used; `image_id` too when a
                COCO json is given).
        """
        if len(detections) != len(ground_truths):
            raise ValueError(f"got {len(detections)} detections but {len(ground_truths)} ground truths")
        for detection, truth in zip(detections, ground_truths):
            image_id = self._next_image_id(truth)
            boxes = np.asarray(detection.boxes, dtype=np.float32).reshape(-1, 4)
            one = np.float32(1) if self.style == "open_images" else np.float32(0)
            # Width/height in float32, like the original's torch / numpy float32 arithmetic.
            widths = boxes[:, 2] - boxes[:, 0] + one
            heights = boxes[:, 3] - boxes[:, 1] + one
            labels = np.asarray(detection.labels, dtype=np.int64).reshape(-1) + (1 if self.style == "coco" else 0)
            rows = np.column_stack(
                [
                    np.full(len(boxes), image_id),
                    boxes[:, 0],
                    boxes[:, 1],
                    widths,
                    heights,
                    np.asarray(detection.scores, dtype=np.float32).reshape(-1),
                    labels,
                ]
            )
            self._results.append(rows.astype(np.float64))
            if self.coco_ground_truth is None:
                self._add_ground_truth(image_id, truth)
        return self

    def _next_image_id(self, truth: SceneGroundTruth) -> int:
        if self.coco_ground_truth is not None:
            if truth.image_id is None:
                raise ValueError("with a COCO json ground truth every SceneGroundTruth needs its image_id")
            image_id = int(truth.image_id)
        else:
            image_id = len(self._image_ids) + (1 if self.style == "coco" else 0)
        self._image_ids.append(image_id)
        return image_id

    def _add_ground_truth(self, image_id: int, truth: SceneGroundTruth) -> None:
        # float64 from here, like `.tolist()` upstream; the same operations in the same order.
        boxes = np.asarray(truth.boxes, dtype=np.float64).reshape(-1, 4)
        if self.style == "open_images":
            widths, heights = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
            areas = (boxes[:, 3] - boxes[:, 1] + 1) * (boxes[:, 2] - boxes[:, 0] + 1)
        else:
            widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            areas = widths * heights
        self._truth_image_ids.append(np.full(len(boxes), image_id, dtype=np.int64))
        self._truth_boxes.append(np.column_stack([boxes[:, 0], boxes[:, 1], widths, heights]))
        self._truth_areas.append(areas)
        self._truth_labels.append(np.asarray(truth.labels, dtype=np.int64).reshape(-1))

    def _ground_truth_arrays(self) -> BoxAnnotations:
        """The ground truth built from the updates: annotation ids from 1 (coco) or 0 (open_images, see the module
        docstring), category ids `label + 1` (coco) or `label`."""
        offset = 1 if self.style == "coco" else 0
        image_ids = np.concatenate(self._truth_image_ids) if self._truth_image_ids else np.zeros(0, np.int64)
        return BoxAnnotations(
            ids=np.arange(len(image_ids), dtype=np.int64) + offset,
            image_ids=image_ids,
            category_ids=(np.concatenate(self._truth_labels) if self._truth_labels else np.zeros(0, np.int64)) + offset,
            boxes=np.concatenate(self._truth_boxes) if self._truth_boxes else np.zeros((0, 4)),
            areas=np.concatenate(self._truth_areas) if self._truth_areas else np.zeros(0),
            crowd=np.zeros(len(image_ids), dtype=bool),
        )

    def _category_ids(self) -> list[int]:
        offset = 1 if self.style == "coco" else 0
        return [c + offset for c in range(self.num_classes)]  # type: ignore[arg-type]

    def _ground_truth_dataset(self) -> dict[str, Any]:
        """The COCO dataset dict (for pycocotools)."""
        if self.coco_ground_truth is not None:
            return copy.deepcopy(self.coco_ground_truth)
        truth = self._ground_truth_arrays()
        annotations = [
            {
                "id": int(annotation_id),
                "image_id": int(image_id),
                "category_id": int(category_id),
                "bbox": box,
                "area": area,
                "iscrowd": 0,
            }
            for annotation_id, image_id, category_id, box, area in zip(
                truth.ids, truth.image_ids, truth.category_ids, truth.boxes.tolist(), truth.areas.tolist()
            )
        ]
        return {
            "info": {"description": f"egtr {self.style} detection ground truth"},
            "images": [{"id": image_id} for image_id in self._image_ids],
            "categories": [{"id": c, "name": str(c), "supercategory": "none"} for c in self._category_ids()],
            "annotations": annotations,
        }

    def compute(self) -> DetectionAPResult:
        """Run COCOeval (bbox) of the backend on everything added since the last reset."""
        results = np.concatenate(self._results) if self._results else np.zeros((0, 7))
        stats: Sequence[float] | np.ndarray
        if self.backend == "pycocotools":
            stats = _pycocotools_stats(self._ground_truth_dataset(), results, self._image_ids)
        elif self.coco_ground_truth is not None:
            stats = coco_bbox_stats(self.coco_ground_truth, results, self._image_ids)
        else:
            truth = self._ground_truth_arrays()
            stats = coco_bbox_stats_of_arrays(truth, self._image_ids, self._category_ids(), results, self._image_ids)
        return DetectionAPResult(
            stats=np.asarray(stats, dtype=np.float64), style=self.style, num_images=len(self._image_ids)
        )


def _pycocotools_stats(ground_truth: dict[str, Any], results: np.ndarray, image_ids: list[int]) -> list[float]:
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as error:
        raise ImportError("the pycocotools backend needs pycocotools: pip install pycocotools") from error

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_ground_truth = COCO()
        coco_ground_truth.dataset = ground_truth
        coco_ground_truth.createIndex()
        if len(results):
            detections = coco_ground_truth.loadRes(results)
        else:  # pycocotools' loadRes rejects an empty array
            detections = COCO()
            detections.dataset = {
                "images": ground_truth["images"],
                "annotations": [],
                "categories": ground_truth["categories"],
            }
            detections.createIndex()
        evaluator = COCOeval(coco_ground_truth, detections, "bbox")
        evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return list(evaluator.stats)
