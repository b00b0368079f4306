"""Open Images V6 in the SGTR/BGNN layout (reference §7.2).

Layout: `root/images/{img_fn}.jpg`, `root/annotations/vrd-{train,val,test}-anno.json` (a list of
`{img_fn, bbox: [[x1, y1, x2, y2], ...], det_labels: [0-based], rel: [[s, o, p], ...] (0-based)}`),
`root/annotations/categories_dict.json` (`{"obj": [names], "rel": [names]}`, no background entry).

Training filters of the original: images with more than `num_queries` boxes are dropped, exact duplicate triplets
are removed, and one predicate per (subject, object) pair is drawn at every load. Boxes become
[x1, y1, x2 + 1, y2 + 1] (the original's +1 xywh conversion, quirk Q5, kept by default).
The image id is the record's position in the annotation file (the original uses the position after filtering,
which is the same for val/test).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from egtr.data.base import SceneGraphDataset, read_json
from egtr.data.config import check_split
from egtr.data.targets import ImageAnnotation
from egtr.errors import DataError

logger = logging.getLogger(__name__)


def read_oi_categories(root: Path) -> tuple[list[str], list[str]]:
    """Object and predicate names from `annotations/categories_dict.json`."""
    path = root / "annotations" / "categories_dict.json"
    categories = read_json(path)
    for key in ("obj", "rel"):
        if not isinstance(categories, dict) or not isinstance(categories.get(key), list) or not categories[key]:
            raise DataError(f"{path}: field {key!r} must be a non-empty list of names")
    return [str(name) for name in categories["obj"]], [str(name) for name in categories["rel"]]


def _unique_rows_in_order(relations: np.ndarray) -> np.ndarray:
    """Remove duplicate rows, keeping the first occurrence order (the original's dict-based filter)."""
    if len(relations) == 0:
        return relations
    _, first = np.unique(relations, axis=0, return_index=True)
    return relations[np.sort(first)]


def parse_oi_split(
    root: Path,
    split: str,
    train_filters: bool,
    num_queries: int | None = None,
    filter_duplicate_rels: bool = True,
    box_plus_one: bool = True,
) -> tuple[list[ImageAnnotation], list[str], list[str]]:
    """Parse one split; `train_filters` applies the box-count and duplicate-triplet filters."""
    check_split(split)
    class_names, predicate_names = read_oi_categories(root)
    path = root / "annotations" / f"vrd-{split}-anno.json"
    records = read_json(path)
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a list of image records")
    if not records:
        raise DataError(f"{path}: the image list is empty")
    parsed = []
    num_too_many = 0
    for position, record in enumerate(records):
        where = f"{path}, record {position}"
        for key in ("img_fn", "bbox", "det_labels", "rel"):
            if not isinstance(record, dict) or key not in record:
                raise DataError(f"{where}: missing field {key!r}")
        boxes = np.asarray(record["bbox"], dtype=np.float64).reshape(-1, 4) if record["bbox"] else np.zeros((0, 4))
        if train_filters and num_queries is not None and len(boxes) > num_queries:
            num_too_many += 1
            continue
        widths_heights = boxes[:, 2:] - boxes[:, :2] + (1 if box_plus_one else 0)
        relations = np.asarray(record["rel"], dtype=np.int64).reshape(-1, 3)
        if train_filters and filter_duplicate_rels:
            relations = _unique_rows_in_order(relations)
        parsed.append(
            ImageAnnotation(
                image_id=position,
                file_name=f"{record['img_fn']}.jpg",
                width=None,  # img_size is not used by the original EGTR loader
                height=None,
                boxes_xywh=np.concatenate([boxes[:, :2], widths_heights], axis=1),
                labels=np.asarray(record["det_labels"], dtype=np.int64),
                relations=relations,
                source=f"{path.name}, record {position} ({record['img_fn']})",
                name_lists=("categories_dict.json 'obj'", "categories_dict.json 'rel'"),
            )
        )
    if num_too_many:
        logger.info("%s: dropped %d image(s) with more than %d boxes", path.name, num_too_many, num_queries)
    return parsed, class_names, predicate_names


class OpenImagesDataset(SceneGraphDataset):
    """Open Images V6 (SGTR layout) split; see the module docstring.

    Args:
        root: dataset folder.
        split: "train", "val" or "test".
        transforms: see `SceneGraphDataset`.
        num_queries: training drops images with more boxes than this (the model's query count; None keeps all).
        filter_duplicate_rels: training removes exact duplicate triplets.
        sample_one_predicate: training draws one predicate per pair at every load.
        box_plus_one: keep the original's +1 on x2/y2 (quirk Q5).
        exif_transpose: apply EXIF orientation when decoding.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        transforms: Callable[..., Any] | None = None,
        num_queries: int | None = None,
        filter_duplicate_rels: bool = True,
        sample_one_predicate: bool = True,
        box_plus_one: bool = True,
        exif_transpose: bool = True,
    ) -> None:
        root = Path(root)
        is_train = split == "train"
        annotations, class_names, predicate_names = parse_oi_split(
            root,
            split,
            train_filters=is_train,
            num_queries=num_queries,
            filter_duplicate_rels=filter_duplicate_rels,
            box_plus_one=box_plus_one,
        )
        self.root = root
        super().__init__(
            annotations,
            root / "images",
            class_names,
            predicate_names,
            transforms,
            sample_one_predicate=sample_one_predicate and is_train,
            exif_transpose=exif_transpose,
            kind="oi",
            split=split,
        )

    @property
    def annotation_files(self) -> list[Path]:
        annotations = self.root / "annotations"
        return [annotations / f"vrd-{self.split}-anno.json", annotations / "categories_dict.json"]
