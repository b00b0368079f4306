"""Time `egtr data import coco-relations --link` on a generated file of VG150's size. Not a test.

Generates the SGG-Benchmark COCO layout (`{train,val,test}/_annotations.coco.json`) with the split proportions of
SGG-Benchmark's VG150-coco-format (73,538 / 4,844 / 27,032 images), scaled to VG150's 108,073 images (or
--images): about 11.5 objects and 6 relations per image (1.24M objects and 650k relations in all), 150 classes and
50 predicates, 1-based ids with a background entry. Empty image files stand in for the photos (the importer does
not decode images whose size is in the file). Then it times `egtr data import coco-relations SRC --out OUT --link`
in a process of its own (reading, checking, remapping, writing, symlinking): wall time, CPU time and peak memory of
that process.

    python benchmarks/import_speed.py --workdir /dev/shm     # VG150's size
    python benchmarks/import_speed.py --images 10000         # a quick run
    python benchmarks/import_speed.py --workdir /dev/shm --source /dev/shm/vg150-source   # generate once, reuse
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SPLITS = {"train": 73538, "val": 4844, "test": 27032}  # SGG-Benchmark's VG150 (images without relations dropped)
VG150_IMAGES = 108073  # all images of VG150 (the "108k images")
NUM_CLASSES, NUM_PREDICATES = 150, 50


def generate(root: Path, total_images: int, seed: int = 0) -> tuple[int, int, int]:
    """Write the three split files and the (empty) image files; returns (images, objects, relations)."""
    generator = np.random.default_rng(seed)
    scale = total_images / sum(SPLITS.values())
    categories = [{"id": 0, "name": "__background__"}] + [{"id": i, "name": f"class {i}"} for i in range(1, 151)]
    rel_categories = [{"id": 0, "name": "__background__"}] + [{"id": i, "name": f"pred {i}"} for i in range(1, 51)]
    image_id = annotation_id = relation_id = 0
    counts = [0, 0, 0]
    for split, size in SPLITS.items():
        folder = root / split
        folder.mkdir(parents=True)
        images, annotations, relations = [], [], []
        for _ in range(max(1, round(size * scale))):
            image_id += 1
            width, height = (int(v) for v in generator.integers(300, 1024, 2))
            file_name = f"{image_id}.jpg"
            (folder / file_name).touch()
            images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
            num_objects = int(generator.integers(2, 22))
            first = annotation_id + 1
            corners = generator.uniform(0, 0.7, (num_objects, 2)) * [width, height]
            sizes = generator.uniform(10, 300, (num_objects, 2))
            labels = generator.integers(1, NUM_CLASSES + 1, num_objects)
            for (x, y), (w, h), label in zip(corners.round(1).tolist(), sizes.round(1).tolist(), labels.tolist()):
                annotation_id += 1
                annotations.append(
                    {
                        "id": annotation_id,
                        "image_id": image_id,
                        "category_id": label,
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
            num_relations = int(generator.integers(1, 12))
            ends = generator.integers(0, num_objects, (num_relations, 2)).tolist()
            predicates = generator.integers(1, NUM_PREDICATES + 1, num_relations).tolist()
            for (subject, obj), predicate in zip(ends, predicates):
                relation_id += 1
                relations.append(
                    {
                        "id": relation_id,
                        "image_id": image_id,
                        "subject_id": first + subject,
                        "predicate_id": predicate,
                        "object_id": first + obj,
                    }
                )
        payload = {
            "images": images,
            "annotations": annotations,
            "categories": categories,
            "rel_categories": rel_categories,
            "rel_annotations": relations,
        }
        (folder / "_annotations.coco.json").write_text(json.dumps(payload))
        counts = [counts[0] + len(images), counts[1] + len(annotations), counts[2] + len(relations)]
    return counts[0], counts[1], counts[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=VG150_IMAGES, help="total images (default: VG150's 108,073)")
    parser.add_argument("--workdir", default=None, help="where to generate (default: a temporary folder)")
    parser.add_argument("--source", default=None, help="reuse (or generate once into) this source folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        source, out = Path(args.source or Path(workdir) / "source"), Path(workdir) / "imported"
        if not (source / "train" / "_annotations.coco.json").is_file():
            started = time.perf_counter()
            images, objects, relations = generate(source, args.images)
            seconds = time.perf_counter() - started
            print(f"generated {images} images, {objects} objects, {relations} relations in {seconds:.1f} s")
        # The import runs as the user runs it, `egtr data import`, in its own process: its CPU time and peak memory
        # are that process's alone (not the generator's).
        command = [sys.executable, "-m", "egtr.cli", "data", "import", "coco-relations", str(source)]
        command += ["--out", str(out), "--link"]
        wall = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - wall
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(completed.stdout.strip().splitlines()[0] if completed.stdout.strip() else completed.stderr[-2000:])
        report = json.loads((out / "import_report.json").read_text())
        print(f"imported: {report['splits']}; dropped: {report['dropped']}")
        cpu, peak = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024
        print(f"egtr data import --link: {wall:.1f} s wall, {cpu:.1f} s CPU, peak memory {peak:.0f} MiB")


if __name__ == "__main__":
    main()
