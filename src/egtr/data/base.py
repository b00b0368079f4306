"""`SceneGraphDataset`: image loading + target preparation shared by every dataset layout.

The layout-specific subclasses (`VisualGenomeDataset`, `OpenImagesDataset`) only parse annotation files into a
list of `ImageAnnotation`; everything that happens per item (decode, relation sampling, box clipping/dropping with
relation remapping, transforms) is here, so all layouts (and the synthetic world) share one code path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from egtr.data.config import IMAGENET_MEAN, IMAGENET_STD
from egtr.data.targets import ImageAnnotation, prepare_target, sample_one_predicate_per_pair
from egtr.data.transforms import ToTensorNormalize
from egtr.errors import DataError
from egtr.fileio import read_json as read_json_file
from egtr.images import load_image

logger = logging.getLogger(__name__)


def read_json(path: Path) -> Any:
    """Load a JSON file; a missing or malformed file raises `DataError` naming it (and the position of the error)."""
    return read_json_file(path, DataError)


class SceneGraphDataset(Dataset):
    """Images with boxes, classes and relation triplets; items follow the shared target convention.

    An item is `(pixel_values (3, H, W) float32, target)` with target keys `boxes` (n, 4) normalised cxcywh,
    `class_labels` (n,), `relations` (M, 3) [subject, object, predicate], `image_id` (), `orig_size` (2,),
    `size` (2,) (see `egtr.data.targets.prepare_target`).

    Args:
        annotations: parsed per-image annotations, in dataset order.
        image_dir: folder the `file_name`s are relative to.
        class_names: C object class names (index = 0-based label).
        predicate_names: R predicate names (index = 0-based predicate).
        transforms: `(PIL image, target) -> (tensor, target)`, e.g. from `make_transforms`; None only converts and
            normalises (ImageNet statistics) at the original size.
        sample_one_predicate: draw one predicate per (subject, object) pair at every load (OI training).
        exif_transpose: apply the EXIF orientation when decoding.
        kind: "vg" or "oi"; split: split name (for messages and caches).
    """

    def __init__(
        self,
        annotations: list[ImageAnnotation],
        image_dir: Path,
        class_names: list[str],
        predicate_names: list[str],
        transforms: Callable[..., tuple[Any, dict[str, Any]]] | None = None,
        sample_one_predicate: bool = False,
        exif_transpose: bool = True,
        kind: str = "vg",
        split: str = "",
    ) -> None:
        self.annotations = annotations
        self.image_dir = Path(image_dir)
        self.class_names = list(class_names)
        self.predicate_names = list(predicate_names)
        self.transforms = transforms if transforms is not None else ToTensorNormalize(IMAGENET_MEAN, IMAGENET_STD)
        self.sample_one_predicate = sample_one_predicate
        self.exif_transpose = exif_transpose
        self.kind = kind
        self.split = split
        for annotation in annotations:
            annotation.check(self.num_labels, self.num_rel_labels)

    @property
    def num_labels(self) -> int:
        """Number of object classes C."""
        return len(self.class_names)

    @property
    def num_rel_labels(self) -> int:
        """Number of predicates R."""
        return len(self.predicate_names)

    def __len__(self) -> int:
        return len(self.annotations)

    def image_path(self, index: int) -> Path:
        return self.image_dir / self.annotations[index].file_name

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        annotation = self.annotations[index]
        image = load_image(self.image_dir / annotation.file_name, exif_transpose=self.exif_transpose)
        if annotation.width is not None and (image.width, image.height) != (annotation.width, annotation.height):
            # Boxes are clipped to the decoded image; a size mismatch usually means a wrong file or EXIF rotation.
            logger.warning(
                "%s: annotation says %dx%d but %s decodes to %dx%d (boxes are clipped to the decoded image)",
                annotation.source,
                annotation.width,
                annotation.height,
                annotation.file_name,
                image.width,
                image.height,
            )
        relations = annotation.relations
        if self.sample_one_predicate:
            relations = sample_one_predicate_per_pair(relations)
        target = prepare_target(annotation, image.width, image.height, relations)
        pixel_values, target = self.transforms(image, target)
        return pixel_values, target

    def annotation_targets(self) -> Iterator[dict[str, np.ndarray]]:
        """Raw per-image `class_labels` and `relations` without decoding images (for statistics, as the original)."""
        for annotation in self.annotations:
            yield {"class_labels": annotation.labels, "relations": annotation.relations}


def collate_fn(batch: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> dict[str, Any]:
    """Pad images to the largest height/width in the batch (zeros at bottom/right) and build the pixel mask.

    Args:
        batch: list of dataset items `(pixel_values (3, H_i, W_i), target)`.

    Returns:
        dict with `pixel_values` (B, 3, H_max, W_max) float32, `pixel_mask` (B, H_max, W_max) int64 (1 = real
        pixel, 0 = padding) and `labels` (list of the B target dicts).
    """
    if not batch:
        raise ValueError("collate_fn got an empty batch")
    max_height = max(pixel_values.shape[1] for pixel_values, _ in batch)
    max_width = max(pixel_values.shape[2] for pixel_values, _ in batch)
    channels = batch[0][0].shape[0]
    pixel_values = torch.zeros((len(batch), channels, max_height, max_width), dtype=torch.float32)
    pixel_mask = torch.zeros((len(batch), max_height, max_width), dtype=torch.int64)
    for index, (image, _) in enumerate(batch):
        pixel_values[index, :, : image.shape[1], : image.shape[2]] = image
        pixel_mask[index, : image.shape[1], : image.shape[2]] = 1
    return {"pixel_values": pixel_values, "pixel_mask": pixel_mask, "labels": [target for _, target in batch]}
