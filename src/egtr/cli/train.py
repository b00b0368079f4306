"""`egtr train` and `egtr pretrain-detector`: parsed options -> `TrainConfig` -> the training function.

Precedence, lowest first (`egtr.training.resolve_train_config`): the stage preset (`--dataset vg|oi`), or
`--config FILE`, or with `--resume` the config saved in the run folder; then the named options; then `key=value`
overrides (dotted for `data.`, `model.`, `loss.`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from egtr.cli.options import (
    Subparsers,
    add_data_root,
    add_dataset,
    add_deprecated,
    add_dtype,
    add_progress,
    check_out,
    non_negative_int,
    positive_int,
    progress_enabled,
)
from egtr.console import adopt_lightning_logging
from egtr.extras import require_extra
from egtr.fileio import is_disk_full
from egtr.runtime import LIGHTNING_PRECISION, dtype_name
from egtr.stopping import Stopped

# Named options that map one-to-one onto TrainConfig fields (dest -> field).
FIELD_OPTIONS = (
    "detector_weights",
    "backbone_weights",
    "init_from",
    "reinitialize",
    "devices",
    "num_nodes",
    "accelerator",
    "batch_size",
    "accumulate_grad_batches",
    "max_epochs",
    "finetune_epochs",
    "num_workers",
    "fast_dev_run",
    "seed",
)


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `train` and `pretrain-detector` (see docs/training.md)."""
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="any TrainConfig setting, dotted for nested ones: lr=1e-4 data.eval_size=600 model.num_queries=100",
    )
    add_data_root(parser)
    add_dataset(parser)
    parser.add_argument("--config", default=None, help="a TrainConfig JSON file (e.g. a run's config.json)")
    parser.add_argument("--out", default=None, help="run folder (checkpoints, metrics, final model)")
    add_deprecated(parser, "--output-dir", "--out", "out")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.ckpt")
    parser.add_argument(
        "--detector-weights",
        default=None,
        help="pre-trained detector: a run's model/ dir, the released DETR dir or COCO Deformable DETR",
    )
    parser.add_argument("--backbone-weights", default=None, help="ImageNet ResNet checkpoint (torchvision/timm names)")
    parser.add_argument(
        "--init-from",
        default=None,
        help="fine-tune this EGTR model (a model folder, the official artifact or a .ckpt) on the data: its sizes "
        "are used, its class/predicate heads re-initialised if the labels differ (docs/own-data.md)",
    )
    parser.add_argument(
        "--reinitialize",
        choices=("none", "labels", "any"),
        default=None,
        help="what --init-from / --detector-weights may re-initialise: none (strict), labels (default: class, "
        "predicate and frequency tensors when the label sets differ), any (whatever does not fit, e.g. COCO)",
    )
    parser.add_argument("--devices", default=None, help="devices per node (>1: DDP), or 'auto'")
    parser.add_argument("--num-nodes", type=positive_int, default=None, help="nodes (torchrun / SLURM launch)")
    parser.add_argument("--accelerator", default=None, choices=("cpu", "gpu", "cuda", "auto"), help="Lightning's")
    add_dtype(parser, "training precision: float32, or bfloat16/float16 mixed precision (Lightning's autocast)")
    add_deprecated(parser, "--precision", "--dtype", "precision", choices=tuple(LIGHTNING_PRECISION.values()))
    parser.add_argument("--batch-size", type=positive_int, default=None, help="images per device and step")
    parser.add_argument("--accumulate-grad-batches", type=positive_int, default=None, help="steps per update")
    parser.add_argument("--max-epochs", type=positive_int, default=None, help="epochs of the main pass")
    parser.add_argument("--finetune-epochs", type=non_negative_int, default=None, help="epochs of the x0.1 pass")
    parser.add_argument("--num-workers", type=non_negative_int, default=None, help="DataLoader workers per device")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--fast-dev-run",
        type=positive_int,
        nargs="?",
        const=1,
        default=None,
        help="smoke test: N training + N validation batches per pass, no checkpoints",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    add_progress(parser)


def add_command(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    train = subparsers.add_parser(
        "train",
        parents=[common],
        help="EGTR relation training from a pre-trained detector (main + x0.1 pass, reference §4.2-4.3)",
    )
    _add_training_arguments(train)
    train.set_defaults(run=lambda args: run(args, "egtr"))
    pretrain = subparsers.add_parser(
        "pretrain-detector",
        parents=[common],
        help="stage 0: Deformable DETR training on the scene-graph dataset (reference §4.1)",
    )
    _add_training_arguments(pretrain)
    pretrain.set_defaults(run=lambda args: run(args, "detector"))


def _named_updates(args: argparse.Namespace) -> dict[str, object]:
    updates: dict[str, object] = {
        name: getattr(args, name) for name in FIELD_OPTIONS if getattr(args, name) is not None
    }
    if isinstance(updates.get("devices"), str) and str(updates["devices"]).isdigit():
        updates["devices"] = int(str(updates["devices"]))
    if args.dtype is not None:
        updates["precision"] = LIGHTNING_PRECISION[dtype_name(args.dtype)]
    elif getattr(args, "precision", None) is not None:
        updates["precision"] = args.precision
    if args.out is not None:
        updates["output_dir"] = args.out
    if args.no_progress or not progress_enabled(args):
        updates["progress_bar"] = False
    return updates


def surviving_checkpoint(run_dir: Path) -> str:
    """Which checkpoint a failed run leaves to resume from (the newest `last.ckpt` of its passes), as a phrase."""
    import torch

    candidates = [path for path in run_dir.glob("*/checkpoints/last.ckpt") if path.is_file()]
    if not candidates:
        return "no checkpoint was completed yet"
    newest = max(candidates, key=lambda path: path.stat().st_mtime)
    try:
        payload = torch.load(newest, map_location="cpu", weights_only=True)
        where = f" (epoch {payload['epoch']}, step {payload['global_step']})"
    except Exception:  # the phrase is a hint; an unreadable file is still named
        where = ""
    return f"the last complete checkpoint is {newest}{where}"


def how_to_continue(run_dir: Path, command: str, fast_dev_run: int | None = None, change: str = "") -> str:
    """What a stopped training left and the command that continues it (`--resume` only where there is a checkpoint
    to resume from: without one, `--resume` would start from the beginning anyway); `change` is a setting to give
    (`lr=<a lower rate>`)."""
    if fast_dev_run:
        return "a fast-dev-run saves nothing"
    saved = surviving_checkpoint(run_dir)
    if saved.startswith("no checkpoint"):
        return f"{saved}; start again with the same command" + (f" and {change}" if change else "")
    return f"{saved}; continue with `{command} --resume --out {run_dir}" + (f" {change}`" if change else "`")


def run(args: argparse.Namespace, stage: str) -> int:
    require_extra("train", "egtr pretrain-detector" if stage == "detector" else "egtr train")
    adopt_lightning_logging()
    from egtr.training import resolve_train_config

    config = resolve_train_config(
        stage,
        dataset=args.dataset,
        config_file=args.config,
        resume=args.resume,
        data_root=args.data_root,
        updates=_named_updates(args),
        overrides=args.overrides,
    )
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    if not config.data.root:
        raise argparse.ArgumentTypeError("no dataset: pass --data-root (or data.root=...)")
    check_out(config.output_dir)
    from egtr.training.data_checks import DatasetCheckError
    from egtr.training.engine import pretrain_detector, train_egtr
    from egtr.training.module import NonFiniteLossError

    function = pretrain_detector if stage == "detector" else train_egtr
    command = "pretrain-detector" if stage == "detector" else "train"
    try:
        result = function(config, resume=args.resume)
    except Stopped as stop:
        stop.add_detail(how_to_continue(Path(config.output_dir), f"egtr {command}", config.fast_dev_run))
        raise
    except NonFiniteLossError as error:  # "resume" only where a checkpoint exists to resume from
        advice = how_to_continue(Path(config.output_dir), f"egtr {command}", change="lr=<a lower rate>")
        raise SystemExit(f"error: {error}; {advice}") from error
    except DatasetCheckError as error:  # the whole report (the common handler prints one line)
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if not is_disk_full(error):
            raise
        raise SystemExit(f"error: {error}; {surviving_checkpoint(Path(config.output_dir))}") from error
    if config.fast_dev_run:
        print(f"fast-dev-run: {len(result.passes)} pass(es) ran; nothing was saved")
    if result.model_dir is not None:
        for item in result.passes:
            loss = "n/a" if item.best_validation_loss is None else f"{item.best_validation_loss:.4f}"
            print(f"pass {item.name}: {item.epochs} epochs, {item.global_step} steps, best validation_loss {loss}")
        print(f"final model: {result.model_dir}")
    return 0
