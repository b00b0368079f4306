"""Small helpers of the importer tests: image files, running an import, reading the result back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

from egtr.data.importers import ImportOptions, ImportReport, import_dataset
from egtr.data.visual_genome import parse_vg_split


def image_file(path: Path, width: int = 40, height: int = 30, orientation: int | None = None) -> Path:
    """A JPEG of `width` x `height` stored pixels (with an EXIF orientation tag if given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (width, height), (120, 60, 30))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(path, exif=exif.tobytes())
    return path


def write_json(path: Path, payload: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))
    return path


def run_import(format_name: str, source: Path, out: Path, **options: Any) -> ImportReport:
    return import_dataset(format_name, source, out, ImportOptions(**options))


def read_back(root: Path) -> dict[str, dict[str, Any]]:
    """split -> {file_name: (boxes xywh, class names, relations as (subject name, predicate, object name))}."""
    result = {}
    for split in ("train", "val", "test"):
        annotations, classes, predicates = parse_vg_split(root, split)
        result[split] = {
            image.file_name: {
                "id": image.image_id,
                "size": (image.width, image.height),
                "boxes": image.boxes_xywh.round(3).tolist(),
                "labels": [classes[label] for label in image.labels],
                "relations": [(s, predicates[p], o) for s, o, p in image.relations.tolist()],
            }
            for image in annotations
        }
    return result


def problems(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (root / "import_problems.jsonl").read_text().splitlines()]
