"""Reading and writing EGTR weights in every supported layout.

Layouts (reference §2.8):
- ours: a directory with `config.json` (key `egtr_config`) + `model.safetensors`;
- the released EGTR artifact: a directory with the HF-style `config.json` + `checkpoints/epoch=EE-...ckpt` (PyTorch
  Lightning 1.6 format, keys prefixed `model.`, possibly float16); the file with the largest epoch is the best one;
- a single official `.ckpt` file (its `config.json` is looked up next to it or one folder up);
- the released pre-trained detector: `config.json` + `pytorch_model.bin` (no relation head). It is not an EGTR model;
  `load_detector_weights` loads it into a model before relation training.

Our directories may also hold `preprocessor_config.json` (`PreprocessorConfig`): the resize and normalisation the
model was trained and validated with, in the layout of transformers' DETR / Deformable DETR image processors. The
official artifacts have none; their preprocessing is the paper's (shorter side 800, longer side <= 1333, ImageNet).

Pickled files are only read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from egtr.config import EGTRConfig, read_json
from egtr.data.config import IMAGENET_MEAN, IMAGENET_STD, DataConfig
from egtr.models.egtr import EGTR

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
DETECTOR_WEIGHTS_NAME = "pytorch_model.bin"
PREPROCESSOR_NAME = "preprocessor_config.json"
RELATION_HEAD_PREFIXES = (
    "proj_q.",
    "proj_k.",
    "final_sub_proj.",
    "final_obj_proj.",
    "rel_predictor_gate.",
    "rel_predictor.",
    "connectivity_layer.",
    "triplet_dist",
    "rel_dist",
)


class CheckpointError(ValueError):
    """A file that is not (or does not fit) the expected checkpoint; the message says what it looks like."""


@dataclass
class LoadReport:
    """What a non-strict load did: keys loaded, keys the file lacked, keys it had extra, shapes that did not fit."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"loaded {len(self.loaded)} tensors; new (not in file) {len(self.missing)}; "
            f"ignored (not in model) {len(self.unexpected)}; shape mismatch {len(self.mismatched)}"
        )


# ---------------------------------------------------------------------- reading raw state dicts
def _torch_load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors, truncated files, non-tensor payloads
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch checkpoint with weights_only=True ({error})"
        ) from error


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a Lightning `.ckpt`, a `.bin`/`.pth`/`.pt` or a `.safetensors` file.

    The Lightning `model.` prefix is stripped, floating tensors are upcast to float32 (the released checkpoints
    store float16 values that are exactly the float32 weights).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state_dict = load_file(str(path))
    else:
        payload = _torch_load(path)
        if isinstance(payload, dict) and "state_dict" in payload and isinstance(payload["state_dict"], dict):
            state_dict = payload["state_dict"]
            # Lightning stores the wrapped module under the attribute `model`: strip that first prefix.
            if state_dict and all(key.startswith("model.") for key in state_dict):
                state_dict = {key[len("model.") :]: value for key, value in state_dict.items()}
        elif isinstance(payload, dict) and "model" in payload and isinstance(payload["model"], dict):
            state_dict = payload["model"]  # DETR/torchvision-style {"model": state_dict}
        elif isinstance(payload, dict):
            state_dict = payload
        else:
            raise CheckpointError(f"{path}: holds a {type(payload).__name__}, not a state dict")
    if not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
        raise CheckpointError(f"{path}: not every entry is a tensor; is this a state dict?")
    return {key: value.float() if value.is_floating_point() else value for key, value in state_dict.items()}


def describe_state_dict(state_dict: dict[str, torch.Tensor]) -> str:
    """A one-line guess of what a state dict is, for error messages."""
    keys = list(state_dict)
    has_relation_head = any(key.startswith(("proj_q.", "rel_predictor.")) for key in keys)
    has_detector = any(key.startswith("model.encoder.") for key in keys)
    if has_detector and not has_relation_head:
        return "a Deformable DETR detector checkpoint without EGTR's relation head (e.g. the released pre-trained DETR)"
    if has_detector and has_relation_head:
        return "an EGTR checkpoint"
    if any(key.startswith(("layer1.", "conv1.")) for key in keys):
        return "a bare ResNet (ImageNet backbone) checkpoint"
    if any("transformer." in key for key in keys):
        return "a checkpoint of another DETR implementation (keys like 'transformer.*')"
    return f"an unknown state dict ({len(keys)} tensors, first key {keys[0]!r})" if keys else "an empty state dict"


def check_state_dict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Strict key and shape check; raises CheckpointError listing missing, unexpected and mismatched keys."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [
        f"{key}: file {tuple(state_dict[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in state_dict and state_dict[key].shape != expected[key].shape
    ]
    if missing or unexpected or mismatched:

        def listing(title: str, items: list[str]) -> str:
            shown = "\n    ".join(items[:20]) + (f"\n    ... and {len(items) - 20} more" if len(items) > 20 else "")
            return f"\n  {title} ({len(items)}):\n    {shown}" if items else ""

        raise CheckpointError(
            f"{source} does not fit the EGTR model: it looks like {describe_state_dict(state_dict)}."
            + listing("missing keys", missing)
            + listing("unexpected keys", unexpected)
            + listing("shape mismatches", mismatched)
        )


# ---------------------------------------------------------------------- EGTR models
def _find_official_checkpoint(directory: Path) -> Path:
    candidates = sorted((directory / "checkpoints").glob("*.ckpt"))
    by_epoch = [(int(match.group(1)), path) for path in candidates if (match := re.search(r"epoch=(\d+)", path.name))]
    if by_epoch:
        return max(by_epoch)[1]  # the largest epoch is the best one (ModelCheckpoint keeps one best + last)
    if candidates:
        return candidates[-1]
    raise CheckpointError(f"{directory}: has a config.json but no checkpoints/*.ckpt")


def _config_with_names(config: EGTRConfig) -> EGTRConfig:
    """Fill in the dataset's class/predicate names when the official config only has LABEL_i placeholders."""
    if config.class_names is None or config.predicate_names is None:
        from egtr.names import guess_names

        names = guess_names(config.num_labels, config.num_rel_labels)
        if names is not None:
            config.class_names = config.class_names or names[0]
            config.predicate_names = config.predicate_names or names[1]
    return config


def _config_next_to(weights_file: Path) -> Path | None:
    """The `config.json` of a single checkpoint file: next to it, or one folder up (`checkpoints/*.ckpt`)."""
    candidates = [weights_file.parent / CONFIG_NAME, weights_file.parent.parent / CONFIG_NAME]
    return next((candidate for candidate in candidates if candidate.is_file()), None)


def resolve_model_path(path: str | Path) -> tuple[EGTRConfig, Path]:
    """Find the config and weights file of any supported layout; returns (config, weights path)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.is_file():
        config_path = _config_next_to(path)
        if config_path is None:
            raise CheckpointError(f"{path}: no config.json next to it or one folder up")
        return _config_with_names(EGTRConfig.from_json(config_path)), path
    if not (path / CONFIG_NAME).is_file():
        raise CheckpointError(f"{path}: no config.json in this directory")
    config = _config_with_names(EGTRConfig.from_json(path / CONFIG_NAME))
    if (path / WEIGHTS_NAME).is_file():
        return config, path / WEIGHTS_NAME
    if (path / "checkpoints").is_dir():
        return config, _find_official_checkpoint(path)
    if (path / DETECTOR_WEIGHTS_NAME).is_file():
        raise CheckpointError(
            f"{path}: this is a pre-trained detector (config.json + pytorch_model.bin, no relation head), not an EGTR "
            "model. Use it to initialise relation training (`egtr train --pretrained-detector`), or load the EGTR "
            "artifact (config.json + checkpoints/*.ckpt)."
        )
    raise CheckpointError(f"{path}: config.json found but no model.safetensors or checkpoints/*.ckpt")


def load_egtr(path: str | Path, map_location: str | torch.device = "cpu") -> EGTR:
    """Build the model from its config and load the weights strictly (any layout of the module docstring)."""
    config, weights_path = resolve_model_path(path)
    model = EGTR(config)
    if weights_path.suffix == ".safetensors":
        try:
            missing, unexpected = load_model(model, str(weights_path), strict=False)
        except Exception as error:
            raise CheckpointError(f"{weights_path}: cannot be loaded ({error})") from error
        if missing or unexpected:
            check_state_dict(model, read_state_dict(weights_path), str(weights_path))
    else:
        state_dict = read_state_dict(weights_path)
        check_state_dict(model, state_dict, str(weights_path))
        model.load_state_dict(state_dict, strict=True)
    logger.info("loaded %s", weights_path)
    return model.to(map_location).eval()


def _atomic_write(target: Path, write) -> None:
    """Write through a temporary file in the same directory, then rename: a kill never leaves a half file."""
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def save_egtr(model: EGTR, directory: str | Path, preprocessor: PreprocessorConfig | None = None) -> None:
    """Save `config.json` + `model.safetensors` (+ `preprocessor_config.json` when `preprocessor` is given).

    Shared head copies are stored once. Without `preprocessor` an existing `preprocessor_config.json` is left as it
    is (as transformers' `save_pretrained` leaves its processor files). `config.json` is written last, so its
    presence means the directory is complete.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_write(directory / WEIGHTS_NAME, lambda temporary: save_model(model, temporary))
    if preprocessor is not None:
        preprocessor.save(directory)
    _atomic_write(directory / CONFIG_NAME, lambda temporary: model.config.save(temporary))


# ---------------------------------------------------------------------- preprocessing of a model directory
# What transformers' image processors record for the steps our pipeline always takes (egtr.data.transforms):
# PIL bilinear resize (PIL.Image.BILINEAR == 2), scaling by 1/255, mean/std normalisation.
_PIL_BILINEAR = 2
_RESCALE_FACTOR = 1 / 255
# Builds the error for one field of a preprocessor file: (field, problem) -> error naming the file and the field.
FieldError = Callable[[str, str], "CheckpointError"]


@dataclass(frozen=True)
class PreprocessorConfig:
    """How images are prepared for a model: the evaluation resize and the normalisation it was trained with.

    Saved as `preprocessor_config.json` in the layout of transformers' `DeformableDetrImageProcessor`
    (`{"size": {"shortest_edge": S, "longest_edge": L}, "image_mean": [...], "image_std": [...], ...}`), so the
    file also loads there. The defaults are the paper's (800 / 1333, ImageNet), i.e. an official artifact's.
    """

    shortest_edge: int = 800
    longest_edge: int = 1333
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def from_data_config(cls, data: DataConfig) -> PreprocessorConfig:
        """The test-time pipeline of a training run: its evaluation resize (not the random training sizes)."""
        return cls(data.eval_size, data.eval_max_size, tuple(data.image_mean), tuple(data.image_std))

    def with_sizes(self, size: int | None = None, max_size: int | None = None) -> PreprocessorConfig:
        """A copy where each size the user gave explicitly (not None) replaces the recorded one."""
        return dataclasses.replace(
            self,
            shortest_edge=self.shortest_edge if size is None else size,
            longest_edge=self.longest_edge if max_size is None else max_size,
        )

    def data_config(self, **values: Any) -> DataConfig:
        """A `DataConfig` whose evaluation pipeline is this preprocessing (`values`: kind, root, ...)."""
        return DataConfig(
            eval_size=self.shortest_edge,
            eval_max_size=self.longest_edge,
            image_mean=self.image_mean,
            image_std=self.image_std,
            **values,
        ).validate()

    def to_dict(self) -> dict[str, Any]:
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
    def from_dict(cls, values: Any, source: str = PREPROCESSOR_NAME) -> PreprocessorConfig:
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
        if not _is_number(factor) or abs(factor - _RESCALE_FACTOR) > 1e-9:
            raise fail("rescale_factor", f"is {factor!r}; egtr scales pixels by 1/255")
        shortest, longest = _read_size(values, fail)
        mean = _read_triple(values, "image_mean", IMAGENET_MEAN, fail)
        std = _read_triple(values, "image_std", IMAGENET_STD, fail)
        if min(std) <= 0:
            raise fail("image_std", f"is {list(std)}; every value must be > 0")
        return cls(shortest, longest, mean, std)

    def save(self, directory: str | Path) -> Path:
        """Write `directory/preprocessor_config.json` atomically."""
        path = Path(directory) / PREPROCESSOR_NAME
        save_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | Path) -> PreprocessorConfig:
        """Read a `preprocessor_config.json` file (errors name the file and the field)."""
        return cls.from_dict(read_json(path, CheckpointError), str(path))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _read_size(values: dict[str, Any], fail: FieldError) -> tuple[int, int]:
    """(shortest edge, longest edge) from `size`; older transformers files write `size: S` + `max_size: L`."""
    if "size" not in values:
        raise fail("size", 'is missing; expected {"shortest_edge": S, "longest_edge": L}')
    size = values["size"]
    if _is_size(size) and _is_size(values.get("max_size")):
        return size, values["max_size"]
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
    values: dict[str, Any], name: str, default: tuple[float, float, float], fail: FieldError
) -> tuple[float, float, float]:
    """Three per-channel floats (RGB); absent means the default (transformers' DETR processors do the same)."""
    value = values.get(name, default)
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(_is_number(item) for item in value):
        raise fail(name, f"is {value!r}; expected 3 numbers (R, G, B)")
    return tuple(float(item) for item in value)  # type: ignore[return-value]


def load_preprocessor_config(path: str | Path) -> PreprocessorConfig | None:
    """The preprocessing recorded with a model, or None (the official artifacts: use the paper's defaults).

    `path` is anything `load_egtr` accepts: a model directory, or a checkpoint file whose model directory is the
    folder of its `config.json` (next to it or one folder up).
    """
    path = Path(path)
    directory = path if path.is_dir() else (config.parent if (config := _config_next_to(path)) else None)
    if directory is None or not (directory / PREPROCESSOR_NAME).is_file():
        return None
    return PreprocessorConfig.load(directory / PREPROCESSOR_NAME)


# ---------------------------------------------------------------------- partial initialisation
def load_weights_non_strict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> LoadReport:
    """Load every tensor whose key and shape fit; report the rest. Used for detector and backbone initialisation."""
    own = model.state_dict()
    report = LoadReport()
    fitting = {}
    for key, value in state_dict.items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.mismatched.append(f"{key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}")
        else:
            fitting[key] = value
            report.loaded.append(key)
    report.missing = [key for key in own if key not in state_dict]
    model.load_state_dict(fitting, strict=False)
    return report


def load_detector_weights(model: EGTR, path: str | Path) -> LoadReport:
    """Initialise the detector part of `model` from a pre-trained detector (ours or the released DETR layout).

    `path` is a directory with `pytorch_model.bin` or `model.safetensors`, or a weights file. The relation head
    and frequency tables stay as they are; anything else that is missing is an error (wrong architecture).
    """
    path = Path(path)
    if path.is_dir():
        candidates = [path / DETECTOR_WEIGHTS_NAME, path / WEIGHTS_NAME]
        weights = next((candidate for candidate in candidates if candidate.is_file()), None)
        if weights is None:
            raise CheckpointError(f"{path}: neither {DETECTOR_WEIGHTS_NAME} nor {WEIGHTS_NAME} found")
    else:
        weights = path
    state_dict = read_state_dict(weights)
    # The relation head and the class-dependent tables are trained anew; keep the model's own.
    state_dict = {key: value for key, value in state_dict.items() if not key.startswith(RELATION_HEAD_PREFIXES)}
    report = load_weights_non_strict(model, state_dict)
    detector_missing = [key for key in report.missing if not key.startswith(RELATION_HEAD_PREFIXES)]
    if detector_missing or report.mismatched:
        raise CheckpointError(
            f"{weights} does not fit the detector of this model (it looks like {describe_state_dict(state_dict)}): "
            f"{len(detector_missing)} detector keys missing (first: {detector_missing[:5]}), "
            f"shape mismatches: {report.mismatched[:5]}"
        )
    logger.info("detector weights from %s: %s", weights, report.summary())
    return report


def save_json(path: Path, payload: dict) -> None:
    """Atomic JSON write (shared by the training and evaluation code)."""
    _atomic_write(path, lambda temporary: Path(temporary).write_text(json.dumps(payload, indent=2) + "\n"))
