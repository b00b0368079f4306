"""Images -> model inputs: the first of inference's three parts (images, model runtime, post-processing).

`ImageProcessor` plays the role of an HF image processor: it decodes any image source (`egtr.images.load_image`:
paths, bytes, PIL, arrays, tensors; EXIF, 16-bit, CMYK, pixel limit), applies the model's evaluation resize and
normalisation (`egtr.data.transforms.make_eval_transform` with the model's `PreprocessorConfig`), and pads a batch
into `pixel_values` + `pixel_mask`. It knows nothing of the network, so every runtime gets the same inputs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from egtr.data.base import collate_fn
from egtr.data.transforms import make_eval_transform
from egtr.errors import ImageError
from egtr.images import DEFAULT_MAX_PIXELS, ImageSource, load_image
from egtr.preprocessing import PreprocessorConfig

__all__ = ["ImageProcessor", "ModelInputs", "PreparedImage", "pad_to_min_size"]


@dataclass
class PreparedImage:
    """An image ready for the model: `pixel_values` (3, h, w) normalised and resized, `size_hw` of the original,
    and the decoded original `image` (kept for drawing)."""

    pixel_values: torch.Tensor
    size_hw: tuple[int, int]
    path: str | None = None
    image: Image.Image | None = None


@dataclass
class ModelInputs:
    """A padded batch: `pixel_values` (B, 3, H, W) float32, `pixel_mask` (B, H, W) int64 (1 = real pixel)."""

    pixel_values: torch.Tensor
    pixel_mask: torch.Tensor


class ImageProcessor:
    """Decode, resize and normalise images for an EGTR model, and pad them into batches.

    Args:
        config: resize and normalisation; default: the paper's (800 / 1333, ImageNet).
        max_pixels: refuse larger images (decompression bombs; None: no limit).
    """

    def __init__(self, config: PreprocessorConfig | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self.config = config or PreprocessorConfig()
        self.max_pixels = max_pixels
        self._transform = make_eval_transform(self.config)

    def prepare(self, image: ImageSource) -> PreparedImage:
        """Decode (paths, bytes) or convert (PIL, arrays, tensors) one image to RGB, resize and normalise it.

        Raises:
            egtr.errors.ImageError: a missing or unreadable file, an unsupported array, an image over the pixel
                limit or one too thin to resize; the message names the image.
        """
        path = os.path.abspath(image) if isinstance(image, (str, Path)) else None
        picture = load_image(image, max_pixels=self.max_pixels)
        empty_target = {"boxes": torch.zeros(0, 4), "class_labels": torch.zeros(0, dtype=torch.int64)}
        try:
            pixel_values, _ = self._transform(picture, empty_target)
        except (ValueError, ZeroDivisionError) as error:  # e.g. 4000x3: the shorter side rounds to nothing
            raise ImageError(f"{path or type(image).__name__}: cannot be resized for the model ({error})") from error
        return PreparedImage(pixel_values, (picture.height, picture.width), path=path, image=picture)

    __call__ = prepare

    @staticmethod
    def collate(batch: Sequence[PreparedImage], min_size: int = 1) -> ModelInputs:
        """Pad the images of `batch` (zeros at the bottom and right, mask 0) to a common size of at least
        `min_size` pixels a side (an exported graph has a smallest size it was exported for)."""
        collated = collate_fn([(item.pixel_values, {}) for item in batch])
        return pad_to_min_size(ModelInputs(collated["pixel_values"], collated["pixel_mask"]), min_size)


def pad_to_min_size(inputs: ModelInputs, min_size: int) -> ModelInputs:
    """Pad a batch with masked zeros at the bottom and right until both sides are at least `min_size`."""
    height, width = inputs.pixel_mask.shape[-2:]
    pad = (0, max(0, min_size - width), 0, max(0, min_size - height))
    if not any(pad):
        return inputs
    return ModelInputs(
        torch.nn.functional.pad(inputs.pixel_values, pad), torch.nn.functional.pad(inputs.pixel_mask, pad)
    )
