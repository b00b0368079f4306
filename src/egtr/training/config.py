"""`TrainConfig`: every setting of a training run, typed, validated and saved as JSON in the run directory.

Defaults are the paper's recipe for Visual Genome (reference §4.1-§4.3): `TrainConfig.for_detector()` gives the
detector pre-training stage, `TrainConfig()` the EGTR relation stage (main + x0.1 "finetune"). Open Images differs
only in its loss weights and data filters (reference §4.5): `TrainConfig.for_open_images(...)`.

Settings can be overridden from the command line in detrex's `key=value` style, with dotted keys for the nested
configs (`data.root=/data/vg`, `model.num_queries=100`, `loss.connectivity_loss_coefficient=90`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from egtr.config import EGTRConfig, LossConfig, check_fields
from egtr.data.config import DataConfig
from egtr.errors import ConfigError
from egtr.fileio import read_json, write_json

STAGES = ("detector", "egtr")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "64-true")
LR_SCHEDULES = ("constant", "cosine")  # see egtr.training.module.learning_rate_multiplier
REINITIALIZE_POLICIES = ("none", "labels", "any")  # see egtr.training.initialization.load_initial_weights


@dataclass
class TrainConfig:
    """One training run. Learning rates and batch sizes follow reference §4; see docs/training.md."""

    stage: str = "egtr"  # "detector": Deformable DETR pre-training (stage 0); "egtr": relation training (stages 1-2)
    output_dir: str = "runs/egtr"  # run directory: config.json, checkpoints, metrics, final model
    data: DataConfig = field(default_factory=DataConfig)  # dataset kind, root and transform sizes
    model: EGTRConfig = field(default_factory=EGTRConfig)  # architecture (class counts/names come from the data)
    loss: LossConfig = field(default_factory=LossConfig)  # loss weights and relation sampling
    # ---- initialisation (reference §2.8, §4.1, §4.2)
    detector_weights: str | None = None  # pre-trained detector: our run's model/ dir, the released DETR dir, or COCO
    backbone_weights: str | None = None  # ImageNet ResNet (.pth/.pt/.bin/.safetensors, torchvision or timm names)
    init_from: str | None = None  # any EGTR model (ours, the official artifact) to fine-tune; its sizes are used
    # What may be re-initialised when loading detector_weights / init_from: "none" (strict), "labels" (the class,
    # predicate and frequency-dependent tensors when the label sets differ) or "any" (whatever does not fit).
    reinitialize: str = "labels"
    # ---- optimisation (AdamW with constant rates, as the paper: reference §4.1, §4.2)
    lr: float = 2e-6  # everything not listed below (the pre-trained detector body and heads)
    lr_backbone: float = 2e-7  # parameters named *backbone*, *reference_points*, *sampling_offsets*
    lr_relation_head: float = 2e-4  # the new relation head (proj_q/k, final_*_proj, gate, predictor, connectivity)
    freeze_backbone: bool = False  # train no backbone parameter (saves memory and time; the stem is always frozen)
    weight_decay: float = 1e-4
    gradient_clip_val: float = 0.1  # clip of the total gradient norm; 0 disables
    max_epochs: int = 50  # main stage (stage 0: 150)
    finetune_epochs: int = 25  # second pass from the best checkpoint with every lr x finetune_lr_factor; 0 = none
    finetune_lr_factor: float = 0.1
    # Per optimiser step, in each pass: "constant" (the paper) or "cosine" (from the rate down to 0 at the pass's last
    # step: short runs from scratch, e.g. the demo, in place of the x0.1 pass); warmup_steps ramp it up linearly first.
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    early_stopping_patience: int = 15  # epochs without a better validation_loss; 0 disables early stopping
    # ---- batches and hardware
    batch_size: int = 4  # images per device and step
    eval_batch_size: int | None = None  # validation batch per device; None = batch_size
    accumulate_grad_batches: int = 2  # paper: 4 images x 8 GPUs x 2 = 64 per optimiser step
    accelerator: str = "auto"  # "cpu", "gpu", "auto" (Lightning names)
    devices: int | str = 1  # devices per node; >1 runs DDP
    num_nodes: int = 1  # nodes (launched by torchrun or SLURM, see docs/training.md)
    precision: str = "32-true"  # "32-true" (paper), "bf16-mixed" or "16-mixed"
    num_workers: int = 4  # DataLoader worker processes per device
    find_unused_parameters: bool = False  # DDP option; every parameter that trains gets a gradient
    all_reduce_num_boxes: bool = False  # normalise the losses by the box count averaged over ranks (quirk Q9 fixed)
    # ---- bookkeeping
    seed: int = 42
    deterministic: bool = False  # torch deterministic algorithms (CUDA grid_sample backward has none: errors there)
    log_every_n_steps: int = 50
    val_every_n_epochs: int = 1  # validation (and so best/last checkpoints) every n epochs
    checkpoint_every_n_steps: int = 0  # also refresh last.ckpt every n optimiser steps (long epochs); 0 = per epoch
    limit_train_batches: float | int | None = None  # Lightning's limits (fraction or count), for quick runs
    limit_val_batches: float | int | None = None
    fast_dev_run: int = 0  # run n training and n validation batches, no checkpoints/logs (smoke test)
    evaluate_split: str | None = "val"  # EGTR stage: R@K/mR@K of the final model on this split (None = skip)
    sanity_val_steps: int = 2  # validation batches run before training starts (catches evaluation bugs early)
    progress_bar: bool = True
    unreadable_images: str = "stop"  # an image that fails to decode in training: "stop" the run or "skip" it (counted)
    check_data: bool = True  # run the validator's no-decode checks before the first step (stop on errors)

    # ------------------------------------------------------------------ presets
    @classmethod
    def for_detector(cls, **overrides: Any) -> TrainConfig:
        """Stage 0 (reference §4.1): aux losses on, lr 1e-4 / 1e-5, batch 4 x 8 GPUs, 150 + 50 epochs."""
        values: dict[str, Any] = {
            "stage": "detector",
            "output_dir": "runs/detector",
            "loss": LossConfig(auxiliary_loss=True),
            "lr": 1e-4,
            "lr_backbone": 1e-5,
            "max_epochs": 150,
            "finetune_epochs": 50,
            "accumulate_grad_batches": 1,
        }
        values.update(overrides)
        return cls(**values).validate()

    @classmethod
    def for_open_images(cls, **overrides: Any) -> TrainConfig:
        """Stage 1-2 on Open Images V6 (reference §4.5): connectivity weight 90, random non-matching sampling."""
        values: dict[str, Any] = {"data": DataConfig(kind="oi"), "loss": LossConfig.for_open_images()}
        values.update(overrides)
        return cls(**values).validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> TrainConfig:
        """Raise ValueError for inconsistent settings; returns self."""
        if self.stage not in STAGES:
            raise ValueError(f"TrainConfig.stage must be one of {STAGES}, got {self.stage!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"TrainConfig.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("lr", "lr_backbone", "lr_relation_head", "weight_decay", "gradient_clip_val"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in (
            "max_epochs",
            "batch_size",
            "accumulate_grad_batches",
            "num_nodes",
            "log_every_n_steps",
            "val_every_n_epochs",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in (
            "finetune_epochs",
            "early_stopping_patience",
            "num_workers",
            "checkpoint_every_n_steps",
            "warmup_steps",
            "fast_dev_run",
            "sanity_val_steps",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.finetune_lr_factor <= 1:
            raise ValueError(f"TrainConfig.finetune_lr_factor must be in (0, 1], got {self.finetune_lr_factor}")
        if self.init_from and self.detector_weights:
            raise ValueError("TrainConfig: give init_from or detector_weights, not both")
        if self.reinitialize not in REINITIALIZE_POLICIES:
            raise ValueError(
                f"TrainConfig.reinitialize must be one of {REINITIALIZE_POLICIES}, got {self.reinitialize!r}"
            )
        if self.unreadable_images not in ("stop", "skip"):
            raise ValueError(f"TrainConfig.unreadable_images must be 'stop' or 'skip', got {self.unreadable_images!r}")
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise ValueError(f"TrainConfig.eval_batch_size must be >= 1, got {self.eval_batch_size}")
        self.data.validate()
        self.model.validate()
        return self

    @property
    def effective_batch_size(self) -> int | None:
        """Images per optimiser step over all devices (None when `devices` is not a plain count)."""
        if not isinstance(self.devices, int):
            return None
        return self.batch_size * self.devices * self.num_nodes * self.accumulate_grad_batches

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys are an error (a typo must not silently keep a default)."""
        values = check_fields(cls, values)
        if isinstance(values.get("data"), dict):
            values["data"] = DataConfig.from_dict(values["data"])
        if isinstance(values.get("model"), dict):
            values["model"] = EGTRConfig.from_dict(values["model"])
        if isinstance(values.get("loss"), dict):
            values["loss"] = LossConfig.from_dict(values["loss"])
        return cls(**values).validate()

    def save(self, path: str | Path) -> None:
        """Write the config as JSON (atomically)."""
        write_json(path, {"train_config": self.to_dict()})

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a config written by `save` (or a bare dict of fields)."""
        values = read_json(path, ConfigError)
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a JSON object, got {type(values).__name__}")
        try:
            return cls.from_dict(values.get("train_config", values))
        except ValueError as error:
            raise ConfigError(f"{path}: {error}") from error

    def with_overrides(self, overrides: list[str]) -> TrainConfig:
        """A copy with `key=value` overrides applied (dotted keys for `data.`, `model.`, `loss.`).

        Values are parsed as JSON when possible (numbers, true/false, null, lists), else taken as strings.
        """
        values = self.to_dict()
        for override in overrides:
            key, separator, raw = override.partition("=")
            if not separator or not key:
                raise ValueError(f"override {override!r} is not of the form key=value")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            *parents, leaf = key.split(".")
            target = values
            for parent in parents:
                if not isinstance(target.get(parent), dict):
                    raise ValueError(f"override {override!r}: {parent!r} is not a nested config")
                target = target[parent]
            if leaf not in target:
                raise ValueError(f"override {override!r}: unknown setting {key!r}")
            target[leaf] = value
        return TrainConfig.from_dict(values)


def resolve_train_config(
    stage: str,
    *,
    dataset: str = "vg",
    config_file: str | Path | None = None,
    resume: bool = False,
    data_root: str | None = None,
    updates: dict[str, Any] | None = None,
    overrides: Sequence[str] = (),
) -> TrainConfig:
    """The config of a training run, as `egtr train` / `egtr pretrain-detector` build it.

    Precedence, lowest first: the stage preset for `dataset` ("vg" or "oi"), or `config_file`, or with `resume`
    the config saved in the run folder (`updates["output_dir"]`); then `updates` (field -> value) and `data_root`;
    then `key=value` `overrides` (dotted for `data.`, `model.`, `loss.`).

    Raises:
        ConfigError: a missing run folder or config, a config of the other stage, or a bad value.
    """
    updates = dict(updates or {})
    if resume:
        output_dir = updates.get("output_dir")
        if not output_dir:
            raise ConfigError("resuming needs the run folder (--out)")
        saved = Path(str(output_dir)) / "config.json"
        if not saved.is_file():
            raise ConfigError(f"{saved}: no saved config; is {output_dir} a training run folder?")
        config = TrainConfig.load(saved)
    elif config_file:
        config = TrainConfig.load(config_file)
    elif stage == "detector":
        config = TrainConfig.for_detector(data=DataConfig(kind=dataset))
    elif dataset == "oi":
        config = TrainConfig.for_open_images(output_dir="runs/egtr")
    else:
        config = TrainConfig()
    if config.stage != stage:
        raise ConfigError(f"the config is for stage {config.stage!r}, but this command trains stage {stage!r}")
    if data_root is not None:
        updates["data"] = dataclasses.replace(config.data, root=data_root)
    return dataclasses.replace(config, **updates).with_overrides(list(overrides)).validate()
