"""`psg`: OpenPSG's `psg.json` (panoptic scene graphs on COCO images), read as OpenPSG's loader reads it.

`{data: [{image_id (string), file_name ("train2017/..."), width, height, annotations: [{bbox, bbox_mode,
category_id}], relations: [[s, o, p]]}], thing_classes, stuff_classes, predicate_classes, test_image_ids}`.
Boxes are **xyxy** (detectron2 `bbox_mode` 0; mode 1, xywh, is read too); `category_id` is 0-based into
thing_classes + stuff_classes; `s`/`o` are **positions** in `annotations` and `p` is 0-based. Images in
`test_image_ids` form the test split, the others train (val is drawn from train, as OpenPSG has none). Class
names lose their `-merged` / `-other` suffixes where the shorter name stays unique ("grass-merged" -> "grass").
Image names are resolved against `--images` (the COCO folder holding train2017/ and val2017/).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import egtr.data.importers.report as reasons
from egtr.data.importers.records import (
    ImageIndex,
    ImportOptions,
    SourceDataset,
    SourceImage,
    SourceObject,
    SourceRelation,
    as_box,
    is_int,
)
from egtr.data.importers.report import ImportReport
from egtr.data.importers.streaming import iter_field, read_fields, top_level_kind
from egtr.errors import DataError

_SUFFIXES = ("-merged", "-other")
_XYXY, _XYWH = 0, 1  # detectron2 BoxMode.XYXY_ABS / XYWH_ABS


def readable_names(names: list[str]) -> list[str]:
    """Drop the `-merged` / `-other` suffixes of COCO panoptic names where the result stays unique."""
    result = list(names)
    for suffix in _SUFFIXES:
        shortened = [name[: -len(suffix)] if name.endswith(suffix) else name for name in result]
        result = [short if shortened.count(short) == 1 else name for short, name in zip(shortened, result, strict=True)]
    return result


def _name_list(fields: dict[str, Any], field: str, path: Path) -> list[str]:
    names = fields.get(field)
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        raise DataError(f"{path}: field {field!r} must be a non-empty list of names")
    return names


def read_psg(source: Path, options: ImportOptions) -> SourceDataset:
    """Read `psg.json`, or the `psg.json` of a folder (a malformed file raises DataError)."""
    if source.is_dir():
        if not (source / "psg.json").is_file():
            raise DataError(f"{source}: a folder without psg.json; pass OpenPSG's psg.json file")
        source = source / "psg.json"
    if top_level_kind(source) != "object":
        raise DataError(f"{source}: expected OpenPSG's psg.json (an object with a 'data' list)")
    # The name lists first (small; a malformed file raises DataError here), then `data` one item at a time.
    small = read_fields(source, ("thing_classes", "stuff_classes", "predicate_classes", "test_image_ids"))
    classes = _name_list(small, "thing_classes", source) + _name_list(small, "stuff_classes", source)
    predicates = _name_list(small, "predicate_classes", source)
    test_ids = small.get("test_image_ids", [])
    if not isinstance(test_ids, list):
        raise DataError(f"{source}: field 'test_image_ids' must be a list of image ids")
    test_ids = {str(image_id) for image_id in test_ids}

    def images(report: ImportReport) -> Iterator[SourceImage]:
        index = ImageIndex(options.images or source.parent)
        seen = 0
        for position, item in enumerate(iter_field(source, "data")):
            seen += 1
            image = _read_item(source, position, item, index, len(classes), len(predicates), test_ids, report)
            if image is not None:
                yield image
        if not seen:
            raise DataError(f"{source}: expected OpenPSG's psg.json (an object with a non-empty 'data' list)")

    return SourceDataset(readable_names(classes), predicates, {"train", "test"}, images)


def _read_item(
    source: Path,
    position: int,
    item: Any,
    index: ImageIndex,
    num_classes: int,
    num_predicates: int,
    test_ids: set[str],
    report: ImportReport,
) -> SourceImage | None:
    if not isinstance(item, dict) or "image_id" not in item or not isinstance(item.get("file_name"), str):
        report.drop(reasons.BAD_RECORD, source, f"data[{position}]", "image_id/file_name", "missing", item)
        return None
    record = f"image_id {item['image_id']}"
    annotations, relations = item.get("annotations"), item.get("relations")
    if not isinstance(annotations, list) or not isinstance(relations, list):
        report.drop(reasons.BAD_RECORD, source, record, "annotations/relations", "must be lists", item)
        return None
    width, height = item.get("width"), item.get("height")
    sized = is_int(width) and is_int(height)
    image = SourceImage(
        source_file=source,
        record=record,
        source_id=str(item["image_id"]),
        image_path=index.find(item["file_name"]),
        file_name=item["file_name"],
        width=width if sized else None,
        height=height if sized else None,
        split="test" if str(item["image_id"]) in test_ids else "train",
        raw=item,
    )
    for box_position, annotation in enumerate(annotations):
        object_record = f"{record}, annotations[{box_position}]"
        box = as_box(annotation.get("bbox")) if isinstance(annotation, dict) else None
        mode = annotation.get("bbox_mode", _XYXY) if isinstance(annotation, dict) else None
        if box is None or mode not in (_XYXY, _XYWH):
            detail = "bbox must be 4 numbers with bbox_mode 0 (xyxy) or 1 (xywh)"
            # Kept as a dropped object so that the positions of the boxes after it do not shift.
            image.objects.append(
                SourceObject(
                    box_position, 0, (0, 0, 0, 0), object_record, annotation, (reasons.BAD_RECORD, "bbox", detail)
                )
            )
            continue
        x1, y1, a, b = box
        xywh = (x1, y1, a - x1, b - y1) if mode == _XYXY else box
        category = annotation.get("category_id")
        drop = None
        if not is_int(category) or not 0 <= category < num_classes:
            drop = (reasons.UNKNOWN_CLASS, "category_id", f"{category!r} is not in 0..{num_classes - 1}")
        image.objects.append(
            SourceObject(box_position, category if drop is None else 0, xywh, object_record, annotation, drop)
        )
    for relation_position, relation in enumerate(relations):
        relation_record = f"{record}, relations[{relation_position}]"
        if not (isinstance(relation, list) and len(relation) == 3 and all(is_int(value) for value in relation)):
            report.drop(
                reasons.BAD_RECORD, source, relation_record, "relations", "must be [s, o, p] integers", relation
            )
            continue
        subject, obj, predicate = relation
        if not 0 <= predicate < num_predicates:
            detail = f"{predicate} is not in 0..{num_predicates - 1}"
            report.drop(reasons.UNKNOWN_PREDICATE, source, relation_record, "relations", detail, relation)
            continue
        image.relations.append(SourceRelation(subject, obj, predicate, relation_record, relation))
    return image
