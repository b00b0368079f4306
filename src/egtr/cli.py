"""The `egtr` command line: a thin layer of argparse over the Python API.

Each sub-command has one `_add_<name>_command(subparsers)` function that declares its arguments and sets
`func`, a function of the parsed arguments that calls the library and returns an exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def _add_info_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="describe a model (config, parameters) and optionally run one forward pass")
    parser.add_argument("--model", default=None, help="model directory or official artifact; default: the VG config, random weights")
    parser.add_argument("--image", default=None, help="run one forward pass on this image and print a summary")
    parser.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from egtr.models.summary import describe_model

    print(describe_model(args.model, args.image))
    return 0


def _add_data_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="check, summarise or generate datasets (VG/RelTR and OI/SGTR layouts)")
    data_commands = parser.add_subparsers(dest="data_command", required=True)
    validate = data_commands.add_parser("validate", help="check a dataset and report every problem")
    validate.add_argument("path", help="dataset folder")
    validate.add_argument("--kind", choices=("vg", "oi"), default="vg", help="layout: vg (RelTR, native) or oi (SGTR)")
    validate.add_argument("--split", action="append", choices=("train", "val", "test"), help="split(s); default all")
    validate.add_argument("--no-decode", action="store_true", help="only check that image files exist (fast)")
    validate.add_argument("--strict", action="store_true", help="exit with 1 on warnings too")
    validate.set_defaults(func=_run_data_validate)
    stats = data_commands.add_parser("stats", help="counts per class and predicate, frequent triplets, histograms")
    stats.add_argument("path", help="dataset folder")
    stats.add_argument("--kind", choices=("vg", "oi"), default="vg")
    stats.add_argument("--split", choices=("train", "val", "test"), default="train")
    stats.add_argument("--top", type=int, default=20, help="number of frequent triplets to list")
    stats.add_argument("--plot", default=None, help="write class/predicate histograms to this PNG file")
    stats.set_defaults(func=_run_data_stats)
    synth = data_commands.add_parser("synth", help="generate the synthetic scene world in the VG (RelTR) layout")
    synth.add_argument("path", help="output folder")
    synth.add_argument("--num-train", type=int, default=800)
    synth.add_argument("--num-val", type=int, default=100)
    synth.add_argument("--num-test", type=int, default=100)
    synth.add_argument("--image-size", type=int, default=192, help="square image side in pixels")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=_run_data_synth)


def _run_data_validate(args: argparse.Namespace) -> int:
    from egtr.data.validate import validate_dataset

    problems = validate_dataset(args.path, args.kind, args.split or ("train", "val", "test"), not args.no_decode)
    for problem in problems:
        print(problem)
    errors = sum(problem.severity == "error" for problem in problems)
    warnings = len(problems) - errors
    print(f"{args.path}: {errors} error(s), {warnings} warning(s)")
    return 1 if errors or (args.strict and warnings) else 0


def _run_data_stats(args: argparse.Namespace) -> int:
    from egtr.data import DataError, OpenImagesDataset, VisualGenomeDataset
    from egtr.data.summary import format_summary, plot_summary, summarize_dataset

    try:
        dataset_class = VisualGenomeDataset if args.kind == "vg" else OpenImagesDataset
        dataset = dataset_class(args.path, args.split)
    except DataError as error:
        print(f"error: {error} (run `egtr data validate` for a full report)", file=sys.stderr)
        return 1
    summary = summarize_dataset(dataset)
    print(format_summary(summary, args.top))
    if args.plot:
        print(f"histograms written to {plot_summary(summary, args.plot)}")
    return 0


def _run_data_synth(args: argparse.Namespace) -> int:
    from egtr.data.synthetic import generate_synthetic_dataset

    root = generate_synthetic_dataset(args.path, args.num_train, args.num_val, args.num_test, args.image_size, args.seed)
    print(f"synthetic scene world written to {root}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="egtr", description="EGTR scene graph generation")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add_command in (_add_info_command, _add_data_command):
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
