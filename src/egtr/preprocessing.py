"""How images are prepared for a model: the evaluation resize and the normalisation, and where they are recorded.

The one home of the paper's defaults (shorter side 800, longer side <= 1333, ImageNet mean/std) and of
`PreprocessorConfig`, which model directories carry as `preprocessor_config.json` in the layout of transformers'
`DeformableDetrImageProcessor`. Official artifacts have no such file: their preprocessing is the defaults.

`resolve_preprocessing` is the rule every command follows: sizes the user gives win, then the model's recorded
file, then the paper's defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

from egtr.errors import CheckpointError, ConfigError
from egtr.fileio import JsonObject, read_json, write_json

PREPROCESSOR_NAME = "preprocessor_config.json"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PAPER_SHORTEST_EDGE = 800  # the paper's evaluation resize (reference §4.2)
PAPER_LONGEST_EDGE = 1333
FPS_SHORTEST_EDGE = 600  # the resize of the paper's FPS measurement (reference §6.3)
FPS_LONGEST_EDGE = 1000

# What transformers' image processors record for the steps our pipeline always takes (egtr.data.transforms):
# PIL bilinear resize (PIL.Image.BILINEAR == 2), scaling by 1/255, mean/std normalisation.
_PIL_BILINEAR = 2
_RESCALE_FACTOR = 1 / 255
# Builds the error for one field of a preprocessor file: (field, problem) -> error naming the file and the field.
FieldError = Callable[[str, str], CheckpointError]


@dataclass(frozen=True)
class PreprocessorConfig:
    """The evaluation resize (shorter side to `shortest_edge`, longer side capped at `longest_edge`) and the
    per-channel (RGB) normalisation of pixels in [0, 1]. Defaults: the paper's, i.e. an official artifact's."""

    shortest_edge: int = PAPER_SHORTEST_EDGE
    longest_edge: int = PAPER_LONGEST_EDGE
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        for name in ("shortest_edge", "longest_edge"):
            value = getattr(self, name)
            if not _is_size(value):
                option = "--size" if name == "shortest_edge" else "--max-size"
                raise ConfigError(f"image size {option} must be a positive integer, got {value!r}")
        if len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ConfigError(f"image_std must be 3 values > 0, got {self.image_std}")

    def with_sizes(self, size: int | None = None, max_size: int | None = None) -> PreprocessorConfig:
        """A copy where each size the user gave explicitly (not None) replaces the recorded one."""
        return dataclasses.replace(
            self,
            shortest_edge=self.shortest_edge if size is None else size,
            longest_edge=self.longest_edge if max_size is None else max_size,
        )

    def to_dict(self) -> JsonObject:
        return {
            "image_processor_type": "DeformableDetrImageProcessor",
            "do_resize": True,
            "size": {"shortest_edge": self.shortest_edge, "longest_edge": self.longest_edge},
            "resample": _PIL_BILINEAR,
            "do_rescale": True,
            "rescale_factor": _RESCALE_FACTOR,
            "do_normalize": True,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "do_pad": True,
            "format": "coco_detection",
        }

    @classmethod
    def from_dict(cls, values: object, source: str = PREPROCESSOR_NAME) -> PreprocessorConfig:
        """Read the transformers layout; raises CheckpointError naming `source` and the field for anything our
        pipeline cannot reproduce (another resize rule or interpolation, no normalisation, ...)."""

        def fail(field_name: str, problem: str) -> CheckpointError:
            return CheckpointError(f"{source}: field {field_name!r} {problem}")

        if not isinstance(values, dict):
            raise CheckpointError(f"{source}: expected a JSON object, got {type(values).__name__}")
        for flag in ("do_resize", "do_rescale", "do_normalize"):
            if values.get(flag, True) is not True:
                raise fail(flag, f"is {values[flag]!r}; egtr always resizes, rescales and normalises (true)")
        if values.get("resample", _PIL_BILINEAR) != _PIL_BILINEAR:
            raise fail("resample", f"is {values['resample']!r}; egtr resizes with PIL bilinear ({_PIL_BILINEAR})")
        factor = values.get("rescale_factor", _RESCALE_FACTOR)
        if not isinstance(factor, (int, float)) or isinstance(factor, bool) or abs(factor - _RESCALE_FACTOR) > 1e-9:
            raise fail("rescale_factor", f"is {factor!r}; egtr scales pixels by 1/255")
        shortest, longest = _read_size(values, fail)
        mean = _read_triple(values, "image_mean", IMAGENET_MEAN, fail)
        std = _read_triple(values, "image_std", IMAGENET_STD, fail)
        if min(std) <= 0:
            raise fail("image_std", f"is {list(std)}; every value must be > 0")
        return cls(shortest, longest, mean, std)

    def save(self, directory: str | Path) -> Path:
        """Write `directory/preprocessor_config.json` atomically."""
        return write_json(Path(directory) / PREPROCESSOR_NAME, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> PreprocessorConfig:
        """Read a `preprocessor_config.json` file (errors name the file and the field)."""
        return cls.from_dict(read_json(path, CheckpointError), str(path))


def load_preprocessor_config(directory: Path | None) -> PreprocessorConfig | None:
    """The preprocessing recorded in a model directory, or None when it has none (official artifacts)."""
    if directory is None or not (directory / PREPROCESSOR_NAME).is_file():
        return None
    return PreprocessorConfig.load(directory / PREPROCESSOR_NAME)


def resolve_preprocessing(
    recorded: PreprocessorConfig | None,
    size: int | None = None,
    max_size: int | None = None,
    default: PreprocessorConfig | None = None,
) -> PreprocessorConfig:
    """The rule of every command: explicit sizes win, then the model's recorded file, then `default` (the paper's
    evaluation preprocessing unless given)."""
    return (recorded or default or PreprocessorConfig()).with_sizes(size, max_size)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_size(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _read_size(values: JsonObject, fail: FieldError) -> tuple[int, int]:
    """(shortest edge, longest edge) from `size`; older transformers files write `size: S` + `max_size: L`."""
    if "size" not in values:
        raise fail("size", 'is missing; expected {"shortest_edge": S, "longest_edge": L}')
    size = values["size"]
    max_size = values.get("max_size")
    if _is_size(size) and _is_size(max_size):
        return size, max_size
    if not isinstance(size, dict) or set(size) != {"shortest_edge", "longest_edge"}:
        raise fail(
            "size",
            f'is {size!r}; expected {{"shortest_edge": S, "longest_edge": L}} (egtr resizes the shorter '
            "side and caps the longer one; fixed heights/widths are not supported)",
        )
    for key in ("shortest_edge", "longest_edge"):
        if not _is_size(size[key]):
            raise fail(f"size.{key}", f"is {size[key]!r}; expected a positive integer")
    return size["shortest_edge"], size["longest_edge"]


def _read_triple(
    values: JsonObject, name: str, default: tuple[float, float, float], fail: FieldError
) -> tuple[float, float, float]:
    """Three per-channel floats (RGB); absent means the default (transformers' DETR processors do the same)."""
    value = values.get(name, default)
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(_is_number(item) for item in value):
        raise fail(name, f"is {value!r}; expected 3 numbers (R, G, B)")
    return (float(value[0]), float(value[1]), float(value[2]))
