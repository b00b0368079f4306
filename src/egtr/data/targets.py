"""Parsed per-image annotations and their conversion into training/evaluation targets (reference §7).

`ImageAnnotation` is what the dataset parsers produce: raw boxes in the COCO xywh convention, 0-based labels and
0-based relation triplets that index the image's annotation list. `prepare_target` turns one into the shared target
dict (absolute xyxy boxes at this stage; the transforms normalise them later), following HF's
`prepare_coco_detection` (drop crowd boxes, xywh -> xyxy, clip to the image, drop degenerate boxes) and then fixing
the original bug Q18: relation indices are remapped to the kept boxes and relations that touch a dropped box are
dropped and counted, instead of silently pointing at the wrong box.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from egtr.errors import DataError

logger = logging.getLogger(__name__)


@dataclass
class ImageAnnotation:
    """One image's annotations as parsed from the dataset files.

    Attributes:
        image_id: integer id (VG: the COCO image id; OI: the position in the annotation list, as the original).
        file_name: image file name relative to the dataset's images/ folder.
        width, height: image size stated by the annotation file, or None when the file does not state it.
        boxes_xywh: (n, 4) float64 [x, y, w, h] in original pixels.
        labels: (n,) int64 0-based object classes.
        relations: (M, 3) int64 [subject, object, predicate], 0-based, subject/object index `labels`.
        iscrowd: (n,) bool; crowd boxes are dropped like HF's `prepare_coco_detection` does.
        source: "file, record" text used in error messages.
        relation_source: the same for the relations where they are in another file (VG: "rel.json, train['17']").
        one_based: the file writes classes and predicates 1-based (VG); messages quote the values as written.
        name_lists: where the file format lists the class and the predicate names (for messages).
    """

    image_id: int
    file_name: str
    width: int | None
    height: int | None
    boxes_xywh: np.ndarray
    labels: np.ndarray
    relations: np.ndarray
    iscrowd: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    source: str = ""
    relation_source: str = ""
    one_based: bool = False
    name_lists: tuple[str, str] = ("the class names", "the predicate names")

    def __post_init__(self) -> None:
        where = self.source or f"image {self.image_id}"
        for name, dtype, width in (("boxes_xywh", np.float64, 4), ("labels", np.int64, 0), ("relations", np.int64, 3)):
            try:
                array = np.asarray(getattr(self, name), dtype=dtype)
                setattr(self, name, array.reshape(-1, width) if width else array.reshape(-1))
            except (ValueError, TypeError) as error:
                field_name = {"boxes_xywh": "bbox", "labels": "labels", "relations": "relations"}[name]
                raise DataError(f"{where}: field {field_name} is malformed ({error})") from error
        if self.iscrowd.size == 0:
            self.iscrowd = np.zeros(len(self.labels), dtype=bool)

    def check(self, num_labels: int, num_rel_labels: int) -> None:
        """Raise DataError if a label, predicate or relation index is out of range (names file, record, field)."""
        where = self.source or f"image {self.image_id}"
        if len(self.boxes_xywh) != len(self.labels):
            raise DataError(f"{where}: {len(self.boxes_xywh)} boxes but {len(self.labels)} labels")
        if not np.isfinite(self.boxes_xywh).all():
            raise DataError(f"{where}: field bbox contains NaN or infinity")
        # Messages quote the files' own values (1-based classes/predicates in VG), not the 0-based internal ones.
        base = int(self.one_based)
        classes, predicates = self.name_lists
        bad = np.flatnonzero((self.labels < 0) | (self.labels >= num_labels))
        if bad.size:
            raise DataError(
                f"{where}: object {bad[0]} has class {self.labels[bad[0]] + base}; {classes} has "
                f"{base}..{num_labels - 1 + base}"
            )
        if self.relations.size:
            relation_where = self.relation_source or where
            written = self.relations + np.array([0, 0, base])
            bad = np.flatnonzero(
                (self.relations[:, :2] < 0).any(1) | (self.relations[:, :2] >= len(self.labels)).any(1)
            )
            if bad.size:
                raise DataError(
                    f"{relation_where}: relation {bad[0]} {written[bad[0]].tolist()} indexes an object outside "
                    f"0..{len(self.labels) - 1} (the image has {len(self.labels)} objects)"
                )
            bad = np.flatnonzero((self.relations[:, 2] < 0) | (self.relations[:, 2] >= num_rel_labels))
            if bad.size:
                raise DataError(
                    f"{relation_where}: relation {bad[0]} {written[bad[0]].tolist()} has predicate "
                    f"{written[bad[0], 2]}; {predicates} has {base}..{num_rel_labels - 1 + base}"
                )


def sample_one_predicate_per_pair(relations: np.ndarray, generator: torch.Generator | None = None) -> np.ndarray:
    """Keep one uniformly drawn predicate for every (subject, object) pair (OI training, `filter_multiple_rels`).

    Args:
        relations: (M, 3) int64 [subject, object, predicate].
        generator: torch random generator; None uses the global torch RNG (seeded per DataLoader worker).

    Returns:
        (P, 3) int64, one row per distinct pair, in order of first appearance.
    """
    if len(relations) == 0:
        return relations.reshape(0, 3)
    predicates_by_pair: dict[tuple[int, int], list[int]] = {}
    for subject, obj, predicate in relations.tolist():
        predicates_by_pair.setdefault((subject, obj), []).append(predicate)
    sampled = []
    for (subject, obj), predicates in predicates_by_pair.items():
        choice = int(torch.randint(len(predicates), (), generator=generator).item())
        sampled.append((subject, obj, predicates[choice]))
    return np.asarray(sampled, dtype=np.int64).reshape(-1, 3)


def prepare_target(
    annotation: ImageAnnotation, image_width: int, image_height: int, relations: np.ndarray | None = None
) -> dict[str, torch.Tensor]:
    """Build the target of one image with absolute pixel boxes, before resizing.

    Steps (HF `prepare_coco_detection`, then the Q18 fix): drop crowd boxes; xywh -> xyxy in float32; clip to
    the image; drop boxes with x2 <= x1 or y2 <= y1; remap relation indices to the kept boxes and drop (and count
    in a warning) relations whose subject or object was dropped; remove duplicate triplets and sort them, which
    gives the same triplets in the same order as `rel.nonzero()` of the original dense tensor.

    Args:
        annotation: parsed annotations of the image.
        image_width, image_height: size of the decoded image (boxes are clipped to it).
        relations: (M, 3) triplets to use instead of `annotation.relations` (e.g. after predicate sampling).

    Returns:
        dict with `boxes` (n, 4) float32 xyxy pixels, `class_labels` (n,) int64, `relations` (M, 3) int64,
        `image_id` () int64, `orig_size` (2,) int64 [h, w].
    """
    # float32 arithmetic like the original, so boxes agree bit for bit.
    boxes = torch.as_tensor(annotation.boxes_xywh, dtype=torch.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    boxes[:, 0::2].clamp_(min=0, max=image_width)
    boxes[:, 1::2].clamp_(min=0, max=image_height)
    keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0]) & ~torch.as_tensor(annotation.iscrowd)
    new_index = torch.cumsum(keep.to(torch.int64), 0) - 1  # old annotation index -> index among kept boxes
    new_index[~keep] = -1

    triplets = torch.as_tensor(annotation.relations if relations is None else relations, dtype=torch.int64)
    triplets = triplets.reshape(-1, 3)
    if len(triplets):
        subjects, objects = new_index[triplets[:, 0]], new_index[triplets[:, 1]]
        valid = (subjects >= 0) & (objects >= 0)
        triplets = torch.stack([subjects, objects, triplets[:, 2]], dim=1)[valid]  # (M', 3)
        num_dropped_relations = int((~valid).sum())
        triplets = torch.unique(triplets, dim=0) if len(triplets) else triplets  # sorted lexicographically
    else:
        num_dropped_relations = 0
    num_dropped_boxes = int((~keep).sum())
    if num_dropped_relations:
        logger.warning(
            "%s: dropped %d empty/crowd box(es) and the %d relation(s) that referred to them",
            annotation.source or f"image {annotation.image_id}",
            num_dropped_boxes,
            num_dropped_relations,
        )
    elif num_dropped_boxes:
        logger.debug("%s: dropped %d empty/crowd box(es)", annotation.source, num_dropped_boxes)
    return {
        "boxes": boxes[keep],
        "class_labels": torch.as_tensor(annotation.labels, dtype=torch.int64)[keep],
        "relations": triplets.reshape(-1, 3),
        "image_id": torch.as_tensor(annotation.image_id, dtype=torch.int64),
        "orig_size": torch.as_tensor([image_height, image_width], dtype=torch.int64),
    }
