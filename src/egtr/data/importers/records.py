"""What every importer produces, before the shared writer turns it into the native layout.

An importer only translates its format: boxes into pixel xywh of the displayed image, class and predicate names
into 0-based indices of its vocabulary, and relation ends into the source's own object references (annotation id,
region id, objectId or box position). Everything that is the same for every format (zero-size boxes, relations to
missing or dropped objects, duplicate triplets, images without relations, the split, image files) is done once,
in `egtr.data.importers.writer`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from PIL import Image

# EXIF orientations that swap width and height (5-8: transposed / rotated by 90 or 270 degrees).
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112


@dataclass(slots=True)
class SourceObject:
    """One box: `key` is how the source's relations refer to it; `box` is [x, y, w, h] in displayed pixels."""

    key: Hashable
    label: int
    box: tuple[float, float, float, float]
    record: str  # e.g. "annotation id 10": where the report points for this object
    raw: Any = None  # the source record, copied into the report if the object is dropped
    # (reason, field, detail) set by the importer (a crowd box, a rare class): dropped with its relations.
    drop: tuple[str, str, str] | None = None


@dataclass(slots=True)
class SourceRelation:
    """One relation `subject -predicate-> object`, its ends as the source refers to objects."""

    subject: Hashable
    object: Hashable
    predicate: int
    record: str
    raw: Any = None


@dataclass(slots=True)
class SourceImage:
    """One image with its objects and relations, as read from the source file."""

    source_file: Path  # the annotation file it comes from
    record: str  # e.g. "task 12" / "image id 107902"
    source_id: str  # the source's image id, written as `source_id` next to the native id
    image_path: Path | None  # the image file to link or copy, found by the importer (None: not found)
    file_name: str  # name under OUT/images/ (may hold sub-folders)
    width: int | None  # displayed size; None: read from the image file
    height: int | None
    objects: list[SourceObject] = field(default_factory=list)
    relations: list[SourceRelation] = field(default_factory=list)
    split: str | None = None  # the source's split, None when it has none
    native_id: int | None = None  # keep this integer id (COCO sources); None: numbered by the writer
    raw: Any = None


@dataclass(frozen=True)
class ImportOptions:
    """How to import: where the images are, link or copy, the split, vocabulary limits.

    Attributes:
        images: folder the source's image names are resolved against (None: the importer's default, usually the
            folder of the annotation file).
        link: symlink the images instead of copying them (the source files are never moved or renamed).
        val_fraction, test_fraction: share of the images drawn for a split the source does not have.
        seed: seed of that draw (by image: an image's split depends only on the seed and its source id).
        keep_images_without_relations: keep images whose relations were all dropped or that had none.
        min_count: GQA: keep class and predicate names seen at least this often (others are dropped, reported).
        max_classes, max_predicates: GQA: keep only the most frequent names (e.g. 200 / 100 for GQA-200).
        overwrite: replace an existing output folder.
    """

    images: Path | None = None
    link: bool = False
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    keep_images_without_relations: bool = False
    min_count: int = 1
    max_classes: int | None = None
    max_predicates: int | None = None
    overwrite: bool = False

    def validate(self) -> ImportOptions:
        for name in ("val_fraction", "test_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be < 1 (the training split needs images)")
        if self.min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {self.min_count}")
        return self


@dataclass
class SourceDataset:
    """What an importer reads from its source: names, the splits the source has, and its images.

    `images(report)` yields the images one at a time; records that cannot be read at all are reported to `report`
    by the importer (with `report.drop`) and not yielded. A one-pass importer (coco-relations) learns the names with
    the records: it fills `class_names` and `predicate_names` in while `images` runs, before its first image.
    """

    class_names: list[str]
    predicate_names: list[str]
    given_splits: set[str]
    images: Callable[[Any], Iterator[SourceImage]]


_NUMBER_TYPES = (int, float)


def is_int(value: Any) -> TypeGuard[int]:
    return type(value) is int  # not bool (a subclass of int): `True` is no id


def is_number(value: Any) -> TypeGuard[int | float]:
    return type(value) in _NUMBER_TYPES


def as_box(value: Any) -> tuple[float, float, float, float] | None:
    """Four numbers as a float tuple, or None when `value` is not a list of four numbers."""
    # Written for speed: this runs once per object (1.2M times for VG150).
    if type(value) is list and len(value) == 4:
        x, y, w, h = value
        if (
            type(x) in _NUMBER_TYPES
            and type(y) in _NUMBER_TYPES
            and type(w) in _NUMBER_TYPES
            and type(h) in _NUMBER_TYPES
        ):
            return float(x), float(y), float(w), float(h)
    return None


def displayed_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image as shown after its EXIF orientation (only the header is read)."""
    with Image.open(path) as image:
        width, height = image.size
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    return (height, width) if orientation in _TRANSPOSING_ORIENTATIONS else (width, height)


class ImageIndex:
    """Image files under a folder by relative path and by bare name, for sources that store other paths.

    Label Studio stores `/data/upload/<project>/<uuid8>-<name>`, PSG `train2017/<name>`, GQA only the id: each
    importer asks for its candidates in order and takes the first file that exists.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._prefix = os.path.join(str(folder), "")
        self._by_name: dict[str, list[Path]] | None = None

    def find(self, *candidates: str) -> Path | None:
        for candidate in candidates:
            if candidate and os.path.isfile(self._prefix + candidate):  # os.path: this runs once per image
                return Path(self._prefix + candidate)
        if self._by_name is None:  # built once, only when a direct look-up fails
            self._by_name = {}
            for path in sorted(self.folder.rglob("*")):
                if path.is_file():
                    self._by_name.setdefault(path.name, []).append(path)
        for candidate in candidates:
            matches = self._by_name.get(Path(candidate).name, []) if candidate else []
            if len(matches) == 1:
                return matches[0]
        return None
