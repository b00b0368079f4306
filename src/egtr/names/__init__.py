"""Object-class and predicate names of the two standard scene-graph datasets, shipped with the package.

* ``visual_genome.json``: VG150/50 (Neural-Motifs split as converted by RelTR): 150 objects in
  alphabetical order (``airplane`` ... ``zebra``) and 50 predicates (``above`` ... ``with``), i.e. the
  official labels minus 1 (no background entry).
* ``open_images_v6.json``: Open Images V6 as preprocessed by BGNN/SGTR/PySGG: 601 objects and 30 predicates,
  0-based as in ``det_labels`` / ``rel`` of ``vrd-*-anno.json`` (no background entry). The file records its
  provenance under ``"source"``.

Use `load_names` to get the lists for a dataset and `guess_names` to pick them from a checkpoint's label
counts, so that a model converted without ``id2label`` shows real names instead of ``LABEL_17``.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

__all__ = ["DATASETS", "guess_names", "load_names"]

# Accepted dataset names (lower-case) -> JSON file inside this package.
DATASETS: dict[str, str] = {
    "visual_genome": "visual_genome.json",
    "vg150": "visual_genome.json",
    "open_images_v6": "open_images_v6.json",
    "oiv6": "open_images_v6.json",
}


@cache
def _read(filename: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    text = resources.files(__name__).joinpath(filename).read_text(encoding="utf-8")
    data = json.loads(text)
    return tuple(data["objects"]), tuple(data["predicates"])


def load_names(dataset: str) -> tuple[list[str], list[str]]:
    """Return ``(object_names, predicate_names)`` of ``dataset``.

    Args:
        dataset: one of ``"visual_genome"`` / ``"vg150"`` (150 objects, 50 predicates) or
            ``"open_images_v6"`` / ``"oiv6"`` (601 objects, 30 predicates); case-insensitive.

    Returns:
        Two new lists (callers may modify them), indexed by the 0-based class / predicate label of the model.

    Raises:
        ValueError: for any other dataset name.
    """
    key = dataset.strip().lower() if isinstance(dataset, str) else dataset
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(DATASETS)}")
    objects, predicates = _read(DATASETS[key])
    return list(objects), list(predicates)


def guess_names(num_labels: int, num_rel_labels: int) -> tuple[list[str], list[str]] | None:
    """Return the names of the dataset whose sizes are ``(num_labels, num_rel_labels)``, else ``None``.

    ``(150, 50)`` gives Visual Genome, ``(601, 30)`` gives Open Images V6; any other pair (for example a model
    trained on a custom dataset) gives ``None`` so the caller can keep generic names.
    """
    for dataset in ("visual_genome", "open_images_v6"):
        objects, predicates = load_names(dataset)
        if (len(objects), len(predicates)) == (num_labels, num_rel_labels):
            return objects, predicates
    return None
