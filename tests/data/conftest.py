"""Builders of small datasets in the two real layouts, with real photos shipped by scikit-image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image


def photo(name: str) -> Image.Image:
    """A real photo from scikit-image: astronaut (512x512), coffee (600x400), chelsea (451x300) (w x h)."""
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)())


def write_vg(
    root: Path, splits: dict[str, list[dict[str, Any]]], class_names: list[str], predicate_names: list[str]
) -> Path:
    """Write a RelTR-layout dataset.

    Each image spec: `id`, `file_name`, `image` (PIL, saved as JPEG/PNG by extension; None = don't write),
    `objects` [(category_id 1-based, [x, y, w, h])], `relations` [[s, o, p 1-based]], optional `width`/`height`.
    """
    (root / "images").mkdir(parents=True, exist_ok=True)
    categories = [{"supercategory": "thing", "id": i + 1, "name": name} for i, name in enumerate(class_names)]
    rel: dict[str, Any] = {"rel_categories": ["__background__", *predicate_names]}
    annotation_id = 0
    for split, specs in splits.items():
        images, annotations, relations = [], [], {}
        for spec in specs:
            image = spec.get("image")
            if image is not None:
                image.save(root / "images" / spec["file_name"], quality=95)
            width = spec.get("width", image.width if image is not None else 100)
            height = spec.get("height", image.height if image is not None else 100)
            images.append({"file_name": spec["file_name"], "height": height, "width": width, "id": spec["id"]})
            for category_id, bbox in spec["objects"]:
                annotation_id += 1
                annotations.append(
                    {
                        "bbox": bbox,
                        "category_id": category_id,
                        "area": bbox[2] * bbox[3],
                        "iscrowd": 0,
                        "image_id": spec["id"],
                        "id": annotation_id,
                    }
                )
            relations[str(spec["id"])] = spec.get("relations", [])
        (root / f"{split}.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories})
        )
        rel[split] = relations
    (root / "rel.json").write_text(json.dumps(rel))
    return root


def write_oi(
    root: Path, splits: dict[str, list[dict[str, Any]]], class_names: list[str], predicate_names: list[str]
) -> Path:
    """Write an SGTR-layout dataset. Each record: `img_fn`, `image` (PIL or None), `bbox` [[x1,y1,x2,y2]],
    `det_labels` (0-based), `rel` [[s, o, p]] (0-based)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "categories_dict.json").write_text(json.dumps({"obj": class_names, "rel": predicate_names}))
    for split, records in splits.items():
        out = []
        for record in records:
            image = record.get("image")
            if image is not None:
                image.save(root / "images" / f"{record['img_fn']}.jpg", quality=95)
            out.append(
                {
                    "img_fn": record["img_fn"],
                    "img_size": [image.width, image.height] if image else [100, 100],
                    "bbox": record["bbox"],
                    "det_labels": record["det_labels"],
                    "rel": record["rel"],
                }
            )
        (root / "annotations" / f"vrd-{split}-anno.json").write_text(json.dumps(out))
    return root


VG_CLASSES = ["person", "cup", "cat", "table"]
VG_PREDICATES = ["holding", "on", "near"]


def vg_specs() -> dict[str, list[dict[str, Any]]]:
    """Three splits of real photos; image 3 (chelsea) holds an empty box (index 1) and a box fully outside (index 3)."""
    astronaut, coffee, chelsea = photo("astronaut"), photo("coffee"), photo("chelsea")
    return {
        "train": [
            # ids deliberately out of order in the file: the loader orders images by id.
            {
                "id": 7,
                "file_name": "coffee.jpg",
                "image": coffee,
                "objects": [(2, [100.0, 50.0, 300.0, 280.0]), (4, [0.0, 300.0, 600.0, 100.0])],
                "relations": [[0, 1, 2]],
            },
            {
                "id": 3,
                "file_name": "chelsea.jpg",
                "image": chelsea,
                "objects": [
                    (3, [50.0, 20.0, 300.0, 260.0]),
                    (2, [10.0, 10.0, 0.0, 40.0]),
                    (4, [400.0, 250.0, 100.0, 80.0]),
                    (2, [460.0, 10.0, 30.0, 30.0]),
                ],
                "relations": [[0, 2, 2], [1, 0, 3], [2, 0, 3], [0, 3, 3], [0, 2, 3]],
            },
        ],
        "val": [
            {
                "id": 11,
                "file_name": "astronaut.jpg",
                "image": astronaut,
                "objects": [(1, [120.0, 30.0, 250.0, 480.0]), (2, [300.0, 400.0, 60.0, 80.0])],
                "relations": [[0, 1, 1]],
            },
        ],
        "test": [
            {
                "id": 12,
                "file_name": "generated.png",
                "image": Image.fromarray(np.full((64, 96, 3), 200, dtype=np.uint8)),
                "objects": [(1, [8.0, 8.0, 40.0, 40.0])],
                "relations": [],
            },
        ],
    }


@pytest.fixture()
def vg_root(tmp_path: Path) -> Path:
    return write_vg(tmp_path / "vg", vg_specs(), VG_CLASSES, VG_PREDICATES)
