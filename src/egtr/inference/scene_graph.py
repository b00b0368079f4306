"""The typed result of scene graph prediction: `SceneGraph` with `SceneObject`s and `SceneRelation`s.

`SceneGraph` serialises to JSON (`to_json` / `from_json`), converts to a `networkx.MultiDiGraph` and draws itself
(`draw`, see `egtr.inference.visualize`). `scene_graph_from_arrays` turns one ranked prediction of
`egtr.inference.postprocess.postprocess_scene_graphs` into a `SceneGraph`: it selects the top relations, keeps the
objects they use (plus, optionally, confident objects) and re-indexes them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from egtr.fileio import write_text
from egtr.images import ImageSource, describe_source

if TYPE_CHECKING:  # optional dependencies (the `viz` and `video` extras), only for annotations
    import networkx
    import supervision
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

SCENE_GRAPH_FORMAT_VERSION = 1


@dataclass(frozen=True)
class SceneObject:
    """One detected object.

    Attributes:
        box: (x1, y1, x2, y2) in pixels of the original image.
        label: 0-based class index.
        label_name: human-readable class name.
        score: detection confidence (max of the softmax over the class logits, as the original evaluation).
        query: index of the model query that produced it (for debugging; -1 when unknown).
    """

    box: tuple[float, float, float, float]
    label: int
    label_name: str
    score: float
    query: int = -1


@dataclass(frozen=True)
class SceneRelation:
    """One (subject, predicate, object) triplet.

    Attributes:
        subject: index into `SceneGraph.objects`.
        object: index into `SceneGraph.objects`.
        predicate: 0-based predicate index.
        predicate_name: human-readable predicate name.
        score: triplet score = predicate score x subject score x object score (the ranking score).
        predicate_score: relation x connectivity probability of this predicate alone.
    """

    subject: int
    object: int
    predicate: int
    predicate_name: str
    score: float
    predicate_score: float


@dataclass
class SceneGraph:
    """A scene graph of one image: objects with pixel boxes and ranked relations between them.

    Relations are sorted by decreasing `score`. `image_size` is (height, width) of the original image.
    """

    objects: list[SceneObject] = field(default_factory=list)
    relations: list[SceneRelation] = field(default_factory=list)
    image_size: tuple[int, int] = (0, 0)
    image_path: str | None = None

    def __post_init__(self) -> None:
        for position, relation in enumerate(self.relations):
            for role in ("subject", "object"):
                index = getattr(relation, role)
                if not 0 <= index < len(self.objects):
                    raise ValueError(
                        f"relation {position}: {role} index {index} is out of range for {len(self.objects)} objects"
                    )

    def __len__(self) -> int:
        return len(self.relations)

    def triplets(self) -> list[tuple[str, str, str]]:
        """(subject name, predicate name, object name) of every relation, in rank order."""
        return [
            (self.objects[r.subject].label_name, r.predicate_name, self.objects[r.object].label_name)
            for r in self.relations
        ]

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": SCENE_GRAPH_FORMAT_VERSION,
            "image_path": self.image_path,
            "image_size": {"height": int(self.image_size[0]), "width": int(self.image_size[1])},
            "objects": [asdict(item) | {"box": [float(v) for v in item.box]} for item in self.objects],
            "relations": [asdict(item) for item in self.relations],
        }

    def to_json(self, path: str | Path | None = None, indent: int | None = 2) -> str:
        """Serialise to JSON; also write it to `path` when given. Returns the JSON text."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            write_text(path, text + "\n")
        return text

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "<dict>") -> SceneGraph:
        try:
            size = values["image_size"]
            objects = [
                SceneObject(
                    box=tuple(float(v) for v in item["box"]),  # type: ignore[arg-type]
                    label=int(item["label"]),
                    label_name=str(item["label_name"]),
                    score=float(item["score"]),
                    query=int(item.get("query", -1)),
                )
                for item in values["objects"]
            ]
            relations = [
                SceneRelation(
                    subject=int(item["subject"]),
                    object=int(item["object"]),
                    predicate=int(item["predicate"]),
                    predicate_name=str(item["predicate_name"]),
                    score=float(item["score"]),
                    predicate_score=float(item["predicate_score"]),
                )
                for item in values["relations"]
            ]
            image_size = (int(size["height"]), int(size["width"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{source}: not a scene graph ({type(error).__name__}: {error})") from error
        if any(len(item.box) != 4 for item in objects):
            raise ValueError(f"{source}: every object box needs 4 numbers (x1, y1, x2, y2)")
        return cls(objects=objects, relations=relations, image_size=image_size, image_path=values.get("image_path"))

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> SceneGraph:
        """Read JSON text, or a file path holding it (as written by `to_json`)."""
        source = "<json text>"
        text = str(text_or_path)
        if isinstance(text_or_path, Path) or not text.lstrip().startswith("{"):
            source = str(text_or_path)
            text = Path(text_or_path).read_text()
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source}: not valid JSON ({error})") from error
        return cls.from_dict(values, source=source)

    # ------------------------------------------------------------------ supervision (the `video` extra)
    def to_detections(self) -> supervision.Detections:
        """The objects as `supervision.Detections`, one row per object in object order: `xyxy`, `confidence`,
        `class_id`, `data["class_name"]`, `data["query"]` and `data["object_index"]`; the relations, image size and
        path travel in `metadata`, so `SceneGraph.from_detections(graph.to_detections())` is the same graph.
        Useful on its own with supervision's annotators and trackers."""
        import supervision

        count = len(self.objects)
        return supervision.Detections(
            xyxy=np.asarray([item.box for item in self.objects], dtype=np.float64).reshape(count, 4),
            confidence=np.asarray([item.score for item in self.objects], dtype=np.float64),
            class_id=np.asarray([item.label for item in self.objects], dtype=np.int64),
            data={
                "class_name": np.asarray([item.label_name for item in self.objects], dtype=object),
                "query": np.asarray([item.query for item in self.objects], dtype=np.int64),
                "object_index": np.arange(count, dtype=np.int64),
            },
            metadata={
                "relations": [asdict(relation) for relation in self.relations],
                "image_size": tuple(self.image_size),
                "image_path": self.image_path,
            },
        )

    @classmethod
    def from_detections(
        cls,
        detections: supervision.Detections,
        *,
        class_names: Sequence[str] | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> SceneGraph:
        """A graph of `supervision.Detections` (boxes in pixels, xyxy).

        `confidence` defaults to 1 and `class_id` to 0; names come from `data["class_name"]`, else
        `class_names[class_id]`, else the id as text. Relations come from `metadata["relations"]` (as
        `to_detections` writes them); rows may have been re-ordered or dropped in between (trackers do both):
        `data["object_index"]` maps the relations onto the rows left, and a relation whose subject or object was
        dropped is dropped with it. `image_size` (height, width) defaults to `metadata["image_size"]`, else (0, 0).
        """
        count = len(detections)
        confidence = detections.confidence if detections.confidence is not None else np.ones(count)
        class_id = detections.class_id if detections.class_id is not None else np.zeros(count, dtype=np.int64)
        names, queries = detections.data.get("class_name"), detections.data.get("query")
        objects = []
        for row in range(count):
            label = int(class_id[row])
            if names is not None:
                name = str(names[row])
            else:
                name = _name(class_names, label) if class_names is not None else str(label)
            box = tuple(float(v) for v in detections.xyxy[row])
            query = int(queries[row]) if queries is not None else -1
            objects.append(SceneObject(box, label, name, float(confidence[row]), query))  # type: ignore[arg-type]
        metadata = detections.metadata or {}
        original = detections.data.get("object_index")
        row_of = {int(index): row for row, index in enumerate(original if original is not None else range(count))}
        relations = [
            SceneRelation(**{**item, "subject": row_of[item["subject"]], "object": row_of[item["object"]]})
            for item in metadata.get("relations", [])
            if item["subject"] in row_of and item["object"] in row_of
        ]
        size = image_size or metadata.get("image_size") or (0, 0)
        return cls(objects, relations, (int(size[0]), int(size[1])), metadata.get("image_path"))

    # ------------------------------------------------------------------ views
    def to_networkx(self) -> networkx.MultiDiGraph:
        """A `networkx.MultiDiGraph`: node i = object i (attributes label, label_name, score, box), one edge
        subject -> object per relation (attributes predicate, predicate_name, score, predicate_score, rank).

        A multigraph because without the graph constraint one pair may carry several predicates.
        """
        import networkx

        graph = networkx.MultiDiGraph(image_size=self.image_size, image_path=self.image_path)
        for index, item in enumerate(self.objects):
            graph.add_node(index, label=item.label, label_name=item.label_name, score=item.score, box=item.box)
        for rank, relation in enumerate(self.relations):
            graph.add_edge(
                relation.subject,
                relation.object,
                predicate=relation.predicate,
                predicate_name=relation.predicate_name,
                score=relation.score,
                predicate_score=relation.predicate_score,
                rank=rank,
            )
        return graph

    def draw(
        self,
        path: str | Path | None = None,
        image: ImageSource | None = None,
        **options: Any,
    ) -> Figure:
        """Draw the image with labelled boxes next to the graph; see `egtr.inference.visualize.draw_scene_graph`.

        Args:
            path: write the figure here (format from the suffix: .png, .svg, .pdf); None = only return it.
            image: the picture (path, PIL image or (H, W, 3) array); default: `image_path` if it exists,
                otherwise a blank canvas of `image_size`.
        """
        from egtr.inference.visualize import draw_scene_graph

        if image is None and self.image_path is not None:
            if Path(self.image_path).is_file():
                image = self.image_path
            else:
                logger.warning(
                    "%s: the image of this scene graph is not there; drawing on a blank canvas",
                    describe_source(self.image_path),
                )
        return draw_scene_graph(self, image=image, path=path, **options)


def scene_graph_from_arrays(
    boxes: np.ndarray,
    labels: np.ndarray,
    object_scores: np.ndarray,
    relations: np.ndarray,
    relation_scores: np.ndarray,
    predicate_scores: np.ndarray,
    *,
    class_names: Sequence[str],
    predicate_names: Sequence[str],
    image_size: tuple[int, int],
    top_k: int | None = None,
    score_threshold: float = 0.0,
    object_threshold: float | None = None,
    image_path: str | None = None,
) -> SceneGraph:
    """Select and re-index a ranked prediction into a `SceneGraph`.

    Why this is long: the documented arrays and thresholds; the code (about 65 lines) is one selection pass.

    Args:
        boxes: (N, 4) xyxy pixels of all N queries.
        labels: (N,) class index per query.
        object_scores: (N,) object confidence per query.
        relations: (K, 3) [subject query, object query, predicate], ranked by decreasing score.
        relation_scores: (K,) triplet scores, decreasing.
        predicate_scores: (K,) predicate probability of each triplet.
        top_k: keep at most this many relations (after the threshold); None = all K.
        score_threshold: drop relations whose triplet score is below this.
        object_threshold: also keep objects with a score >= this that take part in no kept relation;
            None = only the objects of the kept relations.

    Returns:
        A `SceneGraph` whose objects are the kept queries in increasing query order. Boxes are clipped to the
        image (the raw model boxes may reach past its border; the evaluation path does not go through here).
    """
    relations = np.asarray(relations, dtype=np.int64).reshape(-1, 3)
    relation_scores = np.asarray(relation_scores, dtype=np.float64).reshape(-1)
    predicate_scores = np.asarray(predicate_scores, dtype=np.float64).reshape(-1)
    if not len(relations) == len(relation_scores) == len(predicate_scores):
        raise ValueError(
            f"relations ({len(relations)}), relation_scores ({len(relation_scores)}) and predicate_scores "
            f"({len(predicate_scores)}) must have the same length"
        )
    keep = relation_scores >= score_threshold
    if top_k is not None:
        keep &= np.cumsum(keep) <= top_k
    relations, relation_scores, predicate_scores = (
        relations[keep],
        relation_scores[keep],
        predicate_scores[keep],
    )

    kept_queries = set(relations[:, :2].reshape(-1).tolist())
    if object_threshold is not None:
        kept_queries |= set(np.flatnonzero(np.asarray(object_scores) >= object_threshold).tolist())
    ordered_queries = sorted(kept_queries)
    new_index = {query: position for position, query in enumerate(ordered_queries)}

    height, width = image_size
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if height > 0 and width > 0:
        boxes = np.clip(boxes, 0, [width, height, width, height])
    objects = [
        SceneObject(
            box=tuple(float(v) for v in boxes[query]),  # type: ignore[arg-type]
            label=int(labels[query]),
            label_name=_name(class_names, int(labels[query])),
            score=float(object_scores[query]),
            query=int(query),
        )
        for query in ordered_queries
    ]
    scene_relations = [
        SceneRelation(
            subject=new_index[int(subject)],
            object=new_index[int(obj)],
            predicate=int(predicate),
            predicate_name=_name(predicate_names, int(predicate)),
            score=float(score),
            predicate_score=float(predicate_score),
        )
        for (subject, obj, predicate), score, predicate_score in zip(relations, relation_scores, predicate_scores)
    ]
    return SceneGraph(objects=objects, relations=scene_relations, image_size=image_size, image_path=image_path)


def _name(names: Sequence[str], index: int) -> str:
    return names[index] if 0 <= index < len(names) else str(index)
