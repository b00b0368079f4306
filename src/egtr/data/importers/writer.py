"""The native (RelTR / Visual Genome) layout writer shared by every importer.

For each `SourceImage` it, in this order and reporting each drop with its file, record and field:

1. drops the image if its file is missing or unreadable, or if its file name or id was already imported;
2. drops zero-size boxes (w or h <= 0, or not finite) and maps the source's object references to positions in the
   kept list, so that dropped boxes never shift relation ends (RelTR's loader does not remap them);
3. drops relations to objects that do not exist in the image, or whose box was dropped, and exact duplicate
   triplets (several predicates for one pair are kept: they are different relations);
4. drops images left without relations, unless `keep_images_without_relations`;
5. puts the image in its split: the source's, else one drawn by image from (seed, source id) with the fractions
   (a split the source lacks is drawn from its images without a split, or from its train split);
6. links (`--link`) or copies its file to `images/` under the same relative name.

Everything is written into a hidden folder next to the output, which is renamed into place at the end: an
interrupted import leaves no half dataset.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NamedTuple

from PIL import UnidentifiedImageError

import egtr.data.importers.report as reasons
from egtr.data.config import SPLITS
from egtr.data.importers.records import ImportOptions, SourceImage, displayed_size
from egtr.data.importers.report import PROBLEMS_NAME, REPORT_NAME, ImportReport
from egtr.errors import DataError
from egtr.fileio import current_umask, write_json


class _Entry(NamedTuple):
    """One imported image: its split draw, where its JSON fragments are in the split's part files, its counts."""

    draw: float
    spans: tuple[tuple[int, int], ...]  # (offset, length) in each part file: image, annotations, relations
    num_objects: int
    num_relations: int


class _SplitParts:
    """The JSON fragments of one split's images, written to part files as they come (memory stays flat).

    Fragments are joined only in `finish`, once the split of every image is final (an image may still move between
    splits there): the entries keep where each fragment is, not its text.
    """

    KINDS = ("images", "annotations", "relations")

    def __init__(self, folder: Path, split: str) -> None:
        self.paths = [folder / f".{split}.{kind}.part" for kind in self.KINDS]
        self._handles = [open(path, "w+b") for path in self.paths]  # noqa: SIM115 (closed in close())
        self.entries: list[_Entry] = []

    def add(self, draw: float, fragments: tuple[str, str, str], num_objects: int, num_relations: int) -> None:
        spans = []
        for handle, fragment in zip(self._handles, fragments, strict=True):
            data = fragment.encode("utf-8")
            spans.append((handle.tell(), len(data)))
            handle.write(data)
        self.entries.append(_Entry(draw, tuple(spans), num_objects, num_relations))

    def write_joined(self, kind: int, entries: list[_Entry], parts: dict[int, _SplitParts], out: IO[bytes]) -> None:
        """Write fragment `kind` of `entries` (entry i read from `parts[i]`'s files) comma-separated to `out`."""
        first = True
        for index, entry in enumerate(entries):
            offset, length = entry.spans[kind]
            if not length:
                continue
            handle = parts.get(index, self)._handles[kind]
            handle.seek(offset)
            if not first:
                out.write(b",")
            out.write(handle.read(length))
            first = False

    def close(self) -> None:
        for handle in self._handles:
            handle.close()
        for path in self.paths:
            path.unlink(missing_ok=True)


class _Objects(NamedTuple):
    """The kept objects of one image: boxes (x, y, w, h), 0-based labels, and the source's keys for them."""

    boxes: list[list[float]]
    labels: list[int]
    keys: list[Any]


def _json_id(key: Any) -> str:
    """A source key as a JSON string (an integer id without json.dumps: this runs once per object)."""
    return f'"{key}"' if type(key) is int else json.dumps(str(key), ensure_ascii=False)


def split_draw(seed: int, source_id: str) -> float:
    """A number in [0, 1) that depends only on (seed, source id): an image keeps its split when others change."""
    digest = hashlib.blake2b(f"{seed}:{source_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


class NativeWriter:
    """Write imported images into `out` in the native layout; use as a context manager, then call `finish`.

    Args:
        out: the dataset folder to create.
        options: the import options (split fractions, link or copy, ...).
        given_splits: the splits the source itself has (the others are drawn).
        description: what is imported (format and source), stored in the report.
    """

    def __init__(self, out: Path, options: ImportOptions, given_splits: Iterable[str], description: dict[str, Any]):
        self.out = out
        self.options = options.validate()
        self.given_splits = set(given_splits)
        self.description = description
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not options.overwrite:
            raise DataError(f"{out}: already exists and is not empty (pass --overwrite to replace it)")
        out.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.import-"))
        # mkdtemp makes it 0700 and the rename at the end keeps the mode: give it a plain mkdir's, so that other
        # users and containers can read the dataset as the umask allows.
        os.chmod(self.staging, 0o777 & ~current_umask())
        (self.staging / "images").mkdir()
        self._images = str(self.staging / "images")
        self._folders = {self._images}
        self.report = ImportReport(self.staging / PROBLEMS_NAME)
        # Per split, the images' JSON fragments (final text; only the split of an image may still change).
        self._parts = {split: _SplitParts(self.staging, split) for split in SPLITS}
        self._file_names: set[str] = set()
        self._image_ids: set[int] = set()
        self._next_image_id = 1
        self._next_annotation_id = 1

    def __enter__(self) -> NativeWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.report.close(quote_records=False)
        for parts in self._parts.values():
            parts.close()
        if self.staging.exists():  # not renamed into place: an error happened (or finish was never called)
            shutil.rmtree(self.staging, ignore_errors=True)

    # ------------------------------------------------------------------ one image
    def add(self, image: SourceImage) -> None:
        """Clean one image and queue it for its split (see the module docstring); drops are reported."""
        report = self.report
        where = (image.source_file, image.record)
        if image.image_path is None:
            report.drop(reasons.IMAGE_FILE_NOT_FOUND, *where, "file_name", f"looked for {image.file_name!r}", image.raw)
            return
        if image.file_name in self._file_names:
            report.drop(reasons.DUPLICATE_IMAGE, *where, "file_name", f"{image.file_name!r} imported already")
            return
        if image.native_id is not None and image.native_id in self._image_ids:
            report.drop(reasons.DUPLICATE_IMAGE, *where, "id", f"image id {image.native_id} imported already")
            return
        width, height = image.width, image.height
        if width is None or height is None:
            try:
                width, height = displayed_size(image.image_path)
            except (OSError, UnidentifiedImageError) as error:
                report.drop(reasons.UNREADABLE_IMAGE, *where, "file_name", f"{image.image_path}: {error}", image.raw)
                return
        boxes, labels, keys, relations = self._clean(image)
        if not relations and not self.options.keep_images_without_relations:
            detail = f"{len(image.relations)} relations in the source" if image.relations else "none in the source"
            report.drop(reasons.IMAGE_WITHOUT_RELATIONS, *where, "relations", detail, image.raw)
            return
        image_id = image.native_id if image.native_id is not None else self._new_image_id()
        self._image_ids.add(image_id)
        self._file_names.add(image.file_name)
        split, draw = self._split_of(image)
        self._queue(split, draw, image, image_id, width, height, _Objects(boxes, labels, keys), relations)
        self._place_file(image.image_path, image.file_name)

    def _clean(self, image: SourceImage) -> tuple[list[list[float]], list[int], list[Any], list[list[int]]]:
        """(kept boxes, their labels, their source keys, relations between them as [subject, object, predicate])."""
        report = self.report
        positions: dict[Any, int] = {}
        dropped: set[Any] = set()
        boxes: list[list[float]] = []
        labels: list[int] = []
        keys: list[Any] = []
        for obj in image.objects:
            if obj.key in positions or obj.key in dropped:
                report.drop(reasons.BAD_RECORD, image.source_file, obj.record, "id", "object id used twice", obj.raw)
                continue
            if obj.drop is not None:
                reason, field_name, detail = obj.drop
                report.drop(reason, image.source_file, obj.record, field_name, detail, obj.raw)
                dropped.add(obj.key)
                continue
            x, y, w, h = obj.box
            if (
                not (math.isfinite(x) and math.isfinite(y) and math.isfinite(w) and math.isfinite(h))
                or w <= 0
                or h <= 0
            ):
                report.drop(
                    reasons.ZERO_SIZE_BOX,
                    image.source_file,
                    obj.record,
                    "bbox",
                    f"[x, y, w, h] = {list(obj.box)}",
                    obj.raw,
                )
                dropped.add(obj.key)
                continue
            positions[obj.key] = len(boxes)
            boxes.append([x, y, w, h])
            labels.append(obj.label)
            keys.append(obj.key)
        relations: list[list[int]] = []
        seen: set[tuple[int, int, int]] = set()
        for relation in image.relations:
            ends = []
            for end, key in (("subject", relation.subject), ("object", relation.object)):
                if key in positions:
                    ends.append(positions[key])
                    continue
                reason = reasons.RELATION_TO_DROPPED_OBJECT if key in dropped else reasons.RELATION_TO_MISSING_OBJECT
                report.drop(reason, image.source_file, relation.record, end, f"{end} {key!r}", relation.raw)
                break
            if len(ends) < 2:
                continue
            triplet = (ends[0], ends[1], relation.predicate)
            if triplet in seen:
                report.drop(
                    reasons.DUPLICATE_TRIPLET, image.source_file, relation.record, "", "kept the first", relation.raw
                )
                continue
            seen.add(triplet)
            relations.append([ends[0], ends[1], relation.predicate + 1])  # rel.json predicates are 1-based
        return boxes, labels, keys, relations

    def _new_image_id(self) -> int:
        while self._next_image_id in self._image_ids:
            self._next_image_id += 1
        return self._next_image_id

    def _split_of(self, image: SourceImage) -> tuple[str, float]:
        draw = split_draw(self.options.seed, image.source_id)
        if image.split is not None and image.split != "train":
            return image.split, draw
        candidates = [split for split in ("test", "val") if split not in self.given_splits]
        if image.split is None:
            candidates = ["test", "val"]
        threshold = 0.0
        for split in candidates:
            threshold += self.options.test_fraction if split == "test" else self.options.val_fraction
            if draw < threshold:
                return split, draw
        return "train", draw

    def _queue(
        self,
        split: str,
        draw: float,
        image: SourceImage,
        image_id: int,
        width: int,
        height: int,
        objects: _Objects,
        relations: list[list[int]],
    ) -> None:
        # `source_id` is ours: the loaders ignore it, it maps a native image or object back to the source's id (the
        # messages of `egtr data validate` quote it).
        entry = {"id": image_id, "file_name": image.file_name, "width": width, "height": height}
        entry["source_id"] = image.source_id
        first_id = self._next_annotation_id
        self._next_annotation_id += len(objects.boxes)
        # One f-string per annotation and no json.dumps per object: this runs 1.2M times for VG150.
        annotations = ",".join(
            f'{{"id": {first_id + index}, "image_id": {image_id}, "category_id": {label + 1}, '
            f'"bbox": [{x!r}, {y!r}, {w!r}, {h!r}], "area": {w * h!r}, "iscrowd": 0, "source_id": {_json_id(key)}}}'
            for index, ((x, y, w, h), label, key) in enumerate(zip(*objects, strict=True))
        )
        fragments = (json.dumps(entry, ensure_ascii=False), annotations, f'"{image_id}": {json.dumps(relations)}')
        self._parts[split].add(draw, fragments, len(objects.boxes), len(relations))

    def _place_file(self, source: Path, file_name: str) -> None:
        target = os.path.join(self._images, file_name)
        folder = os.path.dirname(target)
        if folder not in self._folders:
            os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)
        if self.options.link:
            os.symlink(os.path.abspath(source), target)  # absolute: the dataset folder may be moved
        else:
            shutil.copyfile(source, target)

    # ------------------------------------------------------------------ the end
    def _final_splits(self) -> dict[str, tuple[list[_Entry], dict[int, _SplitParts]]]:
        """Per split, its entries and, for entries moved from another split, that split's parts (by position).

        With few images a drawn split can stay empty: the train image drawn closest to it is moved there.
        """
        final: dict[str, tuple[list[_Entry], dict[int, _SplitParts]]] = {
            split: (list(self._parts[split].entries), {}) for split in SPLITS
        }
        train, _ = final["train"]
        for split in ("test", "val"):
            entries, moved = final[split]
            if split in self.given_splits or entries or len(train) < 2:
                continue
            position = min(range(len(train)), key=lambda index: train[index].draw)
            entries.append(train.pop(position))
            moved[len(entries) - 1] = self._parts["train"]
            self.report.note(f"split {split} drew no image: moved the train image drawn closest to it")
        return final

    def finish(self, class_names: list[str], predicate_names: list[str]) -> ImportReport:
        """Write the annotation files and the report, and move the dataset into place."""
        final = self._final_splits()
        empty = [split for split in SPLITS if not final[split][0]]
        if empty:
            raise DataError(
                f"{self.description.get('source')}: no image left for split(s) {', '.join(empty)} after the drops "
                f"({self.report.num_dropped} records dropped: {dict(self.report.dropped)}); every split needs images"
            )
        categories = json.dumps(
            [{"id": index + 1, "name": name} for index, name in enumerate(class_names)], ensure_ascii=False
        )
        predicates = json.dumps(["__background__", *predicate_names], ensure_ascii=False)
        images_kind, annotations_kind, relations_kind = range(len(_SplitParts.KINDS))
        with open(self.staging / "rel.json", "wb") as relations_file:
            relations_file.write(f'{{"rel_categories": {predicates}'.encode())
            for split in SPLITS:
                entries, moved = final[split]
                parts = self._parts[split]
                with open(self.staging / f"{split}.json", "wb") as handle:
                    handle.write(b'{"images": [')
                    parts.write_joined(images_kind, entries, moved, handle)
                    handle.write(b'], "annotations": [')
                    parts.write_joined(annotations_kind, entries, moved, handle)
                    handle.write(f'], "categories": {categories}}}'.encode())
                relations_file.write(f', "{split}": {{'.encode())
                parts.write_joined(relations_kind, entries, moved, relations_file)
                relations_file.write(b"}")
                self.report.count(
                    split,
                    len(entries),
                    sum(entry.num_objects for entry in entries),
                    sum(entry.num_relations for entry in entries),
                )
            relations_file.write(b"}")
        for parts in self._parts.values():
            parts.close()
        self.report.close()
        summary = {
            **self.description,
            "num_classes": len(class_names),
            "num_predicates": len(predicate_names),
            **self.report.to_dict(),
        }
        write_json(self.staging / REPORT_NAME, summary, default=str)
        if self.out.exists():  # --overwrite (checked in __init__)
            shutil.rmtree(self.out) if self.out.is_dir() and not self.out.is_symlink() else self.out.unlink()
        os.replace(self.staging, self.out)
        self.report.problems_path = self.out / PROBLEMS_NAME
        return self.report
