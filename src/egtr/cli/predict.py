"""`egtr predict`: scene graphs of image files, folders and glob patterns (one JSON and drawings per image)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from egtr.cli.bulk import add_arguments as add_bulk_arguments
from egtr.cli.bulk import listed_images
from egtr.cli.bulk import run as run_bulk
from egtr.cli.label_studio import FORMAT as LABEL_STUDIO
from egtr.cli.label_studio import GRAPHS_DIR, add_reference_options, graphs_of_run, image_root, write_tasks
from egtr.cli.options import (
    Subparsers,
    add_device,
    add_dtype,
    add_max_pixels,
    add_model,
    add_prediction_options,
    add_progress,
    add_runtime,
    add_sizes,
    check_out,
    load_predictor,
    non_negative_int,
    positive_int,
    progress_enabled,
)
from egtr.errors import MissingExtraError
from egtr.extras import has_extra, require_extra
from egtr.images import describe_source
from egtr.preprocessing import PAPER_LONGEST_EDGE, PAPER_SHORTEST_EDGE
from egtr.stopping import Stopped

if TYPE_CHECKING:
    from egtr.inference import Predictor


def add_command(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "predict",
        parents=[common],
        help="scene graphs of images (one JSON and one drawing each) or videos (tracked, smoothed over time)",
        description="Predict scene graphs for image files, folders and glob patterns. Unreadable images are "
        "reported and skipped; the exit code is 1 if any image was skipped. Videos (files, stream URLs, camera "
        "indices) give per-frame JSONL with track ids, relation intervals and changes, and an annotated MP4 "
        "(docs/video.md). With --output-format parquet, jsonl or jsonl.gz: shards of records for whole corpora "
        "(input lists, tar shards, several GPUs and machines), resumable (docs/bulk.md). With --output-format "
        "label-studio: Label Studio tasks whose predictions propose the graphs, and its labelling config "
        "(docs/own-data.md).",
    )
    parser.add_argument(
        "images", nargs="*", help="image files, folders (their image files), glob patterns or WebDataset .tar shards"
    )
    add_model(parser)
    add_runtime(parser)
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    add_prediction_options(parser)
    add_sizes(parser, PAPER_SHORTEST_EDGE, PAPER_LONGEST_EDGE, "the paper's evaluation")
    add_device(parser)
    add_dtype(parser)
    parser.add_argument("--batch-size", type=positive_int, default=1, help="images per forward pass")
    parser.add_argument(
        "--format", nargs="*", default=None, choices=("png", "svg", "pdf"), help="drawing formats (default png)"
    )
    parser.add_argument("--no-draw", action="store_true", help="write only the JSON files")
    parser.add_argument(
        "--draw-relations", type=positive_int, default=40, help="relations shown in a drawing (default 40)"
    )
    parser.add_argument("--dpi", type=positive_int, default=120, help="resolution of PNG drawings (default 120)")
    parser.add_argument("--recursive", action="store_true", help="also take images from sub-folders")
    parser.add_argument(
        "--decode-workers", type=non_negative_int, default=2, help="threads decoding ahead of the model (default 2)"
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="the runtime's CPU threads per process (default: the cores available to the command / its processes)",
    )
    add_max_pixels(parser, "skip (and report)")
    parser.add_argument(
        "--boxes",
        default=None,
        help="JSON of given objects per image (box, optional label/label_name; docs/inference.md): relations "
        "between exactly those objects (SGCls; PredCls with labels) instead of detected ones",
    )
    add_progress(parser)
    from egtr.cli.video import add_video_arguments  # videos: docs/video.md

    add_video_arguments(parser)
    add_bulk_arguments(parser)  # --output-format parquet|jsonl|jsonl.gz: docs/bulk.md
    add_reference_options(parser)  # --output-format label-studio: docs/own-data.md
    parser.set_defaults(run=run)


def make_predictor(args: argparse.Namespace) -> Predictor:
    """The `Predictor` of the options (images and videos alike)."""
    return load_predictor(args, batch_size=args.batch_size)


def run(args: argparse.Namespace) -> int:
    from egtr.cli.video import is_video_input, run_video_predict
    from egtr.inference.files import FilesReport, expand_image_paths, predict_files

    check_out(args.out)  # before the model loads: a file or a read-only folder must not cost a model load
    per_image = args.output_format in ("files", LABEL_STUDIO)  # one JSON per image; the others: record shards
    if args.boxes is not None and (not per_image or is_video_input(args.images)):
        raise argparse.ArgumentTypeError("--boxes works with image files and --output-format files or label-studio")
    if not per_image:
        return run_bulk(args, make_predictor)
    from egtr.runtime import set_threads

    set_threads(args.threads)  # bulk mode sets them in each of its processes
    if is_video_input(args.images):
        if args.output_format == LABEL_STUDIO:
            raise argparse.ArgumentTypeError("--output-format label-studio is for images; videos: see docs/video.md")
        return run_video_predict(args, make_predictor)
    image_inputs, listed = listed_images(args)
    paths, unmatched = expand_image_paths([*image_inputs, *listed], recursive=args.recursive)
    for item in unmatched:
        print(f"warning: {item}: no such file, no images in this folder, or no match", file=sys.stderr)
    if not paths:
        raise FileNotFoundError("no images to process")
    formats = [] if args.output_format == LABEL_STUDIO else draw_formats(args)  # extras said before the model loads
    root = image_root(args, paths) if args.output_format == LABEL_STUDIO else None  # checked before the model loads
    predictor = make_predictor(args)
    given_boxes = None
    if args.boxes is not None:
        from egtr.inference.boxes_file import boxes_for_images, read_boxes_file

        given_boxes, unused = boxes_for_images(read_boxes_file(args.boxes, predictor.class_names), paths, args.boxes)
        for key in unused:
            print(f"warning: {args.boxes}: entry {key!r} names none of the images to predict", file=sys.stderr)
    report = FilesReport(outputs={}, failures={})
    # Label Studio tasks: the graphs go to OUT/graphs/ (no drawings: Label Studio shows the proposals itself).
    graphs_out = Path(args.out) / GRAPHS_DIR if args.output_format == LABEL_STUDIO else Path(args.out)
    try:
        predict_files(
            predictor,
            paths,
            graphs_out,
            draw_formats=formats,
            max_draw_relations=args.draw_relations,
            dpi=args.dpi,
            progress=progress_enabled(args),
            decode_workers=args.decode_workers,
            given_boxes=given_boxes,
            report=report,
        )
    except Stopped as stop:
        rest = len(paths) - len(report.outputs) - len(report.failures) - len(report.rejected)
        stop.add_detail(
            f"{len(report.outputs)} of {len(paths)} images written to {args.out} (each complete), {rest} not "
            "processed; run the command again for those"
        )
        raise
    print(f"{len(report.outputs)} of {len(paths)} images processed; results in {args.out}")
    if root is not None:
        graphs = graphs_of_run(paths, report.outputs)
        version = Path(args.model).resolve().name  # the model folder (or file) name
        write_tasks(args, Path(args.out), root, graphs, predictor.class_names, predictor.predicate_names, version)
    _print_skipped(report.rejected, f"their given boxes (--boxes {args.boxes}) were rejected")
    _print_skipped(report.failures, "they could not be read or their results could not be written")
    return 1 if report.failures or report.rejected or unmatched else 0


def draw_formats(args: argparse.Namespace) -> list[str]:
    """The drawings to make: none with --no-draw, those of --format (which need the viz extra), else PNG when the
    viz extra is installed. A core install (`pip install egtr`) writes the JSON files and says why nothing is drawn."""
    if args.no_draw:
        return []
    if args.format:
        require_extra("viz", "--format " + " ".join(args.format))
        return list(args.format)
    if not has_extra("viz"):
        print(f"note: JSON only, no drawings: {MissingExtraError('drawing', 'viz')} (or --no-draw)", file=sys.stderr)
        return []
    return ["png"]


def _print_skipped(reasons: dict[str, str], why: str) -> None:
    """`N image(s) skipped because WHY:`, then one line per image with its reason."""
    if not reasons:
        return
    print(f"{len(reasons)} image(s) skipped because {why}:", file=sys.stderr)
    for path, reason in reasons.items():
        print(f"  {reason if path in reason else f'{describe_source(path)}: {reason}'}", file=sys.stderr)
