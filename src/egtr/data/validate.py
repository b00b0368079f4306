"""`validate_dataset`: check a dataset folder and report every problem with its file, record and field.

Errors are problems the loaders refuse (they raise `DataError`) or that make targets wrong: missing or unreadable
images, malformed JSON or records, class/predicate/relation indices out of range, duplicate ids, an image in two
splits, an image whose size differs from the one in the annotation file. Warnings are problems the loaders handle
in a defined way: boxes that extend outside the image are clipped, empty boxes are dropped together with their
relations, duplicate triplets are merged, self-relations are kept.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from egtr.data.config import SPLITS
from egtr.errors import DataError
from egtr.fileio import read_json
from egtr.images import describe_source, load_image


class _UnreadableJson(ValueError):
    """A JSON file that `read_json` could not read; recorded as a problem, not raised."""


@dataclass(frozen=True)
class Problem:
    """One finding of `validate_dataset`."""

    severity: str  # "error" or "warning"
    file: str
    record: str  # e.g. "image 17", "annotation 3 (image 17)", "" for the whole file
    field: str
    message: str

    def __str__(self) -> str:
        where = (
            f"{self.file}"
            + (f", {self.record}" if self.record else "")
            + (f", field {self.field}" if self.field else "")
        )
        # A file name that is not UTF-8 must not crash the printing of the report (it is itself reported).
        return describe_source(f"{self.severity.upper()}: {where}: {self.message}")


class _Report:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, file: Path | str, record: str, field: str, message: str) -> None:
        self.problems.append(Problem("error", str(file), record, field, message))

    def warning(self, file: Path | str, record: str, field: str, message: str) -> None:
        self.problems.append(Problem("warning", str(file), record, field, message))

    def load_json(self, path: Path) -> Any:
        try:
            return read_json(path, _UnreadableJson)
        except _UnreadableJson as error:  # "<path>: file not found", "<path>: malformed JSON at ...", not UTF-8
            self.error(path, "", "", str(error).removeprefix(f"{path}: "))
        return None

    def check_image(self, path: Path, record: str, expected_size: tuple[Any, Any] | None, decode: bool) -> None:
        if not _is_utf8_name(path.name):
            self.error(
                path,
                record,
                "file_name",
                f"the file name '{describe_source(path.name)}' is not valid UTF-8 (it cannot be printed, drawn or "
                "written to UTF-8 JSON by most tools); rename the file and its record",
            )
        if not path.is_file():
            self.error(path, record, "file_name", "image file not found")
            return
        if not decode:
            return
        try:
            image = load_image(path)
        except DataError as error:
            self.error(path, record, "file_name", str(error).removeprefix(f"{path}: "))
            return
        if expected_size is not None and expected_size != (image.width, image.height):
            self.error(
                path,
                record,
                "width/height",
                f"annotation says {expected_size[0]}x{expected_size[1]}, image is {image.width}x{image.height}",
            )


def _is_utf8_name(name: str) -> bool:
    """False for a name whose bytes on disk are not UTF-8 (Python decodes them as lone surrogates)."""
    try:
        os.fsencode(name).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_index(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _source_ids(image: dict[str, Any], annotation: dict[str, Any]) -> str:
    """The source's ids of an imported object (`egtr data import` keeps them as `source_id`), to add to a record's
    name so that the problem can be found in the annotation tool (e.g. "; source: image '7', object 'a1'");
    "" for other datasets."""
    if "source_id" not in image and "source_id" not in annotation:
        return ""
    return f"; source: image {image.get('source_id')!r}, object {annotation.get('source_id')!r}"


def _check_box_xyxy(
    report: _Report,
    file: Path,
    record: str,
    box: tuple[float, float, float, float],
    size: tuple[Any, Any] | None,
    num_relations: int,
    written: list[float],
) -> None:
    """Check one box given as corners `box`; messages quote `written`, the box as the file writes it."""
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        report.warning(
            file, record, "bbox", f"empty box {written}: the loader drops it and its {num_relations} relation(s)"
        )
    elif size is not None and _is_number(size[0]) and _is_number(size[1]):
        if min(x2, size[0]) <= max(x1, 0) or min(y2, size[1]) <= max(y1, 0):
            report.warning(
                file,
                record,
                "bbox",
                f"box {written} lies outside the {size[0]}x{size[1]} image: "
                f"the loader drops it and its {num_relations} relation(s)",
            )
        elif x1 < 0 or y1 < 0 or x2 > size[0] or y2 > size[1]:
            report.warning(
                file, record, "bbox", f"box {written} extends outside the {size[0]}x{size[1]} image (clipped)"
            )


def _check_relations(
    report: _Report,
    file: Path,
    record: str,
    relations: Any,
    num_objects: int,
    first_predicate: int,
    num_predicates: int,
) -> Counter:
    """Check a list of [s, o, p]; returns how many relations use each object index."""
    uses: Counter = Counter()
    if not isinstance(relations, list):
        report.error(file, record, "rel", "must be a list of [subject, object, predicate]")
        return uses
    seen = set()
    for position, triplet in enumerate(relations):
        where = f"{record}, relation {position}"
        if not isinstance(triplet, list) or len(triplet) != 3 or not all(_is_index(v) for v in triplet):
            report.error(file, where, "rel", f"{triplet!r} is not [subject, object, predicate] integers")
            continue
        subject, obj, predicate = triplet
        for name, index in (("subject", subject), ("object", obj)):
            if not 0 <= index < num_objects:
                report.error(file, where, "rel", f"{name} index {index} outside 0..{num_objects - 1}")
        if not first_predicate <= predicate < first_predicate + num_predicates:
            report.error(
                file,
                where,
                "rel",
                f"predicate {predicate} outside {first_predicate}..{first_predicate + num_predicates - 1}",
            )
        if subject == obj:
            report.warning(file, where, "rel", f"self-relation of object {subject}")
        if tuple(triplet) in seen:
            report.warning(file, where, "rel", f"duplicate triplet {triplet} (merged by the loader)")
        seen.add(tuple(triplet))
        uses[subject] += 1
        uses[obj] += 1
    return uses


@dataclass
class _VgAcrossSplits:
    """What the Visual Genome checks carry from one split to the next."""

    split_of_image: dict[Any, str] = field(default_factory=dict)
    split_of_file: dict[Any, str] = field(default_factory=dict)
    categories: Any = None  # the first split's categories; the other splits must have the same


def _validate_vg(root: Path, report: _Report, splits: Iterable[str], decode: bool) -> None:
    rel_file = root / "rel.json"
    rel = report.load_json(rel_file)
    num_predicates = _vg_num_predicates(report, rel_file, rel)
    across = _VgAcrossSplits()
    for split in splits:
        _validate_vg_split(root, report, split, rel_file, rel, num_predicates, across, decode)


def _vg_num_predicates(report: _Report, rel_file: Path, rel: Any) -> int:
    """The number of predicates that rel.json names (0 when it is unreadable or names none)."""
    if rel is None:
        return 0
    names = rel.get("rel_categories") if isinstance(rel, dict) else None
    if not isinstance(names, list) or len(names) < 2:
        report.error(rel_file, "", "rel_categories", "must list '__background__' followed by the predicate names")
        return 0
    return len(names) - 1


def _validate_vg_split(
    root: Path,
    report: _Report,
    split: str,
    rel_file: Path,
    rel: Any,
    num_predicates: int,
    across: _VgAcrossSplits,
    decode: bool,
) -> None:
    split_file = root / f"{split}.json"
    coco = report.load_json(split_file)
    if coco is None:
        return
    if not isinstance(coco, dict) or not all(
        isinstance(coco.get(k), list) for k in ("images", "annotations", "categories")
    ):
        report.error(split_file, "", "", "needs the lists 'images', 'annotations' and 'categories'")
        return
    num_classes = _check_vg_categories(report, split_file, coco["categories"], across)
    images = _vg_images(report, split_file, split, coco["images"], across)
    objects = _vg_objects(report, split_file, coco["annotations"], images)
    split_relations = _vg_split_relations(report, rel_file, rel, split, images)
    for image_id, image in images.items():
        size = (image.get("width"), image.get("height"))
        relations = (split_relations or {}).get(str(image_id), [])
        uses = (
            _check_relations(
                report,
                rel_file,
                f"{split}[{str(image_id)!r}]",
                relations,
                len(objects[image_id]),
                1,
                num_predicates,
            )
            if split_relations is not None
            else Counter()
        )
        _check_vg_objects(report, split_file, image_id, image, objects[image_id], num_classes, uses)
        expected = size if all(_is_index(v) for v in size) else None
        report.check_image(
            root / "images" / image["file_name"], f"{split_file.name}, image {image_id}", expected, decode
        )


def _check_vg_categories(report: _Report, split_file: Path, categories: list[Any], across: _VgAcrossSplits) -> int:
    """Check a split's categories (ids 1..n, the same in every split); returns the number of classes."""
    category_ids = [c.get("id") if isinstance(c, dict) else None for c in categories]
    for position, count in Counter(category_ids).items():
        if count > 1:
            report.error(split_file, f"category id {position}", "id", "duplicate category id")
    if sorted(i for i in category_ids if _is_index(i)) != list(range(1, len(category_ids) + 1)):
        report.error(split_file, "", "categories", f"category ids must be 1..{len(category_ids)}")
    if across.categories is None:
        across.categories = categories
    elif categories != across.categories:
        report.error(split_file, "", "categories", "differ from the categories of the first split")
    return len(category_ids)


def _vg_images(
    report: _Report, split_file: Path, split: str, records: list[Any], across: _VgAcrossSplits
) -> dict[Any, dict[str, Any]]:
    """The split's well-formed image records by id; reports malformed ones, duplicates and images in two splits."""
    if not records:
        report.error(split_file, "", "images", "the images list is empty")
    images: dict[Any, dict[str, Any]] = {}
    for position, image in enumerate(records):
        record = f"images[{position}]"
        if not isinstance(image, dict) or not _is_index(image.get("id")) or not isinstance(image.get("file_name"), str):
            report.error(split_file, record, "id/file_name", "image record needs an integer id and a file_name")
            continue
        record = f"image {image['id']}"
        if image["id"] in images:
            report.error(split_file, record, "id", "duplicate image id")
            continue
        images[image["id"]] = image
        for key, other in ((image["id"], across.split_of_image), (image["file_name"], across.split_of_file)):
            if key in other and other[key] != split:
                report.error(
                    split_file,
                    record,
                    "id" if other is across.split_of_image else "file_name",
                    f"{key!r} is also in split {other[key]!r}",
                )
            other.setdefault(key, split)
    return images


def _vg_objects(
    report: _Report, split_file: Path, annotations: list[Any], images: dict[Any, dict[str, Any]]
) -> dict[Any, list[tuple[int, dict[str, Any]]]]:
    """Each image's annotations with their positions in the file; reports malformed ones, duplicate ids and
    annotations of unknown images."""
    objects: dict[Any, list[tuple[int, dict[str, Any]]]] = {image_id: [] for image_id in images}
    first_with_id: dict[Any, int] = {}  # annotation id -> position of its first occurrence
    for position, annotation in enumerate(annotations):
        record = f"annotations[{position}]"
        if not isinstance(annotation, dict):
            report.error(split_file, record, "", "annotation is not an object")
            continue
        first = first_with_id.setdefault(annotation.get("id"), position)
        if first != position:  # both occurrences named: the second alone left the first to be searched for
            message = f"duplicate annotation id {annotation.get('id')} (also annotations[{first}])"
            report.error(split_file, record, "id", message)
        if annotation.get("image_id") not in images:
            report.error(split_file, record, "image_id", f"unknown image id {annotation.get('image_id')!r}")
            continue
        objects[annotation["image_id"]].append((position, annotation))
    return objects


def _vg_split_relations(
    report: _Report, rel_file: Path, rel: Any, split: str, images: dict[Any, dict[str, Any]]
) -> dict[str, Any] | None:
    """The split's relations by image id string from rel.json; None when rel.json is unreadable or lacks the split."""
    split_relations = rel.get(split) if isinstance(rel, dict) else None
    if rel is not None and not isinstance(split_relations, dict):
        report.error(rel_file, "", split, "missing the relations of this split")
        split_relations = None
    for key in split_relations or {}:
        if not key.lstrip("-").isdigit() or int(key) not in images:
            report.error(rel_file, f"{split}[{key!r}]", split, "relations for an image id that is not in the split")
    return split_relations


def _check_vg_objects(
    report: _Report,
    split_file: Path,
    image_id: Any,
    image: dict[str, Any],
    objects: list[tuple[int, dict[str, Any]]],
    num_classes: int,
    uses: Counter,
) -> None:
    """Check one image's objects: category in 1..num_classes, bbox [x, y, width, height] inside the image."""
    size = (image.get("width"), image.get("height"))
    for index, (position, annotation) in enumerate(objects):
        record = f"annotations[{position}] (image {image_id}, object {index}{_source_ids(image, annotation)})"
        category = annotation.get("category_id")
        if not _is_index(category) or not 1 <= category <= num_classes:
            report.error(split_file, record, "category_id", f"{category!r} outside 1..{num_classes}")
        bbox = annotation.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            report.error(split_file, record, "bbox", f"{bbox!r} is not [x, y, width, height] numbers")
            continue
        x, y, width, height = bbox
        _check_box_xyxy(report, split_file, record, (x, y, x + width, y + height), size, uses[index], bbox)


def _validate_oi(root: Path, report: _Report, splits: Iterable[str], decode: bool) -> None:
    categories_file = root / "annotations" / "categories_dict.json"
    categories = report.load_json(categories_file)
    num_classes = num_predicates = 0
    if categories is not None:
        if not isinstance(categories, dict) or not all(isinstance(categories.get(k), list) for k in ("obj", "rel")):
            report.error(categories_file, "", "obj/rel", "needs the name lists 'obj' and 'rel'")
        else:
            num_classes, num_predicates = len(categories["obj"]), len(categories["rel"])
    split_of_file: dict[str, str] = {}
    for split in splits:
        path = root / "annotations" / f"vrd-{split}-anno.json"
        records = report.load_json(path)
        if records is None:
            continue
        if not isinstance(records, list) or not records:
            report.error(path, "", "", "must be a non-empty list of image records")
            continue
        seen: set[str] = set()
        for position, item in enumerate(records):
            record = f"record {position}"
            if not isinstance(item, dict) or not all(k in item for k in ("img_fn", "bbox", "det_labels", "rel")):
                report.error(path, record, "", "needs the fields img_fn, bbox, det_labels and rel")
                continue
            name = str(item["img_fn"])
            record = f"record {position} ({name})"
            if name in seen:
                report.error(path, record, "img_fn", "duplicate image")
            seen.add(name)
            if name in split_of_file and split_of_file[name] != split:
                report.error(path, record, "img_fn", f"{name!r} is also in split {split_of_file[name]!r}")
            split_of_file.setdefault(name, split)
            written_size = item.get("img_size")
            size = written_size if isinstance(written_size, list) and len(written_size) == 2 else None
            expected = tuple(size) if size is not None and all(_is_index(v) for v in size) else None
            report.check_image(root / "images" / f"{name}.jpg", f"{path.name}, {record}", expected, decode)
            boxes, labels = item["bbox"], item["det_labels"]
            if not isinstance(boxes, list) or not isinstance(labels, list) or len(boxes) != len(labels):
                report.error(path, record, "bbox/det_labels", "must be lists of the same length")
                continue
            uses = _check_relations(report, path, record, item["rel"], len(boxes), 0, num_predicates)
            for index, (box, label) in enumerate(zip(boxes, labels)):
                where = f"{record}, object {index}"
                if not _is_index(label) or not 0 <= label < num_classes:
                    report.error(path, where, "det_labels", f"{label!r} outside 0..{num_classes - 1}")
                if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box):
                    report.error(path, where, "bbox", f"{box!r} is not [x1, y1, x2, y2] numbers")
                    continue
                # The loader's +1 convention makes [x1, x2] inclusive, so x2 == x1 is a one-pixel box.
                image_size = (size[0], size[1]) if size is not None else None
                _check_box_xyxy(
                    report, path, where, (box[0], box[1], box[2] + 1, box[3] + 1), image_size, uses[index], box
                )


def split_files(root: Path, kind: str, split: str) -> list[Path]:
    """The annotation file(s) of one split in the layout of `kind` (whether a split exists is whether they do)."""
    if kind == "oi":
        return [root / "annotations" / f"vrd-{split}-anno.json"]
    return [root / f"{split}.json"]


def validate_dataset(
    root: str | Path, kind: str = "vg", splits: Iterable[str] = SPLITS, decode_images: bool = True
) -> list[Problem]:
    """Check a dataset folder in the VG (RelTR) or OI (SGTR) layout.

    Args:
        root: dataset folder.
        kind: "vg" or "oi".
        splits: splits to check (default all three).
        decode_images: decode every image completely (finds truncated files; slow on big datasets); False only
            checks that the files exist.

    Returns:
        Every problem found, errors and warnings, in file order.
    """
    root = Path(root)
    report = _Report()
    if not root.is_dir():
        report.error(root, "", "", "dataset folder not found")
        return report.problems
    if not (root / "images").is_dir():
        report.error(root / "images", "", "", "images folder not found")
    if kind == "vg":
        _validate_vg(root, report, splits, decode_images)
    elif kind == "oi":
        _validate_oi(root, report, splits, decode_images)
    else:
        raise ValueError(f"kind must be 'vg' or 'oi', got {kind!r}")
    return report.problems
