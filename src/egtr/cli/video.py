"""`egtr predict` on videos: the video options of the command and the runner it hands video inputs to.

`egtr.cli.predict` declares these options with `add_video_arguments` and calls `run_video_predict` when the inputs are
videos (files with a video suffix, stream URLs or camera indices); this module turns the parsed options into
library calls (`egtr.video.predict_video`), so the library itself never sees argparse.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from egtr.cli.options import progress_enabled
from egtr.errors import ConfigError
from egtr.extras import require_extra
from egtr.video.decode import VideoError, check_sampling, is_video_source, video_info

if TYPE_CHECKING:
    from egtr.inference import Predictor

logger = logging.getLogger(__name__)
MAX_LISTED_RELATIONS = 10  # what fits under the graph panel of an annotated frame


def add_video_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `egtr predict` that only apply to video inputs."""
    group = parser.add_argument_group(
        "videos", "for video files (.mp4, .mkv, .webm, ...), stream URLs (rtsp://, http://) and camera indices"
    )
    sampling = group.add_mutually_exclusive_group()
    sampling.add_argument(
        "--fps", type=float, default=None, metavar="F", help="sample this many frames per second of video"
    )
    sampling.add_argument(
        "--stride", type=int, default=None, metavar="N", help="sample every N-th frame (default: every frame)"
    )
    group.add_argument("--start", type=float, default=None, metavar="SECONDS", help="start at this time in seconds")
    group.add_argument("--end", type=float, default=None, metavar="SECONDS", help="stop at this time in seconds")
    group.add_argument(
        "--smoothing",
        type=float,
        default=0.35,
        metavar="SECONDS",
        help="time constant in seconds of the moving average of a relation's score (0 = none; default 0.35)",
    )
    group.add_argument(
        "--relation-on",
        type=float,
        default=0.4,
        metavar="T",
        help="a relation appears when its smoothed score reaches this (0.4)",
    )
    group.add_argument(
        "--relation-off",
        type=float,
        default=0.1,
        metavar="T",
        help="and ends when it falls below this (hysteresis; default 0.1)",
    )
    group.add_argument(
        "--track-threshold",
        type=float,
        default=0.5,
        metavar="T",
        help="least object score that starts a new track (default 0.5)",
    )
    group.add_argument(
        "--duplicate-iou",
        type=float,
        default=0.7,
        metavar="IOU",
        help="a box overlapping a higher-scoring box of its class this much gets no track (default 0.7; 1 = off)",
    )


def is_video_input(items: list[str]) -> bool:
    return any(is_video_source(item) for item in items)


def run_video_predict(args: argparse.Namespace, make_predictor: Callable[[argparse.Namespace], Predictor]) -> int:
    """`egtr predict` for video inputs; exit code 0, or 1 if some of several videos could not be read or one broke
    off before its end (its frames up to the break are written).

    `make_predictor` builds the `Predictor` from the options, as `egtr predict` does for images. User errors (bad
    options, a missing extra, a single unreadable video) are raised for `egtr.cli.main` to print as one line.
    """
    from egtr.video.pipeline import DEFAULT_OBJECT_THRESHOLD, predict_video
    from egtr.video.temporal import SmoothingConfig
    from egtr.video.tracking import TrackingConfig

    images = [item for item in args.images if not is_video_source(item)]
    if images:
        raise ConfigError(f"give either videos or images, not both (images: {', '.join(images)})")
    require_extra("video", "egtr predict on videos")
    try:
        smoothing = SmoothingConfig(args.smoothing, args.relation_on, args.relation_off)
        check_sampling(args.fps, args.stride, args.start, args.end)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    if not 0 < args.duplicate_iou <= 1:
        raise ConfigError(f"--duplicate-iou must be in (0, 1], got {args.duplicate_iou}")
    duplicate_iou = None if args.duplicate_iou >= 1 else args.duplicate_iou
    tracking = TrackingConfig(activation_threshold=args.track_threshold, duplicate_iou=duplicate_iou)
    failures = []
    for source in args.images:  # unreadable videos are found before the model loads
        try:
            video_info(source)
        except VideoError as error:
            if len(args.images) == 1:
                raise
            print(f"error: {error}", file=sys.stderr)
            failures.append(source)
    if len(failures) == len(args.images):
        raise VideoError(f"none of the {len(failures)} videos could be read")
    predictor = make_predictor(args)
    object_threshold = DEFAULT_OBJECT_THRESHOLD if args.object_threshold is None else args.object_threshold
    for source in args.images:
        if source in failures:
            continue
        try:
            report = predict_video(
                predictor,
                source,
                args.out,
                fps=args.fps,
                stride=args.stride,
                start=args.start,
                end=args.end,
                tracking=tracking,
                smoothing=smoothing,
                object_threshold=object_threshold,
                annotate=not args.no_draw,
                draw_relations=min(args.draw_relations, MAX_LISTED_RELATIONS),
                progress=progress_enabled(args),
            )
        except VideoError as error:  # readable at first, then not (a stream that went away)
            if len(args.images) == 1:
                raise
            print(f"error: {error}", file=sys.stderr)
            failures.append(source)
            continue
        if report.ended_early is not None:  # the frames before the break are written: a warning, and exit 1
            print(f"warning: {report.ended_early}", file=sys.stderr)
            failures.append(source)
        elif report.frames == 0:
            print(f"warning: {source}: no frame in the sampled window (--start/--end)", file=sys.stderr)
        written = ", ".join(str(path) for path in report.outputs.values())
        print(f"{source}: {report.frames} frames at {report.sample_rate:g} per second -> {written}")
    return 1 if failures else 0
