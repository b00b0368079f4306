"""Reading and writing EGTR weights in every supported layout.

Layouts (reference §2.8):
- ours: a directory with `config.json` (key `egtr_config`) + `model.safetensors`;
- the released EGTR artifact: a directory with the HF-style `config.json` + `checkpoints/epoch=EE-...ckpt` (PyTorch
  Lightning 1.6 format, keys prefixed `model.`, possibly float16); the file with the largest epoch is the best one;
- a single official `.ckpt` file (its `config.json` is looked up next to it or one folder up);
- the released pre-trained detector: `config.json` + `pytorch_model.bin` (no relation head). It is not an EGTR model;
  `load_detector_weights` loads it into a model before relation training.

Pickled files are only read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from egtr.config import EGTRConfig
from egtr.models.egtr import EGTR

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
DETECTOR_WEIGHTS_NAME = "pytorch_model.bin"
RELATION_HEAD_PREFIXES = (
    "proj_q.", "proj_k.", "final_sub_proj.", "final_obj_proj.", "rel_predictor_gate.", "rel_predictor.",
    "connectivity_layer.", "triplet_dist", "rel_dist",
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
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint with weights_only=True ({error})") from error


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
                state_dict = {key[len("model."):]: value for key, value in state_dict.items()}
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


def resolve_model_path(path: str | Path) -> tuple[EGTRConfig, Path]:
    """Find the config and weights file of any supported layout; returns (config, weights path)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.is_file():
        config_candidates = [path.parent / CONFIG_NAME, path.parent.parent / CONFIG_NAME]
        config_path = next((candidate for candidate in config_candidates if candidate.is_file()), None)
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


def save_egtr(model: EGTR, directory: str | Path) -> None:
    """Save `config.json` + `model.safetensors`; shared head copies are stored once."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_write(directory / WEIGHTS_NAME, lambda temporary: save_model(model, temporary))
    _atomic_write(directory / CONFIG_NAME, lambda temporary: model.config.save(temporary))


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
