"""The `--boxes` file of `egtr predict`: the objects given for each image (PredCls / SGCls,
`egtr.inference.given_boxes`).

A JSON file; the objects have the fields of the objects `egtr predict` writes (`SceneGraph.to_dict`):
`box` [x1, y1, x2, y2] in pixels of the original image (required), and `label` (class index) or `label_name`
(class name) for PredCls; other fields (`score`, `query`) are ignored. Two layouts:

    {"photos/a.jpg": [{"box": [10, 20, 200, 310], "label_name": "person"}, ...], "b.jpg": [...]}
    [{"image_path": "photos/a.jpg", "objects": [...]}, ...]      # e.g. scene graphs written by egtr predict

A key (or `image_path`) names an image by its path as given on the command line, by the same file, or by its
file name when that is unique. In one image either every object has a label (PredCls) or none has (SGCls).
Every image to predict needs an entry (an empty list is allowed: no objects, no relations).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from egtr.errors import EgtrError
from egtr.fileio import read_json
from egtr.inference.given_boxes import class_index


class BoxesFileError(EgtrError, ValueError):
    """A boxes file that cannot be used; the message names the file, the record and the field."""


@dataclass
class ImageBoxes:
    """The objects given for one image: (M, 4) float64 xyxy boxes and (M,) labels or None (SGCls)."""

    boxes: np.ndarray
    labels: np.ndarray | None
    record: str  # where it came from in the file, for messages


def read_boxes_file(path: str | Path, class_names: Sequence[str]) -> dict[str, ImageBoxes]:
    """Parse and check a boxes file (not yet against the images: see `boxes_for_images`).

    Returns:
        {image key as written in the file: its objects}.

    Raises:
        BoxesFileError: unreadable JSON, a wrong layout, a missing or malformed field, an unknown class, mixed
            labelled and unlabelled objects, or one image named twice.
    """
    path = Path(path)
    try:
        document = read_json(path, BoxesFileError)
    except OSError as error:
        raise BoxesFileError(f"{path}: cannot read the boxes file ({error.strerror or error})") from error
    if isinstance(document, dict):
        records = [(str(key), value, f"record {key!r}") for key, value in document.items()]
    elif isinstance(document, list):
        records = []
        for index, item in enumerate(document):
            if not isinstance(item, dict) or not isinstance(item.get("image_path"), str):
                raise BoxesFileError(f"{path}: record {index}: needs a string field 'image_path' and 'objects'")
            records.append((item["image_path"], item, f"record {index} ({item['image_path']!r})"))
    else:
        raise BoxesFileError(f"{path}: expected an object {{image: objects}} or a list of scene graphs")
    result: dict[str, ImageBoxes] = {}
    for key, value, record in records:
        if key in result:
            raise BoxesFileError(f"{path}: {record}: image {key!r} is given twice")
        objects = value.get("objects") if isinstance(value, dict) else value
        if not isinstance(objects, list):
            raise BoxesFileError(f"{path}: {record}: field 'objects' must be a list of objects")
        result[key] = _parse_objects(objects, class_names, f"{path}: {record}")
    return result


def _parse_objects(objects: list[Any], class_names: Sequence[str], where: str) -> ImageBoxes:
    boxes: list[list[float]] = []
    labels: list[int | None] = []
    for index, item in enumerate(objects):
        if not isinstance(item, dict):
            raise BoxesFileError(f"{where} object {index}: must be an object with a 'box' field")
        box = item.get("box")
        if (
            not isinstance(box, list)
            or len(box) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
        ):
            raise BoxesFileError(f"{where} object {index}: field 'box' must be 4 numbers [x1, y1, x2, y2]")
        boxes.append([float(v) for v in box])
        # Bad labels, by index or by name, are bad input found here, before any image (exit 2 on the command line).
        if "label" in item:
            label = item["label"]
            if not isinstance(label, int) or isinstance(label, bool):
                raise BoxesFileError(f"{where} object {index}: field 'label' must be an integer class index")
            labels.append(class_index(label, class_names, f"{where} object {index}: field 'label'", BoxesFileError))
        elif "label_name" in item:
            field = f"{where} object {index}: field 'label_name'"
            if not isinstance(item["label_name"], str):
                raise BoxesFileError(f"{field} must be a class name")
            labels.append(class_index(item["label_name"], class_names, field, BoxesFileError))
        else:
            labels.append(None)
    given = [label is not None for label in labels]
    if any(given) and not all(given):
        missing = given.index(False)
        raise BoxesFileError(
            f"{where} object {missing}: has no 'label' or 'label_name' but other objects of the image do (give "
            "labels to all objects for PredCls, or to none for SGCls)"
        )
    return ImageBoxes(
        boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64) if labels and all(given) else None,
        record=where,
    )


def boxes_for_images(
    entries: dict[str, ImageBoxes], image_paths: Sequence[Path], source: str
) -> tuple[dict[Path, ImageBoxes], list[str]]:
    """The entry of every image: by the path as given, the same file, or a unique file name.

    Returns:
        ({image path: its objects}, the keys of the file that name no image to predict).

    Raises:
        BoxesFileError: an image without an entry, or a file name that more than one entry could mean.
    """
    by_file: dict[str, str] = {}
    by_name: dict[str, list[str]] = {}
    for entry in entries:
        by_file[os.path.realpath(entry)] = entry
        by_name.setdefault(Path(entry).name, []).append(entry)
    found: dict[Path, ImageBoxes] = {}
    used = set()
    for image in image_paths:
        key: str | None = str(image) if str(image) in entries else by_file.get(os.path.realpath(image))
        if key is None:
            candidates = by_name.get(image.name, [])
            if len(candidates) > 1:
                raise BoxesFileError(f"{source}: image {image} matches several entries by file name: {candidates}")
            key = candidates[0] if candidates else None
        if key is None:
            raise BoxesFileError(f"{source}: no entry for image {image} (a key with its path or file name)")
        found[image] = entries[key]
        used.add(key)
    return found, [key for key in entries if key not in used]
