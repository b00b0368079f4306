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
from egtr.data.config import SPLITS
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
from egtr.data.importers.streaming import RecordRef, iter_fields
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
    """Read the file(s) of `source` one record at a time, one pass per file; images are yielded by split file.

    The names are only known at the end of a file's pass (a file may list `categories` after its annotations), so
    the dataset's names are filled in when the first file has been read; a later file with other names stops the
    import with a DataError, as does a malformed file (nothing is left written).
    """
    files = find_split_files(source)
    dataset = SourceDataset(
        class_names=[],
        predicate_names=[],
        given_splits={split for split, _ in files if split is not None},
        images=lambda report: _images(files, options, dataset, report),
    )
    return dataset


def _images(
    files: list[tuple[str | None, Path]], options: ImportOptions, dataset: SourceDataset, report: ImportReport
) -> Iterator[SourceImage]:
    first: tuple[dict[int, str], dict[int, str]] | None = None
    for split, path in files:
        contents = _read_file(path, report)
        classes = _names_by_id(contents.names["categories"], path, "categories")
        predicates = _names_by_id(contents.names["rel_categories"], path, "rel_categories")
        if first is None:
            first = (classes, predicates)
            dataset.class_names[:] = [classes[category_id] for category_id in sorted(classes)]
            dataset.predicate_names[:] = [predicates[predicate_id] for predicate_id in sorted(predicates)]
        elif (classes, predicates) != first:
            raise DataError(f"{path}: categories or rel_categories differ from those of {files[0][1]}")
        yield from contents.source_images(split, ImageIndex(options.images or path.parent), classes, predicates, report)


class _Columns:
    """The kept fields of one list's records: integer fields and float fields, each record's values appended in
    one call (`integers.extend((...))`: this runs 1.2M times for VG150), split into named columns at the end."""

    def __init__(self, integer_fields: tuple[str, ...], float_fields: tuple[str, ...] = ()) -> None:
        self.integer_fields, self.float_fields = integer_fields, float_fields
        self.integers: array[int] = array("q")
        self.floats: array[float] = array("d")

    def arrays(self) -> dict[str, np.ndarray]:
        columns = {}
        for fields, values in ((self.integer_fields, self.integers), (self.float_fields, self.floats)):
            table = np.asarray(values).reshape(-1, len(fields)) if fields else None
            columns.update({name: table[:, index] for index, name in enumerate(fields)} if table is not None else {})
        return columns


# A category or predicate id that is no integer (the record is reported when read; the object is kept as dropped).
_NOT_AN_ID = -(2**62)


class _FileContents:
    """One file's records after its single pass: images, and the kept fields of its annotations and relations."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.image_position: dict[int, int] = {}  # image id -> index in image_records
        # (id, position in the file, file name, width, height); None sizes are read from the image file
        self.image_records: list[tuple[int, int, str, int | None, int | None]] = []
        self.objects = _Columns(("id", "image", "category", "crowd", "position"), ("x", "y", "w", "h"))
        self.relations = _Columns(("id", "image", "subject", "object", "predicate", "position"))
        self.relation_records: dict[int, str] = {}  # file position -> record name, for relations without an int id
        self.object_drops: dict[int, tuple[str, str, str]] = {}  # file position -> (reason, field, detail)
        self.names: dict[str, list[Any]] = {"categories": [], "rel_categories": []}

    # ------------------------------------------------------------------ while reading
    def add_image(self, position: int, image: Any, report: ImportReport) -> None:
        record = f"images[{position}]"
        if not isinstance(image, dict) or not is_int(image.get("id")) or not isinstance(image.get("file_name"), str):
            detail = "needs an integer id and a file_name"
            report.drop(reasons.BAD_RECORD, self.path, record, "id/file_name", detail, image)
            return
        image_id = image["id"]
        if image_id in self.image_position:
            report.drop(reasons.DUPLICATE_IMAGE, self.path, f"image id {image_id}", "id", "image id used twice", image)
            return
        width, height = image.get("width"), image.get("height")
        sized = is_int(width) and is_int(height) and width > 0 and height > 0
        self.image_position[image_id] = len(self.image_records)
        self.image_records.append(
            (image_id, position, image["file_name"], width if sized else None, height if sized else None)
        )

    def add_annotation(self, position: int, annotation: Any, report: ImportReport) -> None:
        if not isinstance(annotation, dict):
            report.drop(reasons.BAD_RECORD, self.path, f"annotations[{position}]", "", "not an object", annotation)
            return
        record = f"annotation id {annotation.get('id')}" if "id" in annotation else f"annotations[{position}]"
        owner: Any = annotation.get("image_id")  # any JSON value: looked up, never trusted
        box = as_box(annotation.get("bbox"))
        if not is_int(annotation.get("id")):
            problem = ("id", "needs an integer id (relations refer to it)")
        elif not is_int(owner):
            problem = ("image_id", f"no image with id {owner!r}")
        elif box is None:
            problem = ("bbox", "must be [x, y, w, h] numbers")
        else:
            category: Any = annotation.get("category_id")
            if not is_int(category):
                self.object_drops[position] = (
                    reasons.UNKNOWN_CLASS,
                    "category_id",
                    f"{category!r} is not in categories",
                )
                category = _NOT_AN_ID
            crowd = 1 if annotation.get("iscrowd") else 0
            self.objects.integers.extend((annotation["id"], owner, category, crowd, position))
            self.objects.floats.extend(box)
            return
        report.drop(reasons.BAD_RECORD, self.path, record, *problem, annotation)

    def add_relation(self, position: int, relation: Any, report: ImportReport) -> None:
        if not isinstance(relation, dict):
            report.drop(reasons.BAD_RECORD, self.path, f"rel_annotations[{position}]", "", "not an object", relation)
            return
        relation_id: Any = relation.get("id")
        record = f"rel_annotation id {relation_id}" if "id" in relation else f"rel_annotations[{position}]"
        owner: Any = relation.get("image_id")
        predicate: Any = relation.get("predicate_id")
        subject, obj = relation.get("subject_id"), relation.get("object_id")
        if not is_int(owner):
            report.drop(reasons.BAD_RECORD, self.path, record, "image_id", f"no image with id {owner!r}", relation)
        elif not is_int(predicate):
            detail = f"{predicate!r} is not in rel_categories"
            report.drop(reasons.UNKNOWN_PREDICATE, self.path, record, "predicate_id", detail, relation)
        elif not (is_int(subject) and is_int(obj)):
            end, value = ("subject", subject) if not is_int(subject) else ("object", obj)
            detail = f"{end} {value!r} is not an annotation id"
            report.drop(reasons.RELATION_TO_MISSING_OBJECT, self.path, record, end, detail, relation)
        else:
            if not is_int(relation_id):
                self.relation_records[position] = record
            relation_key = relation_id if is_int(relation_id) else 0
            self.relations.integers.extend((relation_key, owner, subject, obj, predicate, position))

    # ------------------------------------------------------------------ after reading
    def _relation_record(self, relation_id: int, position: int) -> str:
        return self.relation_records.get(position) or f"rel_annotation id {relation_id}"

    def _owners(self, columns: dict[str, np.ndarray], field: str, report: ImportReport) -> np.ndarray:
        """Index of each row's image (-1 and reported when the file has no image with that id)."""
        image_ids = columns["image"]
        owners = np.fromiter((self.image_position.get(i, -1) for i in image_ids.tolist()), np.int64, len(image_ids))
        for row in np.flatnonzero(owners < 0).tolist():
            record_id, position = int(columns["id"][row]), int(columns["position"][row])
            record = (
                f"annotation id {record_id}" if field == "annotations" else self._relation_record(record_id, position)
            )
            detail = f"no image with id {int(image_ids[row])!r}"
            report.drop(
                reasons.BAD_RECORD, self.path, record, "image_id", detail, RecordRef(self.path, field, position)
            )
        return owners

    def source_images(
        self,
        split: str | None,
        image_index: ImageIndex,
        classes: dict[int, str],
        predicates: dict[int, str],
        report: ImportReport,
    ) -> Iterator[SourceImage]:
        """The images with their objects and relations, in file order, the ids mapped to 0-based indices."""
        path = self.path
        objects, relations = self.objects.arrays(), self.relations.arrays()
        self.objects = self.relations = _Columns(())  # the arrays above are the only copies now

        object_owner = self._owners(objects, "annotations", report)
        class_index = {category_id: index for index, category_id in enumerate(sorted(classes))}
        labels = np.fromiter((class_index.get(c, -1) for c in objects["category"].tolist()), np.int64)
        for row in np.flatnonzero((labels < 0) & (object_owner >= 0)).tolist():
            position, category = int(objects["position"][row]), int(objects["category"][row])
            if category != _NOT_AN_ID:
                self.object_drops[position] = (
                    reasons.UNKNOWN_CLASS,
                    "category_id",
                    f"{category!r} is not in categories",
                )
        for row in np.flatnonzero((labels >= 0) & objects["crowd"].astype(bool)).tolist():
            self.object_drops[int(objects["position"][row])] = (
                reasons.CROWD_BOX,
                "iscrowd",
                "crowd boxes are not objects",
            )

        relation_owner = self._owners(relations, "rel_annotations", report)
        predicate_index = {predicate_id: index for index, predicate_id in enumerate(sorted(predicates))}
        predicate = np.fromiter((predicate_index.get(p, -1) for p in relations["predicate"].tolist()), np.int64)
        for row in np.flatnonzero((predicate < 0) & (relation_owner >= 0)).tolist():
            detail = f"{int(relations['predicate'][row])!r} is not in rel_categories"
            position = int(relations["position"][row])
            record = self._relation_record(int(relations["id"][row]), position)
            ref = RecordRef(path, "rel_annotations", position)
            report.drop(reasons.UNKNOWN_PREDICATE, path, record, "predicate_id", detail, ref)
        relation_owner[predicate < 0] = -1

        object_order, object_starts = _group(object_owner, len(self.image_records))
        relation_order, relation_starts = _group(relation_owner, len(self.image_records))
        object_columns = [objects[name][object_order] for name in ("id", "position", "x", "y", "w", "h")]
        object_columns.insert(1, np.maximum(labels, 0)[object_order])
        relation_columns = [relations[name][relation_order] for name in ("id", "subject", "object", "position")]
        relation_columns.insert(3, predicate[relation_order])
        del objects, relations, labels, predicate

        for index, (image_id, image_position, file_name, width, height) in enumerate(self.image_records):
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
            rows = slice(object_starts[index], object_starts[index + 1])
            for key, label, position, x, y, w, h in zip(*(column[rows].tolist() for column in object_columns)):
                image.objects.append(
                    SourceObject(
                        key,
                        label,
                        (x, y, w, h),
                        f"annotation id {key}",
                        RecordRef(path, "annotations", position),
                        self.object_drops.get(position),
                    )
                )
            rows = slice(relation_starts[index], relation_starts[index + 1])
            for relation_id, subject, obj, predicate_label, position in zip(
                *(column[rows].tolist() for column in relation_columns)
            ):
                record = self._relation_record(relation_id, position)
                relation_ref = RecordRef(path, "rel_annotations", position)
                image.relations.append(SourceRelation(subject, obj, predicate_label, record, relation_ref))
            yield image


def _group(owner: np.ndarray, num_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the kept records (owner >= 0) ordered by image, file order within an image, and each image's start."""
    kept = np.flatnonzero(owner >= 0)
    order = kept[np.argsort(owner[kept], kind="stable")]
    starts = np.zeros(num_images + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner[kept], minlength=num_images), out=starts[1:])
    return order, starts


def _read_file(path: Path, report: ImportReport) -> _FileContents:
    """One streaming pass over a file (`streaming.iter_fields`); records that cannot be read are reported."""
    contents = _FileContents(path)
    seen = dict.fromkeys(REQUIRED_FIELDS, 0)
    add = {
        "images": contents.add_image,
        "annotations": contents.add_annotation,
        "rel_annotations": contents.add_relation,
    }
    for field, position, item in iter_fields(path, REQUIRED_FIELDS):
        if position < 0:  # the field is there but no list
            raise _missing(path, field)
        seen[field] += 1
        if field in add:
            add[field](position, item, report)
        else:
            contents.names[field].append(item)
    for field, count in seen.items():
        if not count:
            raise _missing(path, field)
    return contents
