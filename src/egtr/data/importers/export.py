"""`egtr data export coco-relations`: a native dataset in the SGG-Benchmark COCO layout (the inverse of the
`coco-relations` importer): `OUT/{train,val,test}/_annotations.coco.json`, with annotation-id relations and 1-based
category and predicate ids. Image files are not copied: `file_name`s stay relative to the dataset's `images/`, so
`egtr data import coco-relations OUT --images DATA/images --out COPY` gives the same dataset back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from egtr.data.config import SPLITS
from egtr.data.visual_genome import parse_vg_split
from egtr.errors import DataError
from egtr.fileio import write_text


def export_coco_relations(data_root: str | Path, out: str | Path, overwrite: bool = False) -> list[Path]:
    """Write every split of the native dataset at `data_root` into `out`; returns the files written.

    Raises:
        DataError: the dataset cannot be read (as `VisualGenomeDataset` would refuse it).
        DataError: an output file exists, without `overwrite`.
    """
    data_root, out = Path(data_root), Path(out)
    written = []
    for split in SPLITS:
        annotations, class_names, predicate_names = parse_vg_split(data_root, split)
        target = out / split / "_annotations.coco.json"
        if target.exists() and not overwrite:
            raise DataError(f"{target}: already exists (pass --overwrite to replace it)")
        images: list[dict[str, Any]] = []
        objects: list[dict[str, Any]] = []
        relations: list[dict[str, Any]] = []
        for image in annotations:
            images.append(
                {"id": image.image_id, "file_name": image.file_name, "width": image.width, "height": image.height}
            )
            first_id = len(objects) + 1
            for box, label, crowd in zip(image.boxes_xywh, image.labels, image.iscrowd, strict=True):
                x, y, w, h = (float(value) for value in box)
                objects.append(
                    {
                        "id": len(objects) + 1,
                        "image_id": image.image_id,
                        "category_id": int(label) + 1,
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": int(crowd),
                    }
                )
            for subject, obj, predicate in image.relations.tolist():
                relations.append(
                    {
                        "id": len(relations) + 1,
                        "image_id": image.image_id,
                        "subject_id": first_id + subject,
                        "predicate_id": predicate + 1,
                        "object_id": first_id + obj,
                    }
                )
        if not images:
            raise DataError(f"{data_root / (split + '.json')}: no images to export")
        payload = {
            "images": images,
            "annotations": objects,
            "categories": [{"id": index + 1, "name": name} for index, name in enumerate(class_names)],
            "rel_categories": [{"id": index + 1, "name": name} for index, name in enumerate(predicate_names)],
            "rel_annotations": relations,
        }
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text(target, json.dumps(payload, ensure_ascii=False))
        written.append(target)
    return written
