"""`build_dataset`: DataConfig + split -> dataset with the right transforms (reference §4.2, §7)."""

from __future__ import annotations

from pathlib import Path

from egtr.data.base import SceneGraphDataset
from egtr.data.config import DataConfig
from egtr.data.open_images import OpenImagesDataset
from egtr.data.transforms import make_transforms
from egtr.data.visual_genome import VisualGenomeDataset


def build_dataset(config: DataConfig, split: str, train: bool, num_queries: int | None = None) -> SceneGraphDataset:
    """Build a dataset split.

    Args:
        config: dataset kind, root and transform settings.
        split: "train", "val" or "test".
        train: use the training augmentation (flip + random resize); otherwise the fixed evaluation resize. The OI
            training filters follow the split (train split only), as in the original.
        num_queries: the model's query count: Open Images training drops images with more boxes than this
            (reference §7.2); None keeps every image.

    Returns:
        A `SceneGraphDataset` (`VisualGenomeDataset` or `OpenImagesDataset`) with `class_names` and
        `predicate_names`.
    """
    config.validate()
    if not config.root:
        raise ValueError("DataConfig.root is empty: set it to the dataset folder")
    transforms = make_transforms(config, train=train)
    root = Path(config.root)
    if config.kind == "vg":
        return VisualGenomeDataset(root, split, transforms, exif_transpose=config.exif_transpose)
    return OpenImagesDataset(
        root,
        split,
        transforms,
        num_queries=num_queries,
        filter_duplicate_rels=config.oi_filter_duplicate_rels,
        sample_one_predicate=config.oi_sample_one_predicate,
        box_plus_one=config.oi_box_plus_one,
        exif_transpose=config.exif_transpose,
    )
