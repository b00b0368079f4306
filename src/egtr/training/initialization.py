"""Initialising a model for training from files the user has (reference §2.7, §2.8, §4.1, §4.2).

* `load_backbone_weights`: an ImageNet ResNet checkpoint (torchvision or timm names, `.pth`/`.pt`/`.bin`/
  `.safetensors`) into the backbone. Both libraries name a ResNet `conv1`, `bn1`, `layer1..4`, `downsample.0/1`,
  `fc`, which are also our names under `model.backbone.conv_encoder.model.`; the classifier `fc` is dropped.
* `load_pretrained_detector`: a Deformable DETR into the detector part, from our own `pretrain-detector` run
  (`model/`), the released EGTR pre-trained DETR (`config.json` + `pytorch_model.bin`) or the COCO model of
  transformers (`SenseTime/deformable-detr`: `config.json` + `pytorch_model.bin` or `model.safetensors`). Like the
  original's `from_pretrained(..., ignore_mismatched_sizes=True)`, tensors whose shape does not fit (the 91 COCO
  classes, 300 COCO queries) keep their fresh initialisation and are reported.

Every loader returns a `LoadReport` (loaded / new / ignored / shape mismatch), which training logs and saves.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from egtr.models.checkpoint import (
    DETECTOR_WEIGHTS_NAME,
    RELATION_HEAD_PREFIXES,
    WEIGHTS_NAME,
    CheckpointError,
    LoadReport,
    describe_state_dict,
    load_weights_non_strict,
    read_state_dict,
)
from egtr.models.egtr import EGTR

logger = logging.getLogger(__name__)

BACKBONE_PREFIX = "model.backbone.conv_encoder.model."
# Wrappers that checkpoints of other code bases put in front of the ResNet names.
_BACKBONE_WRAPPER_PREFIXES = ("module.", "backbone.", "model.", "encoder.", "body.")


def _strip_wrappers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove a prefix shared by every key (e.g. `module.` from DDP) until the ResNet names show."""
    while state_dict and not any(key.startswith(("conv1.", "layer1.")) for key in state_dict):
        prefix = next((p for p in _BACKBONE_WRAPPER_PREFIXES if all(k.startswith(p) for k in state_dict)), None)
        if prefix is None:
            break
        state_dict = {key[len(prefix) :]: value for key, value in state_dict.items()}
    return state_dict


def load_backbone_weights(model: EGTR, path: str | Path) -> LoadReport:
    """Load an ImageNet ResNet checkpoint into the backbone.

    Args:
        model: the model; its `config.backbone` depth must match the checkpoint's.
        path: `.pth`/`.pt`/`.bin` (a state dict, possibly under `state_dict`/`model`) or `.safetensors`.

    Returns:
        The `LoadReport`; `missing` lists only backbone keys (the rest of the model is not the file's business).

    Raises:
        CheckpointError: the file has no ResNet keys, or a key present in both has another shape (wrong depth).
    """
    path = Path(path)
    state_dict = _strip_wrappers(read_state_dict(path))
    if not any(key.startswith("layer1.") for key in state_dict):
        raise CheckpointError(
            f"{path}: not a ResNet checkpoint (no 'layer1.*' keys); it looks like {describe_state_dict(state_dict)}"
        )
    renamed = {}
    ignored = []
    for key, value in state_dict.items():
        is_classifier = key.startswith("fc.")
        # Only the downsample norms keep a `num_batches_tracked` buffer (official key layout); the others have none.
        is_unkept_counter = key.endswith("num_batches_tracked") and ".downsample." not in key
        if is_classifier or is_unkept_counter:
            ignored.append(key)
            continue
        renamed[BACKBONE_PREFIX + key] = value
    report = load_weights_non_strict(model, renamed)
    report.unexpected = [key[len(BACKBONE_PREFIX) :] for key in report.unexpected] + ignored
    report.missing = [key for key in report.missing if key.startswith(BACKBONE_PREFIX)]
    if report.mismatched:
        raise CheckpointError(
            f"{path}: shapes do not fit the {model.config.backbone} backbone (another ResNet depth?): "
            f"{report.mismatched[:3]}"
        )
    logger.info("backbone weights from %s: %s", path, report.summary())
    return report


def _detector_weights_file(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or directory")
    for name in (WEIGHTS_NAME, DETECTOR_WEIGHTS_NAME):
        if (path / name).is_file():
            return path / name
    raise CheckpointError(f"{path}: neither {WEIGHTS_NAME} nor {DETECTOR_WEIGHTS_NAME} found")


def _unaliased(model: EGTR, report: LoadReport) -> list[str]:
    """Missing keys that are not another name of a loaded tensor.

    The detection heads are one module listed once per decoder layer (`class_embed.0..L-1`); files saved with
    safetensors keep one copy, so `class_embed.1..` are absent from them but loaded through `class_embed.0`.
    """
    state = model.state_dict(keep_vars=True)
    loaded_storage = {state[key].data_ptr() for key in report.loaded if key in state}
    return [key for key in report.missing if state[key].data_ptr() not in loaded_storage]


def load_pretrained_detector(model: EGTR, path: str | Path) -> LoadReport:
    """Load a pre-trained Deformable DETR into the detector part of `model` (not the relation head).

    Tensors with another shape (class head of another class count, another number of queries) stay as initialised
    and are listed in `report.mismatched`, as transformers' `ignore_mismatched_sizes=True` did for the original.

    Args:
        model: the model to initialise.
        path: a directory (`model.safetensors` or `pytorch_model.bin` inside) or a weights file.

    Returns:
        The `LoadReport`; `missing` lists detector keys the file lacked (the relation head is never loaded).

    Raises:
        CheckpointError: the file does not contain a Deformable DETR of this layout (no encoder weights loaded).
    """
    weights = _detector_weights_file(Path(path))
    state_dict = read_state_dict(weights)
    # The relation head and the class-dependent frequency tables are trained anew.
    state_dict = {key: value for key, value in state_dict.items() if not key.startswith(RELATION_HEAD_PREFIXES)}
    report = load_weights_non_strict(model, state_dict)
    report.missing = [key for key in _unaliased(model, report) if not key.startswith(RELATION_HEAD_PREFIXES)]
    if not any(key.startswith("model.encoder.") for key in report.loaded):
        raise CheckpointError(
            f"{weights}: no Deformable DETR encoder weights fit this model; it looks like "
            f"{describe_state_dict(state_dict)}"
        )
    logger.info("detector weights from %s: %s", weights, report.summary())
    for line in report.mismatched:
        logger.warning("not loaded (shape mismatch, kept the fresh initialisation): %s", line)
    if report.missing:
        logger.warning("detector tensors not in %s (freshly initialised): %s", weights, report.missing[:10])
    return report
