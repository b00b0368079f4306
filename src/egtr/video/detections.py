"""`SceneGraph` <-> `supervision.Detections`, so that supervision's trackers and annotators work on scene graphs.

The objects become the detections (`xyxy`, `confidence`, `class_id`, and `data["class_name"]`, `data["query"]`,
`data["object_index"]`); the relations, image size and path travel in `metadata`, so
`from_detections(to_detections(graph))` gives the same graph back. Rows may be re-ordered or dropped in between
(trackers do both): `data["object_index"]` maps the relations onto the rows that are left, and a relation whose
subject or object was dropped is dropped with it. Detections from elsewhere give a graph of objects only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np

from egtr.scene_graph import SceneGraph, SceneObject, SceneRelation

if TYPE_CHECKING:
    import supervision


def scene_graph_to_detections(graph: SceneGraph) -> supervision.Detections:
    """The graph's objects as `supervision.Detections` (one row per object, in object order)."""
    import supervision

    count = len(graph.objects)
    return supervision.Detections(
        xyxy=np.asarray([item.box for item in graph.objects], dtype=np.float64).reshape(count, 4),
        confidence=np.asarray([item.score for item in graph.objects], dtype=np.float64),
        class_id=np.asarray([item.label for item in graph.objects], dtype=np.int64),
        data={
            "class_name": np.asarray([item.label_name for item in graph.objects], dtype=object),
            "query": np.asarray([item.query for item in graph.objects], dtype=np.int64),
            "object_index": np.arange(count, dtype=np.int64),
        },
        metadata={
            "relations": [asdict(relation) for relation in graph.relations],
            "image_size": tuple(graph.image_size),
            "image_path": graph.image_path,
        },
    )


def scene_graph_from_detections(
    detections: supervision.Detections,
    *,
    class_names: Sequence[str] | None = None,
    relations: Sequence[SceneRelation] | None = None,
    image_size: tuple[int, int] | None = None,
) -> SceneGraph:
    """A `SceneGraph` of `detections`.

    Args:
        detections: boxes in pixels (xyxy); `confidence` (default 1) and `class_id` (default 0) per row; names from
            `data["class_name"]`, else `class_names[class_id]`, else the id as text.
        relations: relations between the rows (indices into `detections`); default: `metadata["relations"]`
            (as written by `scene_graph_to_detections`), else none.
        image_size: (height, width); default `metadata["image_size"]`, else (0, 0).
    """
    count = len(detections)
    confidence = detections.confidence if detections.confidence is not None else np.ones(count)
    class_id = detections.class_id if detections.class_id is not None else np.zeros(count, dtype=np.int64)
    names = detections.data.get("class_name")
    queries = detections.data.get("query")
    objects = []
    for row in range(count):
        label = int(class_id[row])
        if names is not None:
            name = str(names[row])
        elif class_names is not None and 0 <= label < len(class_names):
            name = class_names[label]
        else:
            name = str(label)
        objects.append(
            SceneObject(
                box=tuple(float(v) for v in detections.xyxy[row]),  # type: ignore[arg-type]
                label=label,
                label_name=name,
                score=float(confidence[row]),
                query=int(queries[row]) if queries is not None else -1,
            )
        )
    metadata = detections.metadata or {}
    if relations is None:
        relations = _carried_relations(metadata.get("relations", []), detections.data.get("object_index"), count)
    size = image_size or metadata.get("image_size") or (0, 0)
    return SceneGraph(
        objects=objects,
        relations=list(relations),
        image_size=(int(size[0]), int(size[1])),
        image_path=metadata.get("image_path"),
    )


def _carried_relations(values: list[dict], object_index: np.ndarray | None, count: int) -> list[SceneRelation]:
    """The relations of `metadata`, re-indexed onto the current rows (see the module docstring)."""
    if object_index is None:
        row_of = {row: row for row in range(count)}
    else:
        row_of = {int(original): row for row, original in enumerate(object_index)}
    carried = []
    for item in values:
        if item["subject"] in row_of and item["object"] in row_of:
            carried.append(
                SceneRelation(**{**item, "subject": row_of[item["subject"]], "object": row_of[item["object"]]})
            )
    return carried
