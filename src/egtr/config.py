"""Typed configuration of the EGTR model and its losses.

`EGTRConfig` holds every size of the network (the paper's values are the defaults) plus the class and predicate
names, and reads the official `config.json` (HF `DeformableDetrConfig` as written by transformers 4.18 with the EGTR
fields added by `train_egtr.py`). `LossConfig` holds the loss weights and relation-sampling settings of §3 of the
reference. Both serialise to plain JSON.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUPPORTED_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")


def read_json(path: str | Path, error_type: type[Exception] = ValueError) -> Any:
    """Parse a JSON file; invalid JSON raises `error_type` naming the file (shared by every config reader)."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise error_type(f"{path}: not valid JSON ({error})") from error


def reject_unknown_fields(config_class: type, values: dict[str, Any]) -> None:
    """Raise ValueError naming the keys that are not fields of the dataclass `config_class` (a typo in a config
    file must not silently keep a default)."""
    unknown = set(values) - {f.name for f in dataclasses.fields(config_class)}
    if unknown:
        raise ValueError(f"unknown {config_class.__name__} fields: {sorted(unknown)}")


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
    use_log_softmax: bool = False  # original option: log_softmax of the frequency table instead of the raw table
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
        if self.backbone not in SUPPORTED_BACKBONES:
            raise ValueError(f"backbone must be one of {SUPPORTED_BACKBONES}, got {self.backbone!r}")
        for heads_field in ("encoder_attention_heads", "decoder_attention_heads"):
            if self.d_model % getattr(self, heads_field):
                raise ValueError(
                    f"d_model={self.d_model} is not divisible by {heads_field}={getattr(self, heads_field)}"
                )
        if self.d_model % 2 or (self.d_model // 2) % 2:
            raise ValueError("d_model must be a multiple of 4 (sine position embedding)")
        if self.backbone_norm not in ("frozen", "batch"):
            raise ValueError(f"backbone_norm must be 'frozen' or 'batch', got {self.backbone_norm!r}")
        if not 3 <= self.num_feature_levels <= 8:
            # C3..C5 are always used; levels beyond them are extra stride-2 convolutions.
            raise ValueError(f"num_feature_levels must be in 3..8, got {self.num_feature_levels}")
        if self.d_model % 32:
            raise ValueError("d_model must be a multiple of 32 (GroupNorm(32) in the input projections)")
        for names_field, count in (("class_names", self.num_labels), ("predicate_names", self.num_rel_labels)):
            names = getattr(self, names_field)
            if names is not None and len(names) != count:
                raise ValueError(f"{names_field} has {len(names)} entries but the model has {count}")
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
        Path(path).write_text(json.dumps({"egtr_config": self.to_dict()}, indent=2) + "\n")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EGTRConfig:
        reject_unknown_fields(cls, values)
        return cls(**values).validate()

    @classmethod
    def from_official_dict(cls, values: dict[str, Any]) -> EGTRConfig:
        """Read the official HF-style `config.json` (transformers 4.18 + EGTR fields).

        Fields that do not describe the architecture (loss weights, training flags) are ignored here; see
        `LossConfig.from_official_dict`. Generic `LABEL_i` names are dropped, real names are kept.
        """
        if values.get("two_stage") or values.get("with_box_refine"):
            raise ValueError("two_stage / with_box_refine checkpoints are not EGTR models (the paper uses neither)")
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
        return cls(**sizes).validate()

    @classmethod
    def from_json(cls, path: str | Path) -> EGTRConfig:
        """Load either our `config.json` (key `egtr_config`) or the official one."""
        values = read_json(path)
        if "egtr_config" in values:
            return cls.from_dict(values["egtr_config"])
        if values.get("model_type") == "deformable_detr" or "d_model" in values:
            return cls.from_official_dict(values)
        raise ValueError(f"{path}: neither an egtr config (key 'egtr_config') nor an official Deformable DETR config")


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
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_open_images(cls) -> LossConfig:
        return cls(connectivity_loss_coefficient=90.0, rel_sample_nonmatching_largest=False)

    @classmethod
    def from_official_dict(cls, values: dict[str, Any]) -> LossConfig:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: values[k] for k in known if k in values})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
