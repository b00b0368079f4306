"""Label Studio's JSON of an image project with boxes and relations: the one place for its conventions.

Both directions use this module: `egtr predict --output-format label-studio` and `egtr data select` write tasks
whose `predictions` propose a model's scene graphs, and `egtr data import label-studio` reads the `annotations` of
the export back (see ../shared/docs/annotation-formats.md and docs/own-data.md):

* the labelling config has `<Image name="image" value="$image">`, `<RectangleLabels name="label" toName="image">`
  and `<Relations>`: a region's `from_name` is "label" and its `to_name` "image", and the task's `data.image` holds
  the image reference;
* a rectangle's x / y / width / height are in percent (0-100) of the image as the browser shows it (after its EXIF
  orientation), with that size as `original_width` / `original_height`;
* a relation `{type: relation, from_id, to_id, direction, labels}` refers to region ids; `direction` "right" (the
  default) means from -> to, "left" to -> from, "bi" both ways; each of its labels is one predicate.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlparse
from xml.sax.saxutils import quoteattr

from egtr.errors import ConfigError
from egtr.fileio import write_text

if TYPE_CHECKING:
    from egtr.inference.scene_graph import SceneGraph

IMAGE_TAG = "image"  # <Image name=...>, the regions' to_name and the key of the image reference in `data`
LABELS_TAG = "label"  # <RectangleLabels name=...>, the regions' from_name
DIRECTIONS = ("right", "left", "bi")
LOCAL_FILES_PREFIX = "/data/local-files/?d="  # Label Studio's local file serving (LOCAL_FILES_DOCUMENT_ROOT)
TASKS_NAME = "tasks.json"
CONFIG_NAME = "labeling_config.xml"
SCORE_TOP = 10  # relations that make a task's score (see `task_score`)
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")


# ------------------------------------------------------------------ boxes and relations
def percent_box(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    """(x, y, width, height) in percent of a `width` x `height` image, of a pixel box given as (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = box
    return 100 * x1 / width, 100 * y1 / height, 100 * (x2 - x1) / width, 100 * (y2 - y1) / height


def pixel_box(percent: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    """(x, y, w, h) in pixels of a `width` x `height` image, of Label Studio's percent (x, y, width, height)."""
    x, y, w, h = percent
    return x / 100 * width, y / 100 * height, w / 100 * width, h / 100 * height


def relation_ends(from_id: str, to_id: str, direction: str) -> list[tuple[str, str]]:
    """The (subject, object) region ids a relation item stands for: one pair, or two for "bi"."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r} is not one of {'/'.join(DIRECTIONS)}")
    if direction == "left":
        return [(to_id, from_id)]
    return [(from_id, to_id), (to_id, from_id)] if direction == "bi" else [(from_id, to_id)]


# ------------------------------------------------------------------ image references
def image_reference(path: Path, root: Path, prefix: str = LOCAL_FILES_PREFIX) -> str:
    """How a task refers to the image file `path`: `prefix` + its path relative to `root`, URL-quoted.

    The default prefix is Label Studio's local file serving (`LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT` = `root`); a
    URL prefix (`https://host/photos/`) or a cloud storage one (`s3://bucket/photos/`) fits other storage.
    """
    try:
        relative = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError as error:
        raise ConfigError(f"{path}: not under the image root {root} (see --image-root)") from error
    return prefix + quote(relative, safe="/")


def image_name_candidates(reference: str) -> list[str]:
    """Paths to try for a task's image reference: as stored, its file name, the name without the upload prefix.

    The inverse of `image_reference` for local files (`/data/local-files/?d=<path>`), and Label Studio's uploads
    (`/data/upload/<project>/<uuid8>-<name>`, renamed by Label Studio) and URLs.
    """
    parsed = urlparse(reference)
    query = parse_qs(parsed.query)
    path = unquote(query["d"][0]) if "d" in query else unquote(parsed.path)
    relative = re.sub(r"^/?data/", "", path).lstrip("/")
    name = Path(path).name
    return [relative, name, _UPLOAD_PREFIX.sub("", name)]


# ------------------------------------------------------------------ writing tasks
def labelling_config(class_names: Iterable[str], predicate_names: Iterable[str]) -> str:
    """The labelling config of a project for these names: an image, labelled rectangles, labelled relations."""
    labels = "".join(f"\n    <Label value={quoteattr(name)}/>" for name in class_names)
    relations = "".join(f"\n    <Relation value={quoteattr(name)}/>" for name in predicate_names)
    return (
        f'<View>\n  <Image name="{IMAGE_TAG}" value="${IMAGE_TAG}" zoom="true"/>\n'
        f'  <RectangleLabels name="{LABELS_TAG}" toName="{IMAGE_TAG}">{labels}\n  </RectangleLabels>\n'
        f"  <Relations>{relations}\n  </Relations>\n</View>\n"
    )


def config_names(text: str) -> tuple[list[str], list[str]]:
    """(class names, predicate names) of a labelling config: its `<Label>` and `<Relation>` values."""
    from xml.etree import ElementTree

    root = ElementTree.fromstring(text)
    labels = [str(item.get("value")) for tag in root.iter("RectangleLabels") for item in tag.iter("Label")]
    return labels, [str(item.get("value")) for item in root.iter("Relation")]


def region_id(index: int) -> str:
    """The id of the region of the graph's object `index` (stable, so a re-written task keeps its ids)."""
    return f"o{index}"


def prediction(graph: SceneGraph, model_version: str, score: float) -> dict[str, Any]:
    """One Label Studio prediction of a scene graph: a scored rectangle per object, a relation item per ordered
    pair of objects with its predicates as labels; `score` is the task's (Label Studio sorts and filters by it)."""
    height, width = graph.image_size
    result: list[dict[str, Any]] = []
    for index, obj in enumerate(graph.objects):
        x, y, w, h = percent_box(obj.box, width, height)
        value = {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [obj.label_name]}
        result.append(
            {
                "id": region_id(index),
                "type": "rectanglelabels",
                "from_name": LABELS_TAG,
                "to_name": IMAGE_TAG,
                "original_width": width,
                "original_height": height,
                "image_rotation": 0,
                "value": value,
                "score": obj.score,
            }
        )
    labels: dict[tuple[int, int], list[str]] = {}  # one relation item per ordered pair (several without the
    for relation in graph.relations:  # graph constraint), as Label Studio stores them
        pair_labels = labels.setdefault((relation.subject, relation.object), [])
        if relation.predicate_name not in pair_labels:
            pair_labels.append(relation.predicate_name)
    for (subject, obj_index), names in labels.items():
        result.append(
            {
                "type": "relation",
                "from_id": region_id(subject),
                "to_id": region_id(obj_index),
                "direction": "right",
                "labels": names,
            }
        )
    return {"model_version": model_version, "score": score, "result": result}


def task_score(graph: SceneGraph, top: int = SCORE_TOP) -> float:
    """How sure the model is of an image's graph: the mean triplet score of its `top` best relations, a missing one
    counting 0 (an image with few confident relations scores low). `egtr data select --strategy uncertainty`
    proposes the lowest first, the order Label Studio shows when its tasks are sorted by prediction score."""
    scores = sorted((relation.score for relation in graph.relations), reverse=True)[:top]
    return sum(scores) / top


def task(graph: SceneGraph, reference: str, model_version: str) -> dict[str, Any]:
    """A Label Studio task for the image at `reference`, with `graph` as its prediction (pre-annotation)."""
    return {"data": {IMAGE_TAG: reference}, "predictions": [prediction(graph, model_version, task_score(graph))]}


def tasks_for_graphs(
    graphs: Iterable[tuple[Path, SceneGraph]], root: Path, prefix: str, model_version: str
) -> list[dict[str, Any]]:
    """One task per (image file, graph), the image referred to by `image_reference(path, root, prefix)`."""
    return [task(graph, image_reference(path, root, prefix), model_version) for path, graph in graphs]


def default_image_root(paths: Iterable[Path], prefix: str) -> Path:
    """The folder image references start from when none is given: the deepest folder that holds every image, or
    for Label Studio's local files its parent, since Label Studio refuses a local-files storage at its document
    root itself (the storage is the image folder, the document root above it)."""
    folders = [str(path.resolve().parent) for path in paths]
    root = Path(os.path.commonpath(folders)) if folders else Path.cwd()
    return root.parent if prefix == LOCAL_FILES_PREFIX else root


def write_project(
    out: Path, tasks: list[dict[str, Any]], class_names: Sequence[str], predicate_names: Sequence[str]
) -> tuple[Path, Path]:
    """Write `tasks.json` (import it in the project) and `labeling_config.xml` (paste it in its settings)."""
    tasks_path, config_path = out / TASKS_NAME, out / CONFIG_NAME
    write_text(tasks_path, json.dumps(tasks, indent=1, ensure_ascii=False) + "\n")
    write_text(config_path, labelling_config(class_names, predicate_names))
    return tasks_path, config_path
