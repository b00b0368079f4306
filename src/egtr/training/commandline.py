"""The `egtr train` / `egtr pretrain-detector` commands: parsed arguments -> `TrainConfig` -> training function.

Precedence, lowest first: the stage preset (`--dataset vg|oi`), or `--config FILE`, or with `--resume` the config
saved in the run directory; then the named options; then `key=value` overrides (dotted for `data.`, `model.`,
`loss.`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from egtr.data.config import DataConfig
from egtr.training.config import TrainConfig

logger = logging.getLogger(__name__)

# Named command-line options that map one-to-one onto TrainConfig fields.
_FIELD_OPTIONS = (
    "output_dir",
    "detector_weights",
    "backbone_weights",
    "devices",
    "num_nodes",
    "accelerator",
    "precision",
    "batch_size",
    "accumulate_grad_batches",
    "max_epochs",
    "finetune_epochs",
    "num_workers",
    "fast_dev_run",
    "seed",
)


def _preset(stage: str, dataset: str) -> TrainConfig:
    if stage == "detector":
        return TrainConfig.for_detector(data=DataConfig(kind=dataset))
    if dataset == "oi":
        return TrainConfig.for_open_images(output_dir="runs/egtr")
    return TrainConfig()


def config_from_arguments(args: argparse.Namespace, stage: str) -> TrainConfig:
    """Build the run's config from the parsed arguments (see the module docstring for the precedence)."""
    if args.resume:
        if not args.output_dir:
            raise ValueError("--resume needs --output-dir (the run directory to continue)")
        saved = Path(args.output_dir) / "config.json"
        if not saved.is_file():
            raise FileNotFoundError(f"{saved}: no saved config; is {args.output_dir} a training run directory?")
        config = TrainConfig.load(saved)
    elif args.config:
        config = TrainConfig.load(args.config)
    else:
        config = _preset(stage, args.dataset)
    if config.stage != stage:
        raise ValueError(f"the config is for stage {config.stage!r}, but this command trains stage {stage!r}")
    updates: dict[str, Any] = {
        name: getattr(args, name) for name in _FIELD_OPTIONS if getattr(args, name, None) is not None
    }
    if isinstance(updates.get("devices"), str) and updates["devices"].isdigit():
        updates["devices"] = int(updates["devices"])
    if args.data_root is not None:
        updates["data"] = dataclasses.replace(config.data, root=args.data_root)
    config = dataclasses.replace(config, **updates)
    return config.with_overrides(args.overrides or []).validate()


def run_command(args: argparse.Namespace, stage: str) -> int:
    """Entry point of both commands; returns the exit code."""
    from egtr.training.engine import pretrain_detector, train_egtr
    from egtr.training.module import NonFiniteLossError

    config = config_from_arguments(args, stage)
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    if not config.data.root:
        print("error: no dataset: pass --data-root (or data.root=...)")
        return 2
    function = pretrain_detector if stage == "detector" else train_egtr
    try:
        result = function(config, resume=args.resume)
    except NonFiniteLossError as error:
        print(f"error: {error}")
        return 1
    if result.model_dir is not None:
        for item in result.passes:
            loss = "n/a" if item.best_validation_loss is None else f"{item.best_validation_loss:.4f}"
            print(f"pass {item.name}: {item.epochs} epochs, {item.global_step} steps, best validation_loss {loss}")
        print(f"final model: {result.model_dir}")
    return 0
