"""Typed configuration of the EGTR model and its losses.

`EGTRConfig` holds every size of the network (the paper's values are the defaults) plus the class and predicate
names, and reads the official `config.json` (HF `DeformableDetrConfig` as written by transformers 4.18 with the EGTR
fields added by `train_egtr.py`). `LossConfig` holds the loss weights and relation-sampling settings of reference §3
(docs/reference.md). Both serialise to plain JSON.
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from egtr.errors import ConfigError
from egtr.fileio import read_json, write_json

logger = logging.getLogger(__name__)

SUPPORTED_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
# Fields that earlier releases wrote and that no longer exist: files that carry them still load, with a warning.
REMOVED_FIELDS: dict[str, dict[str, str]] = {
    "LossConfig": {"extra": "it was never read"},
    "DataConfig": {"num_queries": "the Open Images box-count filter now follows the model's num_queries"},
}


def check_fields(config_class: type, values: dict[str, Any]) -> dict[str, Any]:
    """The values of a config file that are fields of the dataclass `config_class`, with their types checked.

    A removed field (`REMOVED_FIELDS`) is dropped with a warning naming it; any other unknown key is an error (a typo
    in a config file must not silently keep a default), and so is a value of the wrong type (`"sixteen"` for an
    integer), named with its field.

    Raises:
        ConfigError: unknown fields or wrongly typed values.
    """
    name = config_class.__name__
    removed = REMOVED_FIELDS.get(name, {})
    fields = {item.name: item for item in dataclasses.fields(config_class)}
    for key in sorted(set(values) & set(removed)):
        logger.warning("%s field %r is no longer used and was ignored (%s)", name, key, removed[key])
    kept = {key: value for key, value in values.items() if key not in removed}
    unknown = set(kept) - set(fields)
    if unknown:
        raise ConfigError(f"unknown {name} fields: {sorted(unknown)}")
    hints = typing.get_type_hints(config_class)
    for key, value in kept.items():
        if not _fits(value, hints[key]):
            raise ConfigError(f"{name}.{key} is {value!r} ({type(value).__name__}); expected {_type_name(hints[key])}")
    return kept


def _fits(value: Any, annotation: Any) -> bool:
    """Whether a JSON value fits a field annotation (int, float, bool, str, tuples/lists, dicts, unions, None)."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, option) for option in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False
        arguments = [item for item in typing.get_args(annotation) if item is not Ellipsis]
        return not arguments or all(_fits(item, arguments[0]) for item in value)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    return True  # nested configs are checked by their own from_dict


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


@dataclass
class EGTRConfig:
    """Architecture of EGTR: ResNet + Deformable DETR + relation head.

    Defaults are the Visual Genome model of the paper (42,510,356 parameters with the frequency table).
    """

    backbone: str = "resnet50"  # timm/torchvision ResNet depth; parameter names conv1, bn1, layer1..4
    num_feature_levels: int = 4  # C3, C4, C5 + one extra stride-2 conv on C5
    d_model: int = 256  # transformer width
    encoder_layers: int = 6
    decoder_layers: int = 6
    encoder_attention_heads: int = 8
    decoder_attention_heads: int = 8
    encoder_ffn_dim: int = 1024
    decoder_ffn_dim: int = 1024
    encoder_n_points: int = 4  # deformable sampling points per head and level
    decoder_n_points: int = 4
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    num_queries: int = 200
    num_labels: int = 150  # object classes C (0-based, no background)
    num_rel_labels: int = 50  # predicates R (0-based, no background)
    use_freq_bias: bool = True  # add triplet_dist[c_subject, c_object] to the relation logits
    # The original's option to build the frequency table with log_softmax; off in every released model and not
    # reproduced here: `validate` refuses True rather than silently ignoring it.
    use_log_softmax: bool = False
    freq_bias_eps: float = 1e-12
    logit_adjustment: bool = False  # post-hoc: relation_logits -= tau * log(rel_dist) at inference
    logit_adj_tau: float = 0.3
    dense_relation_head: bool = False  # True: the original's materialised pair tensor (slow; for checks)
    backbone_norm: str = "frozen"  # "frozen" (pre-trained backbones, the paper) or "batch" (training from scratch)
    freeze_backbone_stem: bool = True  # conv1 + layer1 get requires_grad=False, as in the original
    class_names: list[str] | None = None  # len num_labels; None means generic names
    predicate_names: list[str] | None = None  # len num_rel_labels

    def validate(self) -> EGTRConfig:
        """Raise ValueError if the sizes do not fit together; returns self."""
        if self.use_log_softmax:
            raise ConfigError(
                "use_log_softmax=true is not supported: egtr builds the frequency bias with the formula of the "
                "released models (reference §2.6); set it to false"
            )
        if self.backbone not in SUPPORTED_BACKBONES:
            raise ConfigError(f"backbone must be one of {SUPPORTED_BACKBONES}, got {self.backbone!r}")
        for heads_field in ("encoder_attention_heads", "decoder_attention_heads"):
            if self.d_model % getattr(self, heads_field):
                raise ConfigError(
                    f"d_model={self.d_model} is not divisible by {heads_field}={getattr(self, heads_field)}"
                )
        if self.d_model % 2 or (self.d_model // 2) % 2:
            raise ConfigError("d_model must be a multiple of 4 (sine position embedding)")
        if self.backbone_norm not in ("frozen", "batch"):
            raise ConfigError(f"backbone_norm must be 'frozen' or 'batch', got {self.backbone_norm!r}")
        if not 3 <= self.num_feature_levels <= 8:
            # C3..C5 are always used; levels beyond them are extra stride-2 convolutions.
            raise ConfigError(f"num_feature_levels must be in 3..8, got {self.num_feature_levels}")
        if self.d_model % 32:
            raise ConfigError("d_model must be a multiple of 32 (GroupNorm(32) in the input projections)")
        for names_field, count in (("class_names", self.num_labels), ("predicate_names", self.num_rel_labels)):
            names = getattr(self, names_field)
            if names is not None and len(names) != count:
                raise ConfigError(f"{names_field} has {len(names)} entries but the model has {count}")
        return self

    # ------------------------------------------------------------------ names
    def _names(self) -> tuple[list[str], list[str]]:
        """The configured names, else those of the standard dataset with these sizes, else generic ones."""
        from egtr.names import guess_names

        guessed = guess_names(self.num_labels, self.num_rel_labels) or (None, None)
        classes = self.class_names or guessed[0] or [f"class_{i}" for i in range(self.num_labels)]
        predicates = self.predicate_names or guessed[1] or [f"predicate_{i}" for i in range(self.num_rel_labels)]
        return classes, predicates

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self._names()[0]))

    @property
    def id2predicate(self) -> dict[int, str]:
        return dict(enumerate(self._names()[1]))

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write our `config.json` layout (`{"egtr_config": {...}}`) atomically."""
        write_json(path, {"egtr_config": self.to_dict()})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EGTRConfig:
        return cls(**check_fields(cls, values)).validate()

    def with_dataset_names(self) -> EGTRConfig:
        """Fill in the class/predicate names of the standard dataset of these sizes (VG 150/50, OI 601/30) where the
        config has none (the official configs only carry LABEL_i placeholders); returns self."""
        if self.class_names is None or self.predicate_names is None:
            from egtr.names import guess_names

            names = guess_names(self.num_labels, self.num_rel_labels)
            if names is not None:
                self.class_names = self.class_names or names[0]
                self.predicate_names = self.predicate_names or names[1]
        return self

    @classmethod
    def from_official_dict(cls, values: dict[str, Any]) -> EGTRConfig:
        """Read the official HF-style `config.json` (transformers 4.18 + EGTR fields).

        Fields that do not describe the architecture (loss weights, training flags) are ignored here; see
        `LossConfig.from_official_dict`. Generic `LABEL_i` names are dropped, real names are kept.
        """
        if values.get("two_stage") or values.get("with_box_refine"):
            raise ConfigError("two_stage / with_box_refine checkpoints are not EGTR models (the paper uses neither)")
        sizes = {f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values}
        sizes.pop("class_names", None)
        sizes.pop("predicate_names", None)
        if "num_labels" not in sizes and "id2label" in values:
            sizes["num_labels"] = max(int(k) for k in values["id2label"]) + 1
        names = [values["id2label"][str(i)] for i in range(sizes.get("num_labels", 0))] if "id2label" in values else []
        if names and not all(name == f"LABEL_{i}" for i, name in enumerate(names)):
            sizes["class_names"] = names
        if values.get("rel_categories"):
            sizes["predicate_names"] = list(values["rel_categories"])
        # The same field and type checks as our own layout: `"num_queries": "sixteen"` is named, not a torch error.
        return cls(**check_fields(cls, sizes)).validate()

    @classmethod
    def from_json(cls, path: str | Path) -> EGTRConfig:
        """Load either our `config.json` (key `egtr_config`) or the official one."""
        values = read_json(path, ConfigError)
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a JSON object, got {type(values).__name__}")
        if "egtr_config" in values:
            return cls.from_dict(values["egtr_config"])
        if values.get("model_type") == "deformable_detr" or "d_model" in values:
            return cls.from_official_dict(values)
        raise ConfigError(f"{path}: neither an egtr config (key 'egtr_config') nor an official Deformable DETR config")


@dataclass
class LossConfig:
    """Loss weights and relation sampling (reference §3; VG defaults, see `for_open_images`)."""

    ce_loss_coefficient: float = 2.0  # also the class-cost weight of the matcher (original quirk Q6)
    bbox_loss_coefficient: float = 5.0  # also the matcher's L1 cost weight
    giou_loss_coefficient: float = 2.0  # also the matcher's GIoU cost weight
    rel_loss_coefficient: float = 15.0
    connectivity_loss_coefficient: float = 30.0  # OI: 90
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    smoothing: float = 1e-14  # relation smoothing: shifts the matching cost by logit(smoothing); 0 turns it off
    rel_sample_negatives: int | None = 80  # negatives per positive in the matched block; None = all
    rel_sample_nonmatching: int | None = 80  # entries with an unmatched query per positive; None = all
    rel_sample_negatives_largest: bool = True  # hardest (highest-logit) negatives, else random
    rel_sample_nonmatching_largest: bool = True  # OI: False (random)
    auxiliary_loss: bool = False  # detection losses on every decoder layer (on for detector pre-training)

    @classmethod
    def for_open_images(cls) -> LossConfig:
        return cls(connectivity_loss_coefficient=90.0, rel_sample_nonmatching_largest=False)

    @classmethod
    def from_official_dict(cls, values: dict[str, Any]) -> LossConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: values[k] for k in known if k in values})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LossConfig:
        return cls(**check_fields(cls, values))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
