"""`coco-relations`: the SGG-Benchmark COCO layout (VG150 / PSG / IndoorVG coco-format datasets).

Read as SGG-Benchmark's `RelationDataset` reads it (docs/ANNOTATIONS.md; see ../shared/docs/annotation-formats.md):
COCO `images` / `annotations` (`bbox` xywh, `category_id`) / `categories`, plus `rel_categories` (`[{id, name}]`,
or bare strings with ids i + 1) and a file-global `rel_annotations: [{id, image_id, subject_id, predicate_id,
object_id}]` whose subject and object are **annotation ids**. Category and predicate ids may start at 0 or 1 and
have gaps: they are mapped to 0..C-1 in id order, and a `__background__` entry is skipped.

The source is one file (the split is drawn), or a folder with `{train,val,test}/_annotations.coco.json` (the Hub
layout) or `{train,val,test}.json`. Image names are resolved against `--images`, else the annotation file's folder.
Unlike SGG-Benchmark's loader, which drops relations to other images' boxes silently and keeps one random
predicate per duplicated pair, every drop is reported, and several predicates per pair are kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import egtr.data.importers.report as reasons
from egtr.data.importers.records import (
    SPLITS,
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
from egtr.errors import DataError
from egtr.fileio import read_json

BACKGROUND = "__background__"
SPLIT_FILE_PATTERNS = ("{split}/_annotations.coco.json", "{split}.json")


def find_split_files(source: Path) -> list[tuple[str | None, Path]]:
    """[(split or None, file)]: a single file has no split; a folder holds one file per split."""
    if source.is_file():
        return [(None, source)]
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such file or directory")
    for pattern in SPLIT_FILE_PATTERNS:
        candidates = [(split, source / pattern.format(split=split)) for split in SPLITS]
        files: list[tuple[str | None, Path]] = [(split, path) for split, path in candidates if path.is_file()]
        if files:
            return files
    patterns = " or ".join(pattern.format(split="{train,val,test}") for pattern in SPLIT_FILE_PATTERNS)
    raise DataError(f"{source}: no annotation file ({patterns}) in this folder")


def _names_by_id(entries: Any, path: Path, field: str) -> dict[int, str]:
    """{id: name} of `categories` / `rel_categories` without the background entry (bare strings get id i + 1)."""
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{path}: field {field!r} must be a non-empty list")
    names: dict[int, str] = {}
    for position, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"id": position + 1, "name": entry}
        if not isinstance(entry, dict) or not is_int(entry.get("id")) or not isinstance(entry.get("name"), str):
            raise DataError(f"{path}: {field}[{position}]: expected {{'id': int, 'name': str}}, got {entry!r}")
        if entry["id"] in names:
            raise DataError(f"{path}: {field}[{position}]: id {entry['id']} used twice")
        if entry["name"] != BACKGROUND:
            names[entry["id"]] = entry["name"]
    return names


def _require_lists(data: Any, path: Path) -> None:
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with images, annotations, categories, rel_annotations")
    for field in ("images", "annotations", "categories", "rel_annotations", "rel_categories"):
        if not isinstance(data.get(field), list):
            hint = " (a plain COCO file has no relations)" if field.startswith("rel_") else ""
            raise DataError(f"{path}: field {field!r} is missing or not a list{hint}")


def read_coco_relations(source: Path, options: ImportOptions) -> SourceDataset:
    """Read the file(s) of `source` (malformed files raise DataError); images are yielded by split file."""
    files = [(split, path, read_json(path, DataError)) for split, path in find_split_files(source)]
    vocabularies = []
    for _, path, data in files:
        _require_lists(data, path)
        vocabularies.append(
            (
                _names_by_id(data["categories"], path, "categories"),
                _names_by_id(data["rel_categories"], path, "rel_categories"),
            )
        )
    for (_, path, _), vocabulary in zip(files[1:], vocabularies[1:], strict=True):
        if vocabulary != vocabularies[0]:
            raise DataError(f"{path}: categories or rel_categories differ from those of {files[0][1]}")
    classes, predicates = vocabularies[0]
    class_index = {category_id: index for index, category_id in enumerate(sorted(classes))}
    predicate_index = {predicate_id: index for index, predicate_id in enumerate(sorted(predicates))}

    def images(report: ImportReport) -> Iterator[SourceImage]:
        for split, path, data in files:
            image_index = ImageIndex(options.images or path.parent)
            yield from _read_file(path, data, split, image_index, class_index, predicate_index, report)

    return SourceDataset(
        class_names=[classes[category_id] for category_id in sorted(classes)],
        predicate_names=[predicates[predicate_id] for predicate_id in sorted(predicates)],
        given_splits={split for split, _, _ in files if split is not None},
        images=images,
    )


def _read_file(
    path: Path,
    data: dict[str, Any],
    split: str | None,
    image_index: ImageIndex,
    class_index: dict[int, int],
    predicate_index: dict[int, int],
    report: ImportReport,
) -> Iterator[SourceImage]:
    images: dict[int, SourceImage] = {}
    for position, image in enumerate(data["images"]):
        record = f"images[{position}]"
        if not isinstance(image, dict) or not is_int(image.get("id")) or not isinstance(image.get("file_name"), str):
            report.drop(reasons.BAD_RECORD, path, record, "id/file_name", "needs an integer id and a file_name", image)
            continue
        image_id = image["id"]
        if image_id in images:
            report.drop(reasons.DUPLICATE_IMAGE, path, f"image id {image_id}", "id", "image id used twice", image)
            continue
        width, height = image.get("width"), image.get("height")
        sized = is_int(width) and is_int(height) and width > 0 and height > 0
        images[image_id] = SourceImage(
            source_file=path,
            record=f"image id {image_id}",
            source_id=str(image_id),
            image_path=image_index.find(image["file_name"]),
            file_name=image["file_name"],
            width=width if sized else None,  # None: read from the image file
            height=height if sized else None,
            split=split,
            native_id=image_id,
            raw=image,
        )
    for position, annotation in enumerate(data["annotations"]):
        if not isinstance(annotation, dict):
            report.drop(reasons.BAD_RECORD, path, f"annotations[{position}]", "", "not an object", annotation)
            continue
        record = f"annotation id {annotation.get('id')}" if "id" in annotation else f"annotations[{position}]"
        owner: Any = annotation.get("image_id")  # any JSON value: looked up, never trusted
        image = images.get(owner)
        box = as_box(annotation.get("bbox"))
        if not is_int(annotation.get("id")):
            problem = ("id", "needs an integer id (relations refer to it)")
        elif image is None:
            problem = ("image_id", f"no image with id {owner!r}")
        elif box is None:
            problem = ("bbox", "must be [x, y, w, h] numbers")
        else:
            category: Any = annotation.get("category_id")
            label = class_index.get(category, -1)
            drop = None
            if label < 0:
                drop = (reasons.UNKNOWN_CLASS, "category_id", f"{category!r} is not in categories")
            elif annotation.get("iscrowd"):
                drop = (reasons.CROWD_BOX, "iscrowd", "crowd boxes are not objects")
            image.objects.append(SourceObject(annotation["id"], max(label, 0), box, record, annotation, drop))
            continue
        report.drop(reasons.BAD_RECORD, path, record, *problem, annotation)
    for position, relation in enumerate(data["rel_annotations"]):
        if not isinstance(relation, dict):
            report.drop(reasons.BAD_RECORD, path, f"rel_annotations[{position}]", "", "not an object", relation)
            continue
        record = f"rel_annotation id {relation['id']}" if "id" in relation else f"rel_annotations[{position}]"
        relation_image: Any = relation.get("image_id")
        image = images.get(relation_image)
        if image is None:
            detail = f"no image with id {relation_image!r}"
            report.drop(reasons.BAD_RECORD, path, record, "image_id", detail, relation)
            continue
        predicate_id: Any = relation.get("predicate_id")
        predicate = predicate_index.get(predicate_id)
        if predicate is None:
            detail = f"{predicate_id!r} is not in rel_categories"
            report.drop(reasons.UNKNOWN_PREDICATE, path, record, "predicate_id", detail, relation)
            continue
        image.relations.append(
            SourceRelation(relation.get("subject_id"), relation.get("object_id"), predicate, record, relation)
        )
    yield from images.values()
