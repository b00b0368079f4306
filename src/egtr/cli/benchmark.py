"""`egtr benchmark`: model-only and end-to-end inference speed, warm-up excluded, device synchronised."""

from __future__ import annotations

import argparse

from egtr.cli.options import (
    Subparsers,
    add_deprecated,
    add_device,
    add_dtype,
    add_model,
    add_runtime,
    add_sizes,
    check_out,
    positive_int,
)
from egtr.preprocessing import FPS_LONGEST_EDGE, FPS_SHORTEST_EDGE


def add_command(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "benchmark",
        parents=[common],
        help="inference speed: model-only and end-to-end FPS, median and spread, warm-up excluded",
        description="Measure FPS the way the paper's number should be read: shorter side 600, longer <= 1000 (or "
        "the size in the model directory's preprocessor_config.json), batch 1, warm-up excluded, device "
        "synchronised; model-only and end-to-end (decode + resize + model + post-processing) reported separately.",
    )
    add_model(parser, required=False, extra="; default: random weights of --model-config")
    parser.add_argument(
        "--model-config", default=None, help="config.json for a random-weight model (default: the paper's VG model)"
    )
    add_deprecated(parser, "--config", "--model-config", "model_config")
    parser.add_argument("--image", default=None, help="image file (default: a bundled 600x400 photo)")
    add_sizes(parser, FPS_SHORTEST_EDGE, FPS_LONGEST_EDGE, "the paper's FPS input")
    parser.add_argument("--batch-size", type=positive_int, default=1)
    add_device(parser)
    add_dtype(parser)
    add_runtime(parser)
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        choices=("default", "reduce-overhead", "max-autotune"),
        help="torch.compile the model, compiled during warm-up; 'reduce-overhead' adds CUDA graphs "
        "(default mode: default)",
    )
    parser.add_argument("--warmup", type=positive_int, default=10, help="untimed iterations per scope (default 10)")
    parser.add_argument("--runs", type=positive_int, default=50, help="timed iterations per scope (default 50)")
    parser.add_argument(
        "--scope", choices=("model", "end-to-end", "both"), default="both", help="what to time (default both)"
    )
    parser.add_argument("--threads", type=positive_int, default=None, help="the runtime's CPU threads")
    parser.add_argument("--out", default=None, help="write the full result as JSON here")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from egtr.benchmark import format_result, fps_preprocessing, run_benchmark, write_result
    from egtr.config import EGTRConfig
    from egtr.inference.loading import load_runtime
    from egtr.inference.runtimes import ModelRuntime
    from egtr.models import EGTR

    if args.out:
        check_out(args.out, "file")
    if args.model and args.model_config:
        raise argparse.ArgumentTypeError("give --model or --model-config, not both")
    if args.runtime not in (None, "torch") and not args.model:
        raise argparse.ArgumentTypeError(f"--runtime {args.runtime} needs --model (a model or an `egtr export` folder)")
    if args.compile is not None and args.runtime not in (None, "torch"):
        raise argparse.ArgumentTypeError("--compile is torch.compile: it needs --runtime torch")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    scopes = {"model": ("model",), "end-to-end": ("end_to_end",), "both": ("model", "end_to_end")}[args.scope]
    recorded = None
    model: EGTR | ModelRuntime
    if args.model:
        loaded = load_runtime(
            args.model,
            args.runtime,
            device=args.device,
            dtype=args.dtype or "float32",
            threads=args.threads,
            compile_mode=args.compile,
        )
        model, description, recorded = loaded.runtime, str(args.model), loaded.preprocessor
    else:
        config = EGTRConfig.from_json(args.model_config) if args.model_config else EGTRConfig()
        model = EGTR(config).eval()
        description = f"{args.model_config or 'EGTR VG configuration'} (random weights; speed does not depend on them)"
    result = run_benchmark(
        model,
        args.image,
        preprocessor=fps_preprocessing(recorded, args.size, args.max_size),
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype or "float32",
        compile_model=args.compile is not None,
        compile_mode=args.compile or "default",
        warmup=args.warmup,
        runs=args.runs,
        scopes=scopes,
        model_description=description,
    )
    print(format_result(result))
    if args.out:
        print(f"written to {write_result(result, args.out)}")
    return 0
