"""`label-studio`: Label Studio's full JSON export of an image project with boxes and relations.

Read as label-studio-converter reads it (see ../shared/docs/annotation-formats.md and docs/own-data.md for the
labelling config): a list of tasks `{id, data: {image}, annotations: [{result, was_cancelled, created_at}]}`. The
conventions of the format (tag names, percent boxes, directions, image references) are in
`egtr.data.label_studio_tasks`, which also writes the tasks that `egtr predict --output-format label-studio` proposes.

* Rectangles (`rectanglelabels`, or a `rectangle` region labelled by a `labels` item with the same id) are in
  percent (0-100) of the image as the browser shows it, i.e. after its EXIF orientation; they are converted with
  the displayed size of the image file. A rotated rectangle becomes its enclosing box (noted in the report).
* Relations (`type: relation`) refer to region ids: `direction` "right" (the default) means from -> to, "left"
  to -> from, "bi" both ways (two relations, noted; a warning names the relation when its predicate reads in one
  direction, such as "left of"); each of its `labels` is one predicate.
* Of several annotations of a task, the latest one not cancelled is taken; each one set aside (older, or
  cancelled) is named in the problems file with the task id. Predictions are ignored.
* Uploaded files are renamed `upload/<project>/<uuid8>-<name>` by Label Studio: the image is looked up in
  `--images` (default: the export's folder) by that path, its name, then the name without the uuid prefix.
* The export has no list of label names: classes and predicates are the labels used, in alphabetical order.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import UnidentifiedImageError

import egtr.data.importers.report as reasons
from egtr.data.importers.records import (
    ImageIndex,
    ImportOptions,
    SourceDataset,
    SourceImage,
    SourceObject,
    SourceRelation,
    as_box,
    displayed_size,
    is_number,
)
from egtr.data.importers.report import ImportReport
from egtr.data.importers.streaming import iter_list, top_level_kind
from egtr.data.label_studio_tasks import DIRECTIONS, IMAGE_TAG, image_name_candidates, pixel_box, relation_ends
from egtr.errors import DataError

_LABEL_KEYS = ("rectanglelabels", "labels")
# Predicates that read the same both ways: a two-way ("bi") relation with one of them is what the annotator meant.
# Any other predicate ("left of", "holding", "on") made two-way says both "a left of b" and "b left of a": warned.
SYMMETRIC_PREDICATES = frozenset(
    {"near", "next to", "beside", "by", "close to", "adjacent to", "touching", "with", "and", "overlapping"}
)
SEVERAL_ANNOTATIONS = "task with several annotations: took the latest not cancelled"
BIDIRECTIONAL = "bidirectional relation: imported in both directions"
DIRECTIONAL_BIDIRECTIONAL = "two-way relation with a one-way predicate: imported in both directions"


def _annotations(task: dict[str, Any]) -> tuple[dict[str, Any] | None, list[tuple[int, dict[str, Any], str]]]:
    """(the latest annotation not cancelled, or None; the others as (position, annotation, why set aside))."""
    annotations = task.get("annotations")
    if not isinstance(annotations, list):
        return None, []
    candidates = [(a.get("created_at") or "", i, a) for i, a in enumerate(annotations) if isinstance(a, dict)]
    usable = [item for item in candidates if not item[2].get("was_cancelled")]
    chosen = max(usable, key=lambda item: item[:2]) if usable else None
    set_aside = []
    for created, position, annotation in candidates:
        if chosen is None or annotation is chosen[2]:
            continue
        newer = _annotation_name(chosen[1], chosen[2])
        why = "cancelled" if annotation.get("was_cancelled") else f"older than {newer} (created_at {created!r})"
        set_aside.append((position, annotation, why))
    return (chosen[2] if chosen else None), set_aside


def _annotation_name(position: int, annotation: dict[str, Any]) -> str:
    return f"annotation {annotation['id']}" if "id" in annotation else f"annotations[{position}]"


def _regions(result: list[Any]) -> dict[str, dict[str, Any]]:
    """Region id -> merged value (geometry and label) over the result items that share the id."""
    regions: dict[str, dict[str, Any]] = {}
    for item in result:
        if isinstance(item, dict) and item.get("type") != "relation" and isinstance(item.get("value"), dict):
            region = regions.setdefault(str(item.get("id")), {"item": item})
            for key, value in item["value"].items():
                region.setdefault(key, value)
    return regions


def _enclosing_box(x: float, y: float, w: float, h: float, degrees: float) -> tuple[float, float, float, float]:
    """The axis-aligned box around a rectangle rotated by `degrees` (clockwise on screen) about its top-left."""
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    xs = [x + dx * cos - dy * sin for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
    ys = [y + dx * sin + dy * cos for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
    return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)


def _label_of(region: dict[str, Any]) -> str | None:
    for key in _LABEL_KEYS:
        labels = region.get(key)
        if isinstance(labels, list) and labels and all(isinstance(label, str) for label in labels):
            return labels[0]
    return None


def read_label_studio(source: Path, options: ImportOptions) -> SourceDataset:
    """Read a Label Studio JSON export (a malformed file, or another export type, raises DataError)."""
    if source.is_dir():
        raise DataError(f"{source}: a folder; pass the JSON export file of Label Studio (Export -> JSON)")
    if top_level_kind(source) != "list":
        raise DataError(f"{source}: expected the JSON export of Label Studio (a list of tasks)")
    # Two streaming passes: the names (a malformed file raises DataError here), then the tasks one at a time.
    class_names: set[str] = set()
    predicate_names: set[str] = set()
    tasks = 0
    json_min = True  # every task without `annotations` and `data`: the JSON-MIN export
    for task in iter_list(source):
        tasks += 1
        json_min = json_min and isinstance(task, dict) and "annotations" not in task and "data" not in task
        annotation = _annotations(task)[0] if isinstance(task, dict) else None
        for item in (annotation or {}).get("result") or []:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "relation":
                predicate_names.update(label for label in item.get("labels") or [] if isinstance(label, str))
            elif isinstance(item.get("value"), dict) and (label := _label_of(item["value"])) is not None:
                class_names.add(label)
    if tasks and json_min:
        raise DataError(f"{source}: this looks like the JSON-MIN export, which has no relations: export 'JSON' instead")
    if not class_names or not predicate_names:
        raise DataError(
            f"{source}: no labelled rectangles or no labelled relations in any annotation (the labelling config needs "
            "<RectangleLabels> and <Relations>; see docs/own-data.md)"
        )
    classes = {name: index for index, name in enumerate(sorted(class_names))}
    predicates = {name: index for index, name in enumerate(sorted(predicate_names))}

    def images(report: ImportReport) -> Iterator[SourceImage]:
        index = ImageIndex(options.images or source.parent)
        for position, task in enumerate(iter_list(source)):
            image = _read_task(source, position, task, index, classes, predicates, report)
            if image is not None:
                yield image

    return SourceDataset(sorted(class_names), sorted(predicate_names), set(), images)


def _read_task(
    source: Path,
    position: int,
    task: Any,
    index: ImageIndex,
    classes: dict[str, int],
    predicates: dict[str, int],
    report: ImportReport,
) -> SourceImage | None:
    record = f"task {task.get('id')}" if isinstance(task, dict) and "id" in task else f"tasks[{position}]"
    data = task.get("data") if isinstance(task, dict) else None
    reference = data.get(IMAGE_TAG) if isinstance(data, dict) else None
    if not isinstance(reference, str):
        report.drop(reasons.BAD_RECORD, source, record, f"data.{IMAGE_TAG}", "no image reference", task)
        return None
    annotation, set_aside = _annotations(task)
    for position, other, why in set_aside:
        where = f"{record}, {_annotation_name(position, other)}"
        report.note(SEVERAL_ANNOTATIONS, source, where, f"not used: {why}", other)
    if annotation is None or not isinstance(annotation.get("result"), list):
        report.drop(
            reasons.IMAGE_WITHOUT_RELATIONS, source, record, "annotations", "no annotation (not cancelled)", task
        )
        return None
    result = annotation["result"]
    candidates = image_name_candidates(reference)
    image_path = index.find(*candidates)
    width = height = None
    if image_path is not None:
        with contextlib.suppress(OSError, UnidentifiedImageError):  # the writer reports the unreadable file
            width, height = displayed_size(image_path)
    image = SourceImage(
        source_file=source,
        record=record,
        source_id=str(task.get("id", position)),
        image_path=image_path,
        file_name=image_path.relative_to(index.folder).as_posix() if image_path is not None else candidates[-1],
        width=width,
        height=height,
        raw=task,
    )
    if width is None or height is None:
        return image  # the writer drops it (missing or unreadable file)
    for region_id, region in _regions(result).items():
        item = region["item"]
        region_record = f"{record}, region {region_id}"
        if item.get("image_rotation"):
            detail = "the image was rotated in Label Studio; rotate the file instead"
            report.drop(reasons.BAD_RECORD, source, region_record, "image_rotation", detail, item)
            continue
        geometry = as_box([region.get(key) for key in ("x", "y", "width", "height")])
        label = _label_of(region)
        if geometry is None:
            continue  # not a box (e.g. a text area of the same task); nothing of ours to drop
        if label is None:
            report.drop(
                reasons.BAD_RECORD, source, region_record, "value.rectanglelabels", "rectangle without a label", item
            )
            continue
        x, y, w, h = pixel_box(geometry, width, height)
        if is_number(region.get("rotation")) and region["rotation"] % 360:
            x, y, w, h = _enclosing_box(x, y, w, h, region["rotation"])
            report.note("rotated rectangle: took its enclosing axis-aligned box")
        if len(region.get("rectanglelabels") or region.get("labels") or []) > 1:
            report.note("rectangle with several labels: took the first")
        image.objects.append(SourceObject(region_id, classes[label], (x, y, w, h), region_record, item))
    for item_position, item in enumerate(result):
        if isinstance(item, dict) and item.get("type") == "relation":
            _read_relation(source, record, item_position, item, predicates, image, report)
    return image


def _read_relation(
    source: Path,
    record: str,
    position: int,
    item: dict[str, Any],
    predicates: dict[str, int],
    image: SourceImage,
    report: ImportReport,
) -> None:
    """Add the relation(s) of one relation item to `image` (a malformed one is reported and skipped)."""
    relation_record = f"{record}, relation {item.get('from_id')}->{item.get('to_id')} (result[{position}])"
    direction = item.get("direction", "right")
    labels = [label for label in item.get("labels") or [] if isinstance(label, str)]
    if direction not in DIRECTIONS:
        report.drop(
            reasons.BAD_RECORD, source, relation_record, "direction", f"{direction!r} is not right/left/bi", item
        )
        return
    if not labels:
        detail = "relation without a label (the labelling config needs <Relations>)"
        report.drop(reasons.BAD_RECORD, source, relation_record, "labels", detail, item)
        return
    ends = relation_ends(str(item.get("from_id")), str(item.get("to_id")), direction)
    if direction == "bi":
        report.note(BIDIRECTIONAL)
        for label in labels:
            if label.strip().lower() not in SYMMETRIC_PREDICATES:
                (a, b), _ = ends
                detail = f"{a} {label} {b} and {b} {label} {a}; draw a one-way arrow if only one of them holds"
                report.warn(DIRECTIONAL_BIDIRECTIONAL, source, f"{relation_record}, label {label!r}", detail, item)
    for subject, obj in ends:
        for label in labels:
            image.relations.append(SourceRelation(subject, obj, predicates[label], relation_record, item))
