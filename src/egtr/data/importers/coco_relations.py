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

The files are streamed (`streaming`): each top-level list is read one record at a time and only the kept fields are
stored, in flat columns, so that memory follows the dataset's numbers rather than its JSON (VG150's size: see
`benchmarks/import_speed.py`).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

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
from egtr.data.importers.streaming import RecordRef, iter_field, read_field
from egtr.errors import DataError

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


REQUIRED_FIELDS = ("images", "annotations", "categories", "rel_annotations", "rel_categories")


def _missing(path: Path, field: str) -> DataError:
    hint = " (a plain COCO file has no relations)" if field.startswith("rel_") else ""
    return DataError(f"{path}: field {field!r} is missing or is not a non-empty list{hint}")


def read_coco_relations(source: Path, options: ImportOptions) -> SourceDataset:
    """Read the file(s) of `source` one record at a time; images are yielded by split file.

    The names are read first (a malformed file or vocabulary raises DataError before anything is written); the
    images, annotations and relations of each file are read in one streaming pass each (`streaming`), keeping only
    the fields the dataset needs, in flat arrays.
    """
    files = find_split_files(source)
    vocabularies: list[list[dict[int, str]]] = []  # per file: [classes, predicates]
    for _, path in files:
        vocabulary = []
        for field in ("categories", "rel_categories"):
            entries = read_field(path, field)
            if not entries:
                raise _missing(path, field)
            vocabulary.append(_names_by_id(entries, path, field))
        vocabularies.append(vocabulary)
    for (_, path), vocabulary in zip(files[1:], vocabularies[1:], strict=True):
        if vocabulary != vocabularies[0]:
            raise DataError(f"{path}: categories or rel_categories differ from those of {files[0][1]}")
    classes, predicates = vocabularies[0]
    class_index = {category_id: index for index, category_id in enumerate(sorted(classes))}
    predicate_index = {predicate_id: index for index, predicate_id in enumerate(sorted(predicates))}

    def images(report: ImportReport) -> Iterator[SourceImage]:
        for split, path in files:
            image_index = ImageIndex(options.images or path.parent)
            yield from _read_file(path, split, image_index, class_index, predicate_index, report)

    return SourceDataset(
        class_names=[classes[category_id] for category_id in sorted(classes)],
        predicate_names=[predicates[predicate_id] for predicate_id in sorted(predicates)],
        given_splits={split for split, _ in files if split is not None},
        images=images,
    )


class _Images:
    """The `images` of one file: id -> position in `records` (file order), and what each image keeps."""

    def __init__(self) -> None:
        self.position: dict[int, int] = {}
        # (id, position in the file, file name, width, height); None sizes are read from the image file
        self.records: list[tuple[int, int, str, int | None, int | None]] = []


class _Columns:
    """The kept fields of one list's records as flat columns (array typecodes), grouped by image in `by_image`."""

    def __init__(self, **typecodes: str) -> None:
        self.columns: dict[str, array[Any]] = {name: array(typecode) for name, typecode in typecodes.items()}
        self.image = array("q")  # position of the owning image in `_Images.records`

    def append(self, image: int, *values: float) -> None:
        self.image.append(image)
        for column, value in zip(self.columns.values(), values, strict=True):
            column.append(value)

    def by_image(self, num_images: int) -> tuple[dict[str, list[Any]], np.ndarray]:
        """The columns as lists ordered by image (file order within an image), and where each image's rows start."""
        owner = np.array(self.image, dtype=np.int64)
        order = np.argsort(owner, kind="stable")
        starts = np.zeros(num_images + 1, dtype=np.int64)
        np.cumsum(np.bincount(owner, minlength=num_images), out=starts[1:])
        columns = {name: np.array(column)[order].tolist() for name, column in self.columns.items()}
        return columns, starts


def _read_images(path: Path, report: ImportReport) -> _Images:
    images = _Images()
    seen = 0
    for position, image in enumerate(iter_field(path, "images")):
        seen += 1
        record = f"images[{position}]"
        if not isinstance(image, dict) or not is_int(image.get("id")) or not isinstance(image.get("file_name"), str):
            report.drop(reasons.BAD_RECORD, path, record, "id/file_name", "needs an integer id and a file_name", image)
            continue
        image_id = image["id"]
        if image_id in images.position:
            report.drop(reasons.DUPLICATE_IMAGE, path, f"image id {image_id}", "id", "image id used twice", image)
            continue
        width, height = image.get("width"), image.get("height")
        sized = is_int(width) and is_int(height) and width > 0 and height > 0
        images.position[image_id] = len(images.records)
        images.records.append(
            (image_id, position, image["file_name"], width if sized else None, height if sized else None)
        )
    if not seen:
        raise _missing(path, "images")
    return images


def _read_annotations(
    path: Path, images: _Images, class_index: dict[int, int], report: ImportReport
) -> tuple[_Columns, dict[int, tuple[str, str, str]]]:
    objects = _Columns(id="q", label="q", position="q", x="d", y="d", w="d", h="d")
    drops: dict[int, tuple[str, str, str]] = {}  # file position -> (reason, field, detail) of an object to drop
    for position, annotation in enumerate(iter_field(path, "annotations")):
        if not isinstance(annotation, dict):
            report.drop(reasons.BAD_RECORD, path, f"annotations[{position}]", "", "not an object", annotation)
            continue
        record = f"annotation id {annotation.get('id')}" if "id" in annotation else f"annotations[{position}]"
        owner: Any = annotation.get("image_id")  # any JSON value: looked up, never trusted
        image = images.position.get(owner) if is_int(owner) else None
        box = as_box(annotation.get("bbox"))
        if not is_int(annotation.get("id")):
            problem = ("id", "needs an integer id (relations refer to it)")
        elif image is None:
            problem = ("image_id", f"no image with id {owner!r}")
        elif box is None:
            problem = ("bbox", "must be [x, y, w, h] numbers")
        else:
            category: Any = annotation.get("category_id")
            label = class_index.get(category, -1) if is_int(category) else -1
            if label < 0:
                drops[position] = (reasons.UNKNOWN_CLASS, "category_id", f"{category!r} is not in categories")
            elif annotation.get("iscrowd"):
                drops[position] = (reasons.CROWD_BOX, "iscrowd", "crowd boxes are not objects")
            objects.append(image, annotation["id"], max(label, 0), position, *box)
            continue
        report.drop(reasons.BAD_RECORD, path, record, *problem, annotation)
    return objects, drops


def _read_relations(
    path: Path, images: _Images, predicate_index: dict[int, int], report: ImportReport
) -> tuple[_Columns, dict[int, str]]:
    relations = _Columns(id="q", subject="q", object="q", predicate="q", position="q")
    records: dict[int, str] = {}  # file position -> record name, for the relations without an integer id
    seen = 0
    for position, relation in enumerate(iter_field(path, "rel_annotations")):
        seen += 1
        if not isinstance(relation, dict):
            report.drop(reasons.BAD_RECORD, path, f"rel_annotations[{position}]", "", "not an object", relation)
            continue
        relation_id: Any = relation.get("id")
        record = f"rel_annotation id {relation_id}" if "id" in relation else f"rel_annotations[{position}]"
        relation_image: Any = relation.get("image_id")
        image = images.position.get(relation_image) if is_int(relation_image) else None
        if image is None:
            detail = f"no image with id {relation_image!r}"
            report.drop(reasons.BAD_RECORD, path, record, "image_id", detail, relation)
            continue
        predicate_id: Any = relation.get("predicate_id")
        predicate = predicate_index.get(predicate_id) if is_int(predicate_id) else None
        if predicate is None:
            detail = f"{predicate_id!r} is not in rel_categories"
            report.drop(reasons.UNKNOWN_PREDICATE, path, record, "predicate_id", detail, relation)
            continue
        subject, obj = relation.get("subject_id"), relation.get("object_id")
        if not (is_int(subject) and is_int(obj)):
            end, value = ("subject", subject) if not is_int(subject) else ("object", obj)
            detail = f"{end} {value!r} is not an annotation id"
            report.drop(reasons.RELATION_TO_MISSING_OBJECT, path, record, end, detail, relation)
            continue
        if not is_int(relation_id):
            records[position] = record
        relations.append(image, relation_id if is_int(relation_id) else 0, subject, obj, predicate, position)
    if not seen:
        raise _missing(path, "rel_annotations")
    return relations, records


def _read_file(
    path: Path,
    split: str | None,
    image_index: ImageIndex,
    class_index: dict[int, int],
    predicate_index: dict[int, int],
    report: ImportReport,
) -> Iterator[SourceImage]:
    images = _read_images(path, report)
    objects, object_drops = _read_annotations(path, images, class_index, report)
    relations, relation_records = _read_relations(path, images, predicate_index, report)
    num_images = len(images.records)
    object_columns, object_starts = objects.by_image(num_images)
    relation_columns, relation_starts = relations.by_image(num_images)
    object_rows = zip(*object_columns.values(), strict=True)
    relation_rows = zip(*relation_columns.values(), strict=True)
    for index, (image_id, image_position, file_name, width, height) in enumerate(images.records):
        image = SourceImage(
            source_file=path,
            record=f"image id {image_id}",
            source_id=str(image_id),
            image_path=image_index.find(file_name),
            file_name=file_name,
            width=width,
            height=height,
            split=split,
            native_id=image_id,
            raw=RecordRef(path, "images", image_position),
        )
        for _ in range(object_starts[index + 1] - object_starts[index]):
            key, label, position, x, y, w, h = next(object_rows)
            image.objects.append(
                SourceObject(
                    key,
                    label,
                    (x, y, w, h),
                    f"annotation id {key}",
                    RecordRef(path, "annotations", position),
                    object_drops.get(position),
                )
            )
        for _ in range(relation_starts[index + 1] - relation_starts[index]):
            relation_id, subject, obj, predicate, position = next(relation_rows)
            record = relation_records.get(position) or f"rel_annotation id {relation_id}"
            image.relations.append(
                SourceRelation(subject, obj, predicate, record, RecordRef(path, "rel_annotations", position))
            )
        yield image
