"""Dataset summaries for `egtr data stats`: counts per class and predicate, frequent triplets, a histogram plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from egtr.data.base import SceneGraphDataset
from egtr.data.statistics import count_triplets
from egtr.extras import require_extra


@dataclass
class DatasetSummary:
    """Counts over one split's raw annotations.

    Attributes:
        split: split name.
        num_images, num_objects, num_relations: totals.
        class_names, predicate_names: names (C and R entries).
        class_counts: (C,) objects per class.
        predicate_counts: (R,) relations per predicate.
        triplet_counts: (C+1, C+1, R) the frequency-bias counts F.
        objects_per_image, relations_per_image: (num_images,) per-image counts.
    """

    split: str
    num_images: int
    num_objects: int
    num_relations: int
    class_names: list[str]
    predicate_names: list[str]
    class_counts: np.ndarray
    predicate_counts: np.ndarray
    triplet_counts: np.ndarray
    objects_per_image: np.ndarray
    relations_per_image: np.ndarray

    def top_triplets(self, count: int = 20) -> list[tuple[str, str, str, int]]:
        """The most frequent (subject, predicate, object) name triplets with their counts."""
        flat = self.triplet_counts.reshape(-1)
        order = np.argsort(-flat, kind="stable")[:count]
        rows = []
        for index in order:
            if flat[index] == 0:
                break
            subject, obj, predicate = np.unravel_index(index, self.triplet_counts.shape)
            rows.append(
                (self.class_names[subject], self.predicate_names[predicate], self.class_names[obj], int(flat[index]))
            )
        return rows


def summarize_dataset(dataset: SceneGraphDataset) -> DatasetSummary:
    """Count objects, relations and triplets of a dataset split without decoding images."""
    labels = [annotation.labels for annotation in dataset.annotations]
    relations = [annotation.relations for annotation in dataset.annotations]
    all_labels = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    all_relations = np.concatenate(relations) if relations else np.zeros((0, 3), dtype=np.int64)
    return DatasetSummary(
        split=dataset.split,
        num_images=len(dataset),
        num_objects=int(all_labels.size),
        num_relations=len(all_relations),
        class_names=dataset.class_names,
        predicate_names=dataset.predicate_names,
        class_counts=np.bincount(all_labels, minlength=dataset.num_labels),
        predicate_counts=np.bincount(all_relations[:, 2], minlength=dataset.num_rel_labels),
        triplet_counts=count_triplets(dataset, dataset.num_labels, dataset.num_rel_labels).numpy(),
        objects_per_image=np.asarray([len(item) for item in labels], dtype=np.int64),
        relations_per_image=np.asarray([len(item) for item in relations], dtype=np.int64),
    )


def format_summary(summary: DatasetSummary, top: int = 20) -> str:
    """Plain-text report (what `egtr data stats` prints)."""
    totals = (
        f"split {summary.split}: {summary.num_images} images, {summary.num_objects} objects, "
        f"{summary.num_relations} relations"
    )
    per_image = (
        f"objects per image: mean {summary.objects_per_image.mean():.2f}, max {summary.objects_per_image.max()}; "
        f"relations per image: mean {summary.relations_per_image.mean():.2f}, max {summary.relations_per_image.max()}, "
        f"images without relations: {int((summary.relations_per_image == 0).sum())}"
    )
    lines = [totals, per_image, "", "objects per class:"]
    lines += [f"  {count:8d}  {name}" for name, count in zip(summary.class_names, summary.class_counts.tolist())]
    lines += ["", "relations per predicate:"]
    lines += [
        f"  {count:8d}  {name}" for name, count in zip(summary.predicate_names, summary.predicate_counts.tolist())
    ]
    lines += ["", f"most frequent triplets (top {top}):"]
    lines += [
        f"  {count:8d}  {subject} -- {predicate} --> {obj}"
        for subject, predicate, obj, count in summary.top_triplets(top)
    ]
    return "\n".join(lines)


def plot_summary(summary: DatasetSummary, path: str | Path) -> Path:
    """Write a PNG with the class and predicate histograms (needs matplotlib, the `viz` extra)."""
    require_extra("viz", "plotting histograms")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 1, figsize=(max(8, 0.12 * summary.class_counts.size + 4), 9))
    for axis, names, counts, title in (
        (axes[0], summary.class_names, summary.class_counts, "objects per class"),
        (axes[1], summary.predicate_names, summary.predicate_counts, "relations per predicate"),
    ):
        positions = np.arange(len(names))
        axis.bar(positions, counts)
        axis.set_xticks(positions)
        axis.set_xticklabels(names, rotation=90, fontsize=7)
        axis.set_title(f"{summary.split}: {title}")
        axis.set_yscale("log" if counts.max(initial=0) > 100 * max(1, counts.min(initial=0)) else "linear")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
