"""`egtr predict`'s bulk mode (docs/bulk.md): record shards for whole corpora instead of one JSON per image.

`add_arguments` declares the options on the predict parser; `run` is `egtr predict` when `--output-format` is
jsonl, jsonl.gz or parquet; `listed_images` gives the default mode the files of `--input-list`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from egtr.cli.options import adopt_lightning_logging, positive_int

if TYPE_CHECKING:
    from egtr.inference import Predictor


def add_arguments(parser: argparse.ArgumentParser) -> None:
    bulk = parser.add_argument_group("bulk prediction (docs/bulk.md)")
    bulk.add_argument(
        "--input-list",
        action="append",
        default=[],
        metavar="FILE",
        help="more images: a text file (one path per line), or a .csv / .parquet file with a --path-column",
    )
    bulk.add_argument("--path-column", default="path", help="column of CSV / Parquet lists with the paths (path)")
    bulk.add_argument("--data-root", default=None, help="folder that relative paths in input lists start from")
    bulk.add_argument(
        "--output-format",
        choices=("files", "jsonl", "jsonl.gz", "parquet"),
        default="files",
        help="files: one JSON + drawing per image (default); jsonl, jsonl.gz, parquet: shards of records, resumable",
    )
    bulk.add_argument("--shard-size", type=positive_int, default=1000, help="images per output shard (default 1000)")
    bulk.add_argument("--devices", default="1", help="processes per node, one per GPU, or 'auto' (default 1)")
    bulk.add_argument("--num-nodes", type=positive_int, default=1, help="machines, by torchrun or SLURM (default 1)")
    bulk.add_argument(
        "--bucket", action="store_true", help="batch similar aspect ratios with padding: faster, slightly different"
    )
    bulk.add_argument("--overwrite", action="store_true", help="replace earlier results in --out, whatever settings")


def listed_images(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The default mode's inputs: (image inputs for `expand_image_paths`, the files of `--input-list`). Tar shards,
    `--devices` and `--num-nodes` need a bulk format (BulkInputError)."""
    from egtr.bulk import BulkInputError, Corpus, split_inputs

    image_inputs, tars = split_inputs(args.images)
    if tars or args.devices != "1" or args.num_nodes != 1:
        raise BulkInputError("tar shards, --devices and --num-nodes need --output-format jsonl, jsonl.gz or parquet")
    if not args.input_list:
        return image_inputs, []
    listed = Corpus(input_lists=tuple(args.input_list), data_root=args.data_root, path_column=args.path_column)
    paths = []
    for _, path, problem in listed.check().list_entries():
        if problem or path is None:
            print(f"warning: {problem}", file=sys.stderr)
        else:
            paths.append(path)
    return image_inputs, paths


def run(args: argparse.Namespace, make_predictor: Callable[[argparse.Namespace], Predictor]) -> int:
    """`egtr predict --output-format jsonl|jsonl.gz|parquet`; `make_predictor` is predict's (from the options)."""
    adopt_lightning_logging()
    from egtr.bulk import BulkInputError, BulkOptions, Corpus, lightning_devices, predict_corpus, split_inputs
    from egtr.inference.files import expand_image_paths
    from egtr.video.commandline import is_video_input

    if args.images and is_video_input(args.images):
        raise BulkInputError(f"--output-format {args.output_format} is for images; videos: see docs/video.md")
    image_inputs, tars = split_inputs(args.images)
    paths, unmatched = expand_image_paths(image_inputs, recursive=args.recursive) if image_inputs else ([], [])
    for item in unmatched:
        print(f"warning: {item}: no such file, no images in this folder, or no match", file=sys.stderr)
    if args.format:
        print(f"warning: --format ignored: no drawings with --output-format {args.output_format}", file=sys.stderr)
    corpus = Corpus(
        files=tuple(str(path) for path in paths),
        input_lists=tuple(args.input_list),
        tar_shards=tuple(tars),
        data_root=args.data_root,
        path_column=args.path_column,
        shard_size=args.shard_size,
    ).check()  # before the model loads: a missing list fails at once
    accelerator, devices = lightning_devices(args.device, args.devices)
    # Loaded on the CPU: Lightning moves the model to each rank's device (not every rank's copy to cuda:0 first).
    predictor = make_predictor(argparse.Namespace(**{**vars(args), "device": "cpu"}))
    options = BulkOptions(
        out=Path(args.out),
        output_format=args.output_format,
        accelerator=accelerator,
        devices=devices,
        num_nodes=args.num_nodes,
        num_workers=args.decode_workers,
        bucket=args.bucket,
        overwrite=args.overwrite,
        progress=not args.no_progress,  # a bar on a terminal, plain lines in a log file
    )
    summary = predict_corpus(predictor, corpus, options)
    if summary.manifest is not None:  # rank 0: the whole run
        counts = summary.manifest["counts"]
        print(
            f"{counts['records']} images predicted, {counts['errors']} unreadable (errors.jsonl); results in {args.out}"
        )
        return 1 if counts["errors"] or unmatched else 0
    return 1 if summary.errors or unmatched else 0
