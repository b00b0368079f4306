"""Initialising a model for training from files the user has (reference §2.7, §2.8, §4.1, §4.2).

* `load_backbone_weights`: an ImageNet ResNet checkpoint (torchvision or timm names, `.pth`/`.pt`/`.bin`/
  `.safetensors`) into the backbone. Both libraries name a ResNet `conv1`, `bn1`, `layer1..4`, `downsample.0/1`,
  `fc`, which are also our names under `model.backbone.conv_encoder.model.`; the classifier `fc` is dropped.
* `load_initial_weights`: the one loader of trained weights (`--init-from` and `--detector-weights`): any EGTR model
  (ours, the official artifact), our `pretrain-detector` run's `model/`, the released EGTR pre-trained DETR
  (`config.json` + `pytorch_model.bin`) or transformers' COCO model (`SenseTime/deformable-detr`). Strict by
  default; `reinitialize="labels"` re-initialises the class-, predicate- and frequency-dependent tensors when the
  label sets differ (fine-tuning to new labels), `reinitialize="any"` whatever does not fit (like the original's
  `from_pretrained(..., ignore_mismatched_sizes=True)` for the 91 COCO classes and 300 COCO queries).

Both return a report (kept / re-initialised with the reason / ignored), which training logs and saves in
`initialization.json`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from egtr.config import EGTRConfig
from egtr.errors import CheckpointError
from egtr.models.checkpoint import (
    DETECTOR_WEIGHTS_NAME,
    RELATION_HEAD_PREFIXES,
    WEIGHTS_NAME,
    LoadReport,
    describe_state_dict,
    load_weights_non_strict,
    read_checkpoint,
    read_state_dict,
)
from egtr.models.egtr import EGTR
from egtr.training.config import REINITIALIZE_POLICIES

logger = logging.getLogger(__name__)

BACKBONE_PREFIX = "model.backbone.conv_encoder.model."
# Wrappers that checkpoints of other code bases put in front of the ResNet names.
_BACKBONE_WRAPPER_PREFIXES = ("module.", "backbone.", "model.", "encoder.", "body.")
SCOPES = ("model", "detector")


@dataclass
class InitializationReport:
    """What `load_initial_weights` did with every tensor: kept from the file, re-initialised (why), ignored (why)."""

    source: str
    scope: str
    policy: str
    kept: list[str] = field(default_factory=list)
    reinitialized: dict[str, str] = field(default_factory=dict)  # model key -> reason
    ignored: dict[str, str] = field(default_factory=dict)  # file key -> reason

    def reinitialized_by_reason(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = defaultdict(list)
        for key, reason in self.reinitialized.items():
            grouped[reason].append(key)
        return dict(grouped)

    def summary(self) -> str:
        return (
            f"kept {len(self.kept)} tensors, re-initialised {len(self.reinitialized)}, ignored {len(self.ignored)} "
            f"file tensors (scope {self.scope}, reinitialize={self.policy})"
        )


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


def _read_source(path: Path) -> tuple[Path, dict[str, torch.Tensor], EGTRConfig | None]:
    """(weights file, state dict, its EGTR config or None) of any layout: every EGTR model `read_checkpoint` reads,
    the released pre-trained DETR or transformers' COCO Deformable DETR."""
    try:
        checkpoint = read_checkpoint(path)
    except CheckpointError:  # a detector folder (no relation head), or a config.json that is not an EGTR config
        weights = _detector_weights_file(path)
        return weights, read_state_dict(weights), None
    return checkpoint.weights_file, checkpoint.state_dict, checkpoint.config


def _aliases(model: EGTR) -> dict[str, str]:
    """Key -> first key of the same tensor: the detection heads are one module listed once per decoder layer
    (`class_embed.0..L-1`), and files saved with safetensors keep only the first copy."""
    first_by_storage: dict[int, str] = {}
    aliases = {}
    for key, value in model.state_dict(keep_vars=True).items():
        aliases[key] = first_by_storage.setdefault(value.data_ptr(), key)
    return aliases


def label_dependent_keys(model: EGTR) -> dict[str, str]:
    """Tensors whose shape or meaning depends on the label sets: key -> "classes" / "predicates" / "frequency"."""
    last_predicate_layer = f"rel_predictor.layers.{len(model.rel_predictor.layers) - 1}."
    kinds = {}
    for key in model.state_dict():
        if key.startswith("class_embed."):
            kinds[key] = "classes"
        elif key.startswith(last_predicate_layer):
            kinds[key] = "predicates"
        elif key in ("triplet_dist", "rel_dist"):
            kinds[key] = "frequency"
    return kinds


def _label_changes(
    model: EGTR, state_dict: dict[str, torch.Tensor], source: EGTRConfig | None, label_kinds: dict[str, str]
) -> dict[str, str]:
    """Why each label kind differs between the file and `model` ({} when the labels are the same or unknown).

    Counts come from the file's tensors (a config.json may be incomplete); names from its config when it has them.
    """
    config = model.config
    file_counts: dict[str, int] = {}
    for key, kind in label_kinds.items():
        if kind in ("classes", "predicates") and key.endswith(".weight") and key in state_dict:
            file_counts.setdefault(kind, state_dict[key].shape[0])
    changes = {}
    for kind, own_count, file_names, own_names in (
        ("classes", config.num_labels, source and source.class_names, config.class_names),
        ("predicates", config.num_rel_labels, source and source.predicate_names, config.predicate_names),
    ):
        file_count = file_counts.get(kind)
        if file_count is not None and file_count != own_count:
            changes[kind] = f"the file has {file_count} {kind}, this model {own_count}"
        elif file_names and own_names and list(file_names) != list(own_names):
            changes[kind] = f"the {kind} differ (same count {own_count}, other names)"
    if changes:
        changes["frequency"] = "statistics of other labels (" + "; ".join(changes.values()) + ")"
    return changes


def load_initial_weights(
    model: EGTR, path: str | Path, scope: str = "model", reinitialize: str = "none"
) -> InitializationReport:
    """Initialise `model` from a trained model or detector: the one loader behind `--init-from` and
    `--detector-weights` (see docs/own-data.md).

    Every tensor of `model` in `scope` is either loaded from the file or re-initialised for a stated reason:

    * `scope="model"`: every tensor; `scope="detector"`: all but the relation head and the frequency tables,
      which keep their fresh initialisation (the relation stage trains them anew).
    * `reinitialize="none"` (strict): any tensor that is missing from the file, has another shape, or a file
      tensor this model has no place for is an error.
    * `reinitialize="labels"`: the class-, predicate- and frequency-dependent tensors (`label_dependent_keys`) are
      re-initialised when the file's label sets differ from the model's (count, or names where both are known);
      anything else must fit as with "none".
    * `reinitialize="any"`: any tensor that does not fit is re-initialised and file tensors without a place are
      ignored (transformers' `ignore_mismatched_sizes=True`: e.g. the 91 classes and 300 queries of COCO).

    Args:
        model: the freshly built model (its initialisation is what "re-initialised" keeps).
        path: our model directory, the official EGTR artifact or `.ckpt`, the released pre-trained DETR folder,
            transformers' Deformable DETR folder, or a weights file.
        scope: "model" or "detector".
        reinitialize: "none", "labels" or "any".

    Returns:
        The `InitializationReport`: kept, re-initialised (key -> reason) and ignored (file key -> reason).

    Raises:
        CheckpointError: the file does not fit under this policy (the message lists the tensors and the option to
            pass), or it holds no Deformable DETR encoder weights at all.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if reinitialize not in REINITIALIZE_POLICIES:
        raise ValueError(f"reinitialize must be one of {REINITIALIZE_POLICIES}, got {reinitialize!r}")
    weights, state_dict, source_config = _read_source(Path(path))
    report = InitializationReport(source=str(weights), scope=scope, policy=reinitialize)
    own = model.state_dict()
    label_kinds = label_dependent_keys(model)
    changes = _label_changes(model, state_dict, source_config, label_kinds) if reinitialize in ("labels", "any") else {}
    refused: list[str] = []
    fitting = _place_model_tensors(
        own, state_dict, _aliases(model), label_kinds, changes, scope, reinitialize, report, refused
    )
    _place_file_tensors(own, state_dict, scope, reinitialize, report, refused)
    if refused:
        raise _does_not_fit(weights, state_dict, reinitialize, refused)
    if not any(key.startswith("model.encoder.") for key in report.kept):
        raise CheckpointError(
            f"{weights}: no Deformable DETR encoder weights fit this model; it looks like "
            f"{describe_state_dict(state_dict)}"
        )
    model.load_state_dict(fitting, strict=False)
    logger.info("initial weights from %s: %s", weights, report.summary())
    for reason, keys in report.reinitialized_by_reason().items():
        logger.info("re-initialised (%s): %d tensors, e.g. %s", reason, len(keys), keys[0])
    return report


def _place_model_tensors(
    own: dict[str, torch.Tensor],
    state_dict: dict[str, torch.Tensor],
    aliases: dict[str, str],
    label_kinds: dict[str, str],
    changes: dict[str, str],
    scope: str,
    reinitialize: str,
    report: InitializationReport,
    refused: list[str],
) -> dict[str, torch.Tensor]:
    """For each tensor of the model (`own`): the file tensor to load (returned, and listed in `report.kept`),
    re-initialised with its reason (`report.reinitialized`), or refused under this policy (appended to `refused`).
    `changes` maps each label kind whose labels differ from the file's to the reason."""
    fitting: dict[str, torch.Tensor] = {}
    for key, value in own.items():
        if scope == "detector" and key.startswith(RELATION_HEAD_PREFIXES):
            report.reinitialized[key] = "relation head and frequency tables: trained anew after a detector"
            continue
        kind = label_kinds.get(key)
        file_key = key if key in state_dict else aliases[key]
        file_value = state_dict.get(file_key)
        if kind in changes:
            report.reinitialized[key] = changes[kind]
        elif file_value is None:
            problem = "not in the file"
            if reinitialize == "any":
                report.reinitialized[key] = problem
            else:
                refused.append(f"{key}: {problem}")
        elif file_value.shape != value.shape:
            problem = f"shape: file {tuple(file_value.shape)}, model {tuple(value.shape)}"
            if reinitialize == "any" or (kind is not None and reinitialize == "labels"):
                report.reinitialized[key] = problem + (f" (depends on the {kind})" if kind else "")
            else:
                refused.append(f"{key}: {problem}")
        else:
            fitting[key] = file_value
            report.kept.append(key)
    return fitting


def _place_file_tensors(
    own: dict[str, torch.Tensor],
    state_dict: dict[str, torch.Tensor],
    scope: str,
    reinitialize: str,
    report: InitializationReport,
    refused: list[str],
) -> None:
    """The file tensors this model has no place for: ignored with a reason (`report.ignored`) or refused."""
    for key in state_dict:
        if key in own:
            continue
        if scope == "detector" and key.startswith(RELATION_HEAD_PREFIXES):
            report.ignored[key] = "relation head: not loaded into a detector initialisation"
        elif reinitialize == "any":
            report.ignored[key] = "not in this model"
        else:
            refused.append(f"{key}: in the file, not in this model")


def _does_not_fit(
    weights: Path, state_dict: dict[str, torch.Tensor], reinitialize: str, refused: list[str]
) -> CheckpointError:
    """The error for a file that does not fit under `reinitialize`: the first refused tensors and the option to pass."""
    shown = "; ".join(refused[:5]) + (f"; ... and {len(refused) - 5} more" if len(refused) > 5 else "")
    hint = "reinitialize='labels' (--reinitialize labels)" if reinitialize == "none" else ""
    return CheckpointError(
        f"{weights} does not fit this model under reinitialize={reinitialize!r} ({len(refused)} tensors; it "
        f"looks like {describe_state_dict(state_dict)}): {shown}. Re-initialising what does not fit needs "
        f"{hint + ' or ' if hint else ''}reinitialize='any' (--reinitialize any)"
    )


def new_class_head(initialization: Mapping[str, object]) -> frozenset[str]:
    """Keys of the class head that `initialization.json`'s loads re-initialised (new labels): they start from
    scratch, so the EGTR stage trains them with the relation head's learning rate instead of the detector's."""
    return frozenset(
        key
        for part in initialization.values()
        if isinstance(part, dict)
        for key in part.get("reinitialized", {})
        if key.startswith("class_embed.")
    )
