"""`gqa`: GQA scene graphs (`train_sceneGraphs.json`, `val_sceneGraphs.json`), with a vocabulary built from them.

`{imageId: {width, height, objects: {objectId: {name, x, y, w, h, attributes, relations: [{name, object}]}}}}`:
integer pixel boxes (x, y = top left), relations are outgoing edges of the subject whose `object` is the target's
objectId. Object dicts are unordered: objects are sorted by id. Names are free text: the classes and predicates are
the names seen at least `min_count` times (and, with `max_classes` / `max_predicates`, only the most frequent ones,
e.g. 200 / 100 as in the usual GQA-200 subsets), most frequent first; objects and relations with other names are
dropped and reported. "to the left of" and "to the right of" are kept as given (both directions appear).

The source is one file or a folder with the two files; `train_*` gives train, `val_*` gives val, the test split
is drawn from train (GQA's test scene graphs are not public). Images are `<imageId>.jpg` under `--images`.
"""

from __future__ import annotations

from collections import Counter
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
from egtr.data.importers.streaming import iter_members, top_level_kind
from egtr.errors import DataError

SPLIT_FILES = {"train": "train_sceneGraphs.json", "val": "val_sceneGraphs.json"}


def _files(source: Path) -> list[tuple[str | None, Path]]:
    if source.is_file():
        split = next((split for split, name in SPLIT_FILES.items() if source.name == name), None)
        return [(split, source)]
    files: list[tuple[str | None, Path]] = [
        (split, source / name) for split, name in SPLIT_FILES.items() if (source / name).is_file()
    ]
    if not files:
        raise DataError(f"{source}: no {' or '.join(SPLIT_FILES.values())} in this folder")
    return files


def _object_order(object_id: str) -> tuple[int, str]:
    return len(object_id), object_id  # numeric order for the usual digit ids, stable for any other string


def _vocabulary(counts: Counter[str], min_count: int, max_names: int | None) -> list[str]:
    names = sorted((name for name, count in counts.items() if count >= min_count), key=lambda n: (-counts[n], n))
    return names[:max_names] if max_names is not None else names


def _not_gqa(path: Path, keys: list[str]) -> DataError:
    """A file without a single `{image id: {"objects": {...}}}` member: say so (and what it may be instead) rather
    than that no name is used often enough."""
    coco = {"images", "annotations", "categories"} & set(keys)
    hint = "; it has the fields of a COCO file: import it as coco-relations" if coco else ""
    shown = ", ".join(repr(key) for key in keys) or "none"
    return DataError(
        f"{path}: this is not a GQA scene-graph file: no member is a graph with 'objects' (members: {shown}){hint}"
    )


def read_gqa(source: Path, options: ImportOptions) -> SourceDataset:
    """Build the vocabulary in a first streaming pass over the file(s), then read the graphs in a second one.

    A malformed file raises DataError in the first pass, before anything is written; one graph at a time is held.
    """
    files = _files(source)
    class_counts: Counter[str] = Counter()
    predicate_counts: Counter[str] = Counter()
    for _, path in files:
        if top_level_kind(path) != "object":
            raise DataError(f"{path}: expected GQA scene graphs (an object of image ids)")
        keys: list[str] = []  # the first few, to say what the file is when it holds no graph
        graphs = 0
        for key, graph in iter_members(path):
            objects = graph.get("objects") if isinstance(graph, dict) else None
            if len(keys) < 5:
                keys.append(key)
            graphs += isinstance(objects, dict)
            for obj in objects.values() if isinstance(objects, dict) else ():
                if isinstance(obj, dict) and isinstance(obj.get("name"), str):
                    class_counts[obj["name"].strip()] += 1
                    for relation in obj.get("relations") or []:
                        if isinstance(relation, dict) and isinstance(relation.get("name"), str):
                            predicate_counts[relation["name"].strip()] += 1
        if not graphs:
            raise _not_gqa(path, keys)
    class_names = _vocabulary(class_counts, options.min_count, options.max_classes)
    predicate_names = _vocabulary(predicate_counts, options.min_count, options.max_predicates)
    if not class_names or not predicate_names:
        raise DataError(f"{source}: no class or predicate is used {options.min_count} times or more")
    classes = {name: index for index, name in enumerate(class_names)}
    predicates = {name: index for index, name in enumerate(predicate_names)}

    def images(report: ImportReport) -> Iterator[SourceImage]:
        for split, path in files:
            index = ImageIndex(options.images or path.parent)
            for image_id, graph in iter_members(path):
                image = _read_graph(path, split, str(image_id), graph, index, classes, predicates, report)
                if image is not None:
                    yield image

    return SourceDataset(class_names, predicate_names, {split for split, _ in files if split}, images)


def _read_graph(
    path: Path,
    split: str | None,
    image_id: str,
    graph: Any,
    index: ImageIndex,
    classes: dict[str, int],
    predicates: dict[str, int],
    report: ImportReport,
) -> SourceImage | None:
    record = f"image {image_id}"
    objects = graph.get("objects") if isinstance(graph, dict) else None
    if not isinstance(objects, dict):
        report.drop(reasons.BAD_RECORD, path, record, "objects", "must be an object of objectIds", graph)
        return None
    width, height = graph.get("width"), graph.get("height")
    sized = is_int(width) and is_int(height)
    image = SourceImage(
        source_file=path,
        record=record,
        source_id=image_id,
        image_path=index.find(f"{image_id}.jpg", f"images/{image_id}.jpg"),
        file_name=f"{image_id}.jpg",
        width=width if sized else None,
        height=height if sized else None,
        split=split,
        raw=None,  # whole GQA graphs are large: the report names the image instead
    )
    for object_id in sorted(objects, key=_object_order):
        obj = objects[object_id]
        object_record = f"{record}, object {object_id}"
        box = as_box([obj.get(key) for key in ("x", "y", "w", "h")]) if isinstance(obj, dict) else None
        if box is None or not isinstance(obj.get("name"), str):
            report.drop(reasons.BAD_RECORD, path, object_record, "name/x/y/w/h", "missing or not numbers", obj)
            continue
        name = obj["name"].strip()
        drop = None if name in classes else (reasons.RARE_CLASS, "name", f"{name!r} is not in the vocabulary")
        image.objects.append(SourceObject(object_id, classes.get(name, 0), box, object_record, obj, drop))
        for position, relation in enumerate(obj.get("relations") or []):
            relation_record = f"{object_record}, relations[{position}]"
            if not isinstance(relation, dict) or not isinstance(relation.get("name"), str) or "object" not in relation:
                report.drop(reasons.BAD_RECORD, path, relation_record, "name/object", "missing", relation)
                continue
            predicate = relation["name"].strip()
            if predicate not in predicates:
                detail = f"{predicate!r} is not in the vocabulary"
                report.drop(reasons.RARE_PREDICATE, path, relation_record, "name", detail, relation)
                continue
            image.relations.append(
                SourceRelation(object_id, str(relation["object"]), predicates[predicate], relation_record, relation)
            )
    return image
