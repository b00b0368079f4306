"""Transforms on `(image, target)` pairs, after DETR's `datasets/transforms.py` (Carion et al., ECCV 2020).

Inside the pipeline a target holds absolute pixel boxes `boxes` (n, 4) float32 xyxy; the last step,
`ToTensorNormalize`, turns the image into a normalised (3, H, W) tensor and the boxes into normalised cxcywh
relative to the resized image, and records `size`. There is no crop: a crop would drop boxes and break the relation
indices (reference §4.2, §11.1 item 16).

Randomness comes from `torch` (not `random`/`numpy`) so that DataLoader workers get distinct, seedable streams.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from egtr.box_ops import box_xyxy_to_cxcywh
from egtr.data.config import DataConfig
from egtr.preprocessing import PreprocessorConfig

Target = dict[str, Any]
Transform = Callable[[Image.Image, Target], tuple[Any, Target]]


def get_size_with_aspect_ratio(image_size: tuple[int, int], size: int, max_size: int | None = None) -> tuple[int, int]:
    """Output (height, width) for shorter side `size` with the longer side capped at `max_size`.

    Same rounding rule as DETR's `get_size_with_aspect_ratio` (and HF's DetrFeatureExtractor, which the original
    uses at evaluation): the capped size is rounded, the longer side is truncated.

    Args:
        image_size: (width, height) of the input, as PIL reports it.
        size: requested shorter side.
        max_size: cap on the longer side, or None.
    """
    width, height = image_size
    if max_size is not None:
        min_original_size = float(min(width, height))
        max_original_size = float(max(width, height))
        if max_original_size / min_original_size * size > max_size:
            size = round(max_size * min_original_size / max_original_size)
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def resize(image: Image.Image, target: Target, size: int, max_size: int | None) -> tuple[Image.Image, Target]:
    """Resize with PIL bilinear (as the original) and scale the xyxy pixel boxes by the same ratios."""
    new_height, new_width = get_size_with_aspect_ratio(image.size, size, max_size)
    resized = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
    ratio_width = new_width / image.width
    ratio_height = new_height / image.height
    target = dict(target)
    target["boxes"] = target["boxes"] * torch.as_tensor(
        [ratio_width, ratio_height, ratio_width, ratio_height], dtype=torch.float32
    )
    return resized, target


def hflip(image: Image.Image, target: Target) -> tuple[Image.Image, Target]:
    """Mirror the image and the boxes; predicates are kept as they are (the original does the same)."""
    flipped = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    target = dict(target)
    boxes = target["boxes"]
    target["boxes"] = boxes[:, [2, 1, 0, 3]] * torch.as_tensor([-1, 1, -1, 1]) + torch.as_tensor(
        [image.width, 0, image.width, 0]
    )
    return flipped, target


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Image.Image, target: Target) -> tuple[Any, Target]:
        for transform in self.transforms:
            image, target = transform(image, target)
        return image, target


class RandomHorizontalFlip:
    def __init__(self, probability: float = 0.5) -> None:
        self.probability = probability

    def __call__(self, image: Image.Image, target: Target) -> tuple[Image.Image, Target]:
        if torch.rand(()).item() < self.probability:
            return hflip(image, target)
        return image, target


class Resize:
    """Resize to shorter side `size`, longer side capped at `max_size` (evaluation)."""

    def __init__(self, size: int, max_size: int | None = None) -> None:
        self.size = size
        self.max_size = max_size

    def __call__(self, image: Image.Image, target: Target) -> tuple[Image.Image, Target]:
        return resize(image, target, self.size, self.max_size)


class RandomResize:
    """Resize to a shorter side drawn uniformly from `sizes`, longer side capped at `max_size`."""

    def __init__(self, sizes: Sequence[int], max_size: int | None = None) -> None:
        self.sizes = list(sizes)
        self.max_size = max_size

    def __call__(self, image: Image.Image, target: Target) -> tuple[Image.Image, Target]:
        size = self.sizes[int(torch.randint(len(self.sizes), ()).item())]
        return resize(image, target, size, self.max_size)


class RandomSelect:
    """Apply `first` with probability 1 - `probability_second`, else `second`."""

    def __init__(self, first: Transform, second: Transform, probability_second: float = 0.5) -> None:
        self.first = first
        self.second = second
        self.probability_second = probability_second

    def __call__(self, image: Image.Image, target: Target) -> tuple[Any, Target]:
        if torch.rand(()).item() < self.probability_second:
            return self.second(image, target)
        return self.first(image, target)


class ToTensorNormalize:
    """PIL RGB -> (3, H, W) float32 normalised tensor; boxes -> normalised cxcywh; sets `size` = [H, W]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.as_tensor(std, dtype=torch.float32)[:, None, None]

    def __call__(self, image: Image.Image, target: Target) -> tuple[torch.Tensor, Target]:
        array = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3)
        pixel_values = torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (3, H, W)
        pixel_values = (pixel_values - self.mean) / self.std
        target = dict(target)
        height, width = pixel_values.shape[-2:]
        scale = torch.as_tensor([width, height, width, height], dtype=torch.float32)
        target["boxes"] = (box_xyxy_to_cxcywh(target["boxes"]) / scale).to(torch.float32)
        target["size"] = torch.as_tensor([height, width], dtype=torch.int64)
        return pixel_values, target


def make_transforms(config: DataConfig, train: bool) -> Compose:
    """The one place the image pipelines are written (reference §4.2).

    Args:
        config: sizes, flip probability and normalisation.
        train: training pipeline (flip + random resize, no crop) or evaluation pipeline (one fixed resize).

    Returns:
        A callable `(PIL image, target) -> (pixel_values (3, H, W), target)`.
    """
    if not train:
        return make_eval_transform(config.preprocessor())
    normalize = ToTensorNormalize(config.image_mean, config.image_std)
    final_resize = RandomResize(config.train_sizes, config.train_max_size)
    resize_step: Transform = final_resize
    if config.train_intermediate_prob > 0:
        # Original augmentor (NoCrop variant): RandomSelect(resize, [resize to 400/500/600 -> resize]).
        two_step = Compose([RandomResize(config.train_intermediate_sizes), final_resize])
        resize_step = RandomSelect(final_resize, two_step, config.train_intermediate_prob)
    return Compose([RandomHorizontalFlip(config.horizontal_flip_prob), resize_step, normalize])


def make_eval_transform(preprocessor: PreprocessorConfig) -> Compose:
    """The test-time pipeline of a model: one fixed resize, then normalisation (what `Predictor`, evaluation,
    `egtr info` and the benchmark all run)."""
    return Compose(
        [
            Resize(preprocessor.shortest_edge, preprocessor.longest_edge),
            ToTensorNormalize(preprocessor.image_mean, preprocessor.image_std),
        ]
    )
