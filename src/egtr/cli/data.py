"""`egtr data validate|stats|synth|import|export|select`: check, summarise, generate, convert datasets, and choose
what to label next."""

from __future__ import annotations

import argparse

from egtr.cli.data_import import add_commands as add_import_commands
from egtr.cli.data_select import add_command as add_select_command
from egtr.cli.options import (
    Subparsers,
    add_data_root,
    add_dataset,
    check_out,
    data_root_of,
    deprecation_note,
    non_negative_int,
    positive_int,
)


def add_command(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "data", parents=[common], help="check, summarise or generate datasets (VG/RelTR and OI/SGTR layouts)"
    )
    commands = parser.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", parents=[common], help="check a dataset and report every problem")
    add_data_root(validate, required=True, positional_alias=True)
    add_dataset(validate)
    validate.add_argument("--split", action="append", choices=("train", "val", "test"), help="split(s); default all")
    validate.add_argument("--no-decode", action="store_true", help="only check that image files exist (fast)")
    validate.add_argument("--strict", action="store_true", help="exit with 1 on warnings too")
    validate.set_defaults(run=run_validate)

    stats = commands.add_parser(
        "stats", parents=[common], help="counts per class and predicate, frequent triplets, histograms"
    )
    add_data_root(stats, required=True, positional_alias=True)
    add_dataset(stats)
    stats.add_argument("--split", choices=("train", "val", "test"), default="train")
    stats.add_argument("--top", type=positive_int, default=20, help="number of frequent triplets to list")
    stats.add_argument("--plot", default=None, help="write class/predicate histograms to this PNG file")
    stats.set_defaults(run=run_stats)

    synth = commands.add_parser(
        "synth", parents=[common], help="generate the synthetic scene world in the VG (RelTR) layout"
    )
    synth.add_argument("--out", default=None, help="output folder")
    synth.add_argument("legacy_path", nargs="?", default=None, metavar="PATH", help=argparse.SUPPRESS)
    synth.add_argument("--num-train", type=non_negative_int, default=800)
    synth.add_argument("--num-val", type=non_negative_int, default=100)
    synth.add_argument("--num-test", type=non_negative_int, default=100)
    synth.add_argument("--image-size", type=positive_int, default=192, help="square image side in pixels")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(run=run_synth)
    add_import_commands(commands, common)
    add_select_command(commands, common)


def _root(args: argparse.Namespace) -> str:
    root = data_root_of(args)
    if root is None:
        raise argparse.ArgumentTypeError("no dataset folder: pass --data-root DIR")
    return root


def run_validate(args: argparse.Namespace) -> int:
    from egtr.data.validate import validate_dataset

    root = _root(args)
    problems = validate_dataset(root, args.dataset, args.split or ("train", "val", "test"), not args.no_decode)
    for problem in problems:
        print(problem)
    errors = sum(problem.severity == "error" for problem in problems)
    warnings = len(problems) - errors
    print(f"{root}: {errors} error(s), {warnings} warning(s)")
    return 1 if errors or (args.strict and warnings) else 0


def run_stats(args: argparse.Namespace) -> int:
    from egtr.data import DataError, OpenImagesDataset, VisualGenomeDataset
    from egtr.data.summary import format_summary, plot_summary, summarize_dataset

    dataset_class = VisualGenomeDataset if args.dataset == "vg" else OpenImagesDataset
    try:
        dataset = dataset_class(_root(args), args.split)
    except DataError as error:
        raise DataError(f"{error} (run `egtr data validate` for a full report)") from error
    summary = summarize_dataset(dataset)
    print(format_summary(summary, args.top))
    if args.plot:
        print(f"histograms written to {plot_summary(summary, args.plot)}")
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from egtr.data.synthetic import generate_synthetic_dataset

    out = args.out
    if args.legacy_path is not None:
        if out is not None and out != args.legacy_path:
            raise argparse.ArgumentTypeError(f"two output folders given: {args.legacy_path} and --out {out}")
        deprecation_note(f"a positional output folder is deprecated; use --out {args.legacy_path}")
        out = args.legacy_path
    if out is None:
        raise argparse.ArgumentTypeError("no output folder: pass --out DIR")
    check_out(out)
    root = generate_synthetic_dataset(out, args.num_train, args.num_val, args.num_test, args.image_size, args.seed)
    print(f"synthetic scene world written to {root}")
    return 0
