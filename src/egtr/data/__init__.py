"""Datasets, transforms and statistics for scene graph generation.

Visual Genome in the RelTR layout (our native format, also written by the synthetic scene world), Open Images V6 in
the SGTR layout, `DataConfig` + `build_dataset` + `make_transforms` + `collate_fn`, the triplet frequency statistics
of the frequency bias, dataset validation and summaries. Items follow the shared target convention documented in
`SceneGraphDataset`.
"""

from egtr.data.base import SceneGraphDataset, collate_fn
from egtr.data.build import build_dataset
from egtr.data.config import DataConfig
from egtr.data.open_images import OpenImagesDataset
from egtr.data.statistics import count_triplets, frequency_bias_tables, load_or_compute_triplet_counts
from egtr.data.transforms import make_transforms
from egtr.data.visual_genome import VisualGenomeDataset
from egtr.errors import DataError

__all__ = [
    "DataConfig",
    "DataError",
    "OpenImagesDataset",
    "SceneGraphDataset",
    "VisualGenomeDataset",
    "build_dataset",
    "collate_fn",
    "count_triplets",
    "frequency_bias_tables",
    "load_or_compute_triplet_counts",
    "make_transforms",
]
