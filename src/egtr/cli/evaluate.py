"""`egtr evaluate`: the reference SGG metrics of a model on a dataset split, or of a saved predictions file."""

from __future__ import annotations

import argparse

from egtr.cli.options import (
    Subparsers,
    add_data_root,
    add_dataset,
    add_deprecated,
    add_device,
    add_progress,
    add_runtime,
    add_sizes,
    check_out,
    non_negative_int,
    positive_int,
    progress_enabled,
)
from egtr.preprocessing import PAPER_LONGEST_EDGE, PAPER_SHORTEST_EDGE

MODES = ("graph_constraint", "no_graph_constraint", "open_images")


def add_command(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        parents=[common],
        help="reference SGG metrics (R@K, mR@K, OI wmAP, AP50) of a model on a dataset split, or of a predictions file",
        description="Run a model over a dataset split (or read a saved predictions file) and compute the original "
        "EGTR evaluation: VG R@K/mR@K with and without graph constraint and COCO AP50, or the Open Images micro R@50, "
        "wmAP_rel, wmAP_phr and score_wtd. Writes a JSON with every number and the settings, prints a table.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model",
        help="model: our directory, the official artifact or a .ckpt, an `egtr train` run or pass folder, or an "
        "`egtr export` folder",
    )
    source.add_argument("--predictions", help="a predictions .npz written by --save-predictions (no model needed)")
    add_data_root(parser)
    add_dataset(parser)
    parser.add_argument("--split", choices=("train", "val", "test"), default="test")
    parser.add_argument(
        "--ground-truth",
        default=None,
        help="with --predictions: ground-truth .npz (default: the one saved next to the predictions, else --data-root)",
    )
    add_sizes(parser, PAPER_SHORTEST_EDGE, PAPER_LONGEST_EDGE, "the paper's evaluation")
    parser.add_argument("--batch-size", type=positive_int, default=1)
    parser.add_argument("--num-workers", type=non_negative_int, default=0, help="DataLoader workers")
    add_device(parser)
    add_runtime(parser)
    parser.add_argument("--top-k", type=positive_int, default=100, help="triplets kept per image (default 100)")
    parser.add_argument(
        "--modes",
        default=None,
        help="comma list of graph_constraint, no_graph_constraint, open_images (default: VG both graph modes; OI "
        "graph_constraint,open_images)",
    )
    parser.add_argument(
        "--task",
        choices=("sgdet", "sgcls", "predcls"),
        default="sgdet",
        help="sgdet: detect the objects (default); sgcls: the ground-truth boxes are given; predcls: boxes and labels "
        "are given (docs/evaluation.md, 'Given boxes')",
    )
    parser.add_argument("--no-detection", action="store_true", help="skip the detection AP (SGDet)")
    parser.add_argument("--zero-shot", action="store_true", help="also zero-shot recall (triplets unseen in train)")
    parser.add_argument("--max-images", type=positive_int, default=None, help="only the first N images (quick check)")
    parser.add_argument("--save-predictions", default=None, help="write the predictions (and ground truth) here")
    parser.add_argument("--out", default=None, help="metrics JSON path (default: evaluation-<split>.json)")
    add_deprecated(parser, "--output", "--out", "out")
    add_progress(parser)
    parser.set_defaults(run=run)


def _modes(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    modes = [mode.strip() for mode in text.split(",") if mode.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        raise argparse.ArgumentTypeError(f"--modes: unknown mode(s) {unknown or [text]}; expected some of {MODES}")
    return tuple(modes)


def run(args: argparse.Namespace) -> int:
    from egtr.model_evaluation import EvaluationSettings, run_evaluation

    if args.predictions is not None and args.task != "sgdet":
        raise argparse.ArgumentTypeError(
            "--task applies to --model; a predictions file keeps the task it was made with"
        )
    output_file = check_out(args.out or f"evaluation-{args.split}.json", "file")
    settings = EvaluationSettings(
        split=args.split,
        task=args.task,
        modes=_modes(args.modes),
        top_k=args.top_k,
        detection=not args.no_detection,
        zero_shot=args.zero_shot,
        max_images=args.max_images,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=args.device,
        progress=progress_enabled(args),
    )
    report, output = run_evaluation(
        model=args.model,
        predictions=args.predictions,
        data_root=args.data_root,
        kind=args.dataset,
        ground_truth=args.ground_truth,
        size=args.size,
        max_size=args.max_size,
        runtime=args.runtime,
        save_predictions=args.save_predictions,
        output=output_file,
        settings=settings,
    )
    print(report.format_table())
    print(f"metrics and settings written to {output}")
    return 0
