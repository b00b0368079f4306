"""Visual Genome 150/50 in the RelTR layout, our native format (reference §7.1).

Layout: `root/images/`, `root/{train,val,test}.json` (COCO detection: `images`, `annotations` with xywh `bbox`
and 1-based `category_id`, `categories`), `root/rel.json` (`{split: {str(image_id): [[s, o, p], ...]},
"rel_categories": ["__background__", names...]}` with 0-based annotation indices s, o into the image's annotation
list in file order and 1-based predicates p). Images are ordered by id like pycocotools/CocoDetection.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from egtr.data.base import SceneGraphDataset, read_json
from egtr.data.config import check_split
from egtr.data.targets import ImageAnnotation
from egtr.errors import DataError


def _require(record: Any, key: str, where: str) -> Any:
    if not isinstance(record, dict) or key not in record:
        raise DataError(f"{where}: missing field {key!r}")
    return record[key]


def read_vg_categories(coco: dict[str, Any], split_file: Path) -> list[str]:
    """Class names from `categories`, which must have ids 1..C (any order in the file)."""
    categories = _require(coco, "categories", str(split_file))
    if not isinstance(categories, list) or not categories:
        raise DataError(f"{split_file}: field 'categories' must be a non-empty list")
    by_id = {}
    for position, category in enumerate(categories):
        where = f"{split_file}, categories[{position}]"
        category_id = _require(category, "id", where)
        if category_id in by_id:
            raise DataError(f"{where}: duplicate category id {category_id}")
        by_id[category_id] = str(_require(category, "name", where))
    if sorted(by_id) != list(range(1, len(by_id) + 1)):
        raise DataError(f"{split_file}: category ids must be 1..{len(by_id)}, got {sorted(by_id)[:5]}...")
    return [by_id[index] for index in range(1, len(by_id) + 1)]


def read_vg_predicates(rel: dict[str, Any], rel_file: Path) -> list[str]:
    """Predicate names: `rel_categories` without its leading background entry."""
    names = _require(rel, "rel_categories", str(rel_file))
    if not isinstance(names, list) or len(names) < 2:
        raise DataError(f"{rel_file}: 'rel_categories' must list '__background__' followed by the predicates")
    return [str(name) for name in names[1:]]


def parse_vg_split(root: Path, split: str) -> tuple[list[ImageAnnotation], list[str], list[str]]:
    """Parse one split into annotations plus class and predicate names.

    Raises:
        DataError: missing/malformed files, empty image list, missing fields, out-of-range values.
    """
    check_split(split)
    split_file = root / f"{split}.json"
    rel_file = root / "rel.json"
    coco = read_json(split_file)
    rel = read_json(rel_file)
    class_names = read_vg_categories(coco, split_file)
    predicate_names = read_vg_predicates(rel, rel_file)
    images = _require(coco, "images", str(split_file))
    if not isinstance(images, list) or not images:
        raise DataError(f"{split_file}: the 'images' list is empty")
    split_relations = _require(rel, split, str(rel_file))
    if not isinstance(split_relations, dict):
        raise DataError(f"{rel_file}: field {split!r} must map image ids to relation lists")

    annotations_by_image: dict[int, list[dict[str, Any]]] = {}
    for position, annotation in enumerate(_require(coco, "annotations", str(split_file))):
        image_id = _require(annotation, "image_id", f"{split_file}, annotations[{position}]")
        annotations_by_image.setdefault(image_id, []).append(annotation)

    parsed = []
    seen_ids = set()
    for position, image in enumerate(images):
        image_id = _require(image, "id", f"{split_file}, images[{position}]")
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise DataError(f"{split_file}, images[{position}]: field 'id' must be an integer, got {image_id!r}")
    # Dataset order = ascending image id, like torchvision's CocoDetection (`sorted(coco.imgs.keys())`).
    for position, image in sorted(enumerate(images), key=lambda item: item[1]["id"]):
        where = f"{split_file}, images[{position}]"
        image_id = image["id"]
        if image_id in seen_ids:
            raise DataError(f"{where}: duplicate image id {image_id}")
        seen_ids.add(image_id)
        objects = annotations_by_image.get(image_id, [])
        boxes = []
        for index, obj in enumerate(objects):
            bbox = _require(obj, "bbox", f"{split_file}, image {image_id}, annotation {index}")
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise DataError(
                    f"{split_file}, image {image_id}, annotation {index}: field 'bbox' must be [x, y, w, h]"
                )
            boxes.append(bbox)
        labels = []
        for index, obj in enumerate(objects):
            category_id = _require(obj, "category_id", f"{split_file}, image {image_id}, annotation {index}")
            if not isinstance(category_id, int) or isinstance(category_id, bool):
                raise DataError(
                    f"{split_file}, image {image_id}, annotation {index}: field 'category_id' must be an "
                    f"integer, got {category_id!r}"
                )
            labels.append(category_id - 1)
        try:
            triplets = np.asarray(split_relations.get(str(image_id), []), dtype=np.int64).reshape(-1, 3).copy()
        except (ValueError, TypeError) as error:
            raise DataError(
                f"{rel_file}, {split}[{image_id!r}]: relations must be [[s, o, p], ...] ({error})"
            ) from error
        triplets[:, 2] -= 1  # 1-based predicate -> 0-based
        parsed.append(
            ImageAnnotation(
                image_id=int(image_id),
                file_name=str(_require(image, "file_name", where)),
                width=image.get("width"),
                height=image.get("height"),
                boxes_xywh=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                labels=np.asarray(labels, dtype=np.int64),
                relations=triplets,
                iscrowd=np.asarray([bool(obj.get("iscrowd", 0)) for obj in objects], dtype=bool),
                source=f"{split_file.name}, image {image_id}",
                relation_source=f"{rel_file.name}, {split}[{str(image_id)!r}]",
                one_based=True,
                name_lists=(f"{split_file.name} categories", f"{rel_file.name} rel_categories (after __background__)"),
            )
        )
    return parsed, class_names, predicate_names


class VisualGenomeDataset(SceneGraphDataset):
    """Visual Genome (RelTR layout) split; see the module docstring for the files.

    Args:
        root: dataset folder.
        split: "train", "val" or "test".
        transforms: see `SceneGraphDataset`.
        exif_transpose: apply EXIF orientation when decoding.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        transforms: Callable[..., Any] | None = None,
        exif_transpose: bool = True,
    ) -> None:
        root = Path(root)
        annotations, class_names, predicate_names = parse_vg_split(root, split)
        self.root = root
        super().__init__(
            annotations,
            root / "images",
            class_names,
            predicate_names,
            transforms,
            sample_one_predicate=False,
            exif_transpose=exif_transpose,
            kind="vg",
            split=split,
        )

    @property
    def annotation_files(self) -> list[Path]:
        """Files the annotations come from (used to key the statistics cache)."""
        return [self.root / f"{self.split}.json", self.root / "rel.json"]
