"""`DataConfig`: which dataset to read and how to resize/augment it (reference §4.2, §7).

The dataset kind is an explicit field ("vg" or "oi") instead of a substring of the path (original quirk Q16, fixed).
All transform sizes are config values so that small synthetic images can be trained and evaluated at their own size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from egtr.config import check_fields
from egtr.preprocessing import IMAGENET_MEAN, IMAGENET_STD, PAPER_LONGEST_EDGE, PAPER_SHORTEST_EDGE, PreprocessorConfig

DATASET_KINDS = ("vg", "oi")
SPLITS = ("train", "val", "test")  # the splits of every dataset layout, in this order


def check_split(split: str) -> str:
    """`split` when it is one of `SPLITS`; otherwise a ValueError naming the choices."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def _default_train_sizes() -> tuple[int, ...]:
    # DETR / EGTR multi-scale training: shorter side 480, 512, ..., 800.
    return tuple(range(480, 801, 32))


@dataclass
class DataConfig:
    """Dataset location, dataset kind and transform sizes.

    Defaults are the original EGTR settings for Visual Genome; `for_synthetic` gives sizes that fit the small
    images of the synthetic scene world.
    """

    kind: str = "vg"  # "vg": RelTR layout (our native format); "oi": SGTR Open Images V6 layout
    root: str = ""  # dataset folder (holds images/ and the annotation files)
    train_sizes: tuple[int, ...] = field(default_factory=_default_train_sizes)  # random shorter side in training
    train_max_size: int = 1333  # cap on the longer side in training
    # Original quirk of the augmentor (reference §4.2): with probability `train_intermediate_prob` the image is first
    # resized to a shorter side drawn from `train_intermediate_sizes`, then to the final random size (two resamplings).
    train_intermediate_sizes: tuple[int, ...] = (400, 500, 600)
    train_intermediate_prob: float = 0.5
    horizontal_flip_prob: float = 0.5
    eval_size: int = PAPER_SHORTEST_EDGE  # shorter side at evaluation
    eval_max_size: int = PAPER_LONGEST_EDGE  # cap on the longer side at evaluation
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    oi_filter_duplicate_rels: bool = True  # OI train: remove exact duplicate (s, o, p) triplets
    oi_sample_one_predicate: bool = True  # OI train: one random predicate per (s, o) pair at every load
    oi_box_plus_one: bool = True  # OI boxes become [x1, y1, x2 + 1, y2 + 1] like the original (quirk Q5, keep)
    exif_transpose: bool = True  # apply the EXIF orientation before anything else (boxes refer to the shown image)

    def validate(self) -> DataConfig:
        """Raise ValueError for inconsistent values; returns self."""
        if self.kind not in DATASET_KINDS:
            raise ValueError(f"DataConfig.kind must be one of {DATASET_KINDS}, got {self.kind!r}")
        if not self.train_sizes or min(self.train_sizes) < 1:
            raise ValueError(f"DataConfig.train_sizes must be positive sizes, got {self.train_sizes}")
        for name in ("train_max_size", "eval_size", "eval_max_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"DataConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("train_intermediate_prob", "horizontal_flip_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"DataConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.train_intermediate_prob > 0 and not self.train_intermediate_sizes:
            raise ValueError("DataConfig.train_intermediate_sizes is empty but train_intermediate_prob > 0")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ValueError("DataConfig.image_mean/image_std need 3 values, std > 0")
        return self

    @classmethod
    def for_synthetic(cls, root: str, image_size: int = 192, **overrides: Any) -> DataConfig:
        """Sizes for the synthetic scene world: train around `image_size`, evaluate at `image_size`.

        No intermediate resize (the images are already small); the longer-side caps are loose because the synthetic
        images are square. No horizontal flip: "left of" and "touching" are directional and a flip does not swap them.
        """
        step = max(1, image_size // 8)
        train_sizes = tuple(range(image_size - 2 * step, image_size + 2 * step + 1, step))
        values: dict[str, Any] = {
            "kind": "vg",
            "root": root,
            "train_sizes": train_sizes,
            "train_max_size": 2 * (image_size + 2 * step),
            "train_intermediate_prob": 0.0,
            "horizontal_flip_prob": 0.0,
            "eval_size": image_size,
            "eval_max_size": 2 * image_size,
        }
        values.update(overrides)
        return cls(**values).validate()

    @classmethod
    def for_evaluation(cls, preprocessor: PreprocessorConfig, **values: Any) -> DataConfig:
        """A config whose evaluation pipeline is `preprocessor` (`values`: kind, root, ...)."""
        return cls(
            eval_size=preprocessor.shortest_edge,
            eval_max_size=preprocessor.longest_edge,
            image_mean=preprocessor.image_mean,
            image_std=preprocessor.image_std,
            **values,
        ).validate()

    def preprocessor(self) -> PreprocessorConfig:
        """The test-time preprocessing of this config (its evaluation resize, not the random training sizes)."""
        mean, std = self.image_mean, self.image_std
        return PreprocessorConfig(
            self.eval_size, self.eval_max_size, (mean[0], mean[1], mean[2]), (std[0], std[1], std[2])
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataConfig:
        """Inverse of `to_dict` (lists from JSON become tuples); unknown keys are an error."""
        converted: dict[str, Any] = {
            key: tuple(value) if isinstance(value, list) else value for key, value in check_fields(cls, values).items()
        }
        return cls(**converted).validate()
