"""The `egtr` command line: a thin layer of argparse over the Python API.

Each sub-command has one `_add_<name>_command(subparsers)` function that declares its arguments and sets
`func`, a function of the parsed arguments that calls the library and returns an exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from egtr.allocator import tune_cpu_allocator


def _add_info_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info", help="describe a model (config, parameters) and optionally run one forward pass"
    )
    parser.add_argument(
        "--model", default=None, help="model directory or official artifact; default: the VG config, random weights"
    )
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

    root = generate_synthetic_dataset(
        args.path, args.num_train, args.num_val, args.num_test, args.image_size, args.seed
    )
    print(f"synthetic scene world written to {root}")
    return 0


def _add_size_arguments(parser: argparse.ArgumentParser, size: int, max_size: int, why: str) -> None:
    """`--size` / `--max-size`. Not given (None) means: the model directory's preprocessor_config.json (the size
    it was trained for), else `size` / `max_size` (`why` says where those come from)."""
    recorded = "default: the model's preprocessor_config.json, else"
    parser.add_argument("--size", type=int, default=None, help=f"shorter side after resize ({recorded} {size}, {why})")
    parser.add_argument("--max-size", type=int, default=None, help=f"cap on the longer side ({recorded} {max_size})")


def _add_predict_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="scene graphs of image files: one JSON and one drawing (image with boxes | graph) per image",
        description="Predict scene graphs for image files, folders and glob patterns. Unreadable images are "
        "reported and skipped; the exit code is 1 if any image was skipped.",
    )
    parser.add_argument("images", nargs="+", help="image files, folders (their image files) or glob patterns")
    parser.add_argument("--model", required=True, help="model directory (save_pretrained) or official artifact")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--top-k", type=int, default=20, help="relations kept per image (default 20)")
    parser.add_argument("--score-threshold", type=float, default=0.0, help="drop relations with a lower triplet score")
    parser.add_argument(
        "--object-threshold",
        type=float,
        default=None,
        help="also keep objects with at least this score that are in no kept relation (default: only related objects)",
    )
    parser.add_argument(
        "--no-graph-constraint", action="store_true", help="allow several predicates per subject/object pair"
    )
    _add_size_arguments(parser, 800, 1333, "the paper's evaluation")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (autocast)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    parser.add_argument(
        "--format", nargs="*", default=["png"], choices=("png", "svg", "pdf"), help="drawing formats (default png)"
    )
    parser.add_argument("--no-draw", action="store_true", help="write only the JSON files")
    parser.add_argument("--draw-relations", type=int, default=40, help="relations shown in a drawing (default 40)")
    parser.add_argument("--dpi", type=int, default=120, help="resolution of PNG drawings (default 120)")
    parser.add_argument("--recursive", action="store_true", help="also take images from sub-folders")
    parser.add_argument("--decode-workers", type=int, default=2, help="threads decoding ahead of the model (default 2)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from egtr.inference import Predictor, expand_image_paths, predict_files

    paths, unmatched = expand_image_paths(args.images, recursive=args.recursive)
    for item in unmatched:
        print(f"warning: {item}: no such file, no images in this folder, or no match", file=sys.stderr)
    if not paths:
        print("error: no images to process", file=sys.stderr)
        return 2
    try:
        # Sizes the user did not give come from the model directory (or the Predictor's defaults).
        sizes = {
            key: value for key, value in (("image_size", args.size), ("max_size", args.max_size)) if value is not None
        }
        predictor = Predictor.from_pretrained(
            args.model,
            device=args.device,
            dtype=args.dtype,
            top_k=args.top_k,
            score_threshold=args.score_threshold,
            graph_constraint=not args.no_graph_constraint,
            object_threshold=args.object_threshold,
            batch_size=args.batch_size,
            **sizes,
        )
    except (ValueError, FileNotFoundError) as error:  # bad model path/checkpoint, device or dtype
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        report = predict_files(
            predictor,
            paths,
            args.out,
            draw_formats=[] if args.no_draw else args.format,
            max_draw_relations=args.draw_relations,
            dpi=args.dpi,
            progress=not args.no_progress,
            decode_workers=args.decode_workers,
        )
    except ImportError as error:  # drawing without the `viz` extra
        print(f"error: {error} (or pass --no-draw)", file=sys.stderr)
        return 2
    print(f"{len(report.outputs)} of {len(paths)} images processed; results in {args.out}")
    if report.failures:
        print(f"{len(report.failures)} image(s) could not be read and were skipped:", file=sys.stderr)
        for path, reason in report.failures.items():
            print(f"  {reason if path in reason else f'{path}: {reason}'}", file=sys.stderr)
        return 1
    return 1 if unmatched else 0


def _add_benchmark_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "benchmark",
        help="inference speed: model-only and end-to-end FPS, median and spread, warm-up excluded",
        description="Measure FPS the way the paper's number should be read: shorter side 600, longer <= 1000 (or "
        "the size in the model directory's preprocessor_config.json), batch 1, warm-up excluded, device "
        "synchronised; model-only and end-to-end (decode + resize + model + post-processing) reported separately.",
    )
    parser.add_argument(
        "--model", default=None, help="model directory or official artifact; default: random weights of --config"
    )
    parser.add_argument(
        "--config", default=None, help="config.json for a random-weight model (default: the paper's VG model)"
    )
    parser.add_argument("--image", default=None, help="image file (default: a bundled 600x400 photo)")
    _add_size_arguments(parser, 600, 1000, "the paper's FPS input")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, ...")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (autocast)")
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        choices=("default", "reduce-overhead", "max-autotune"),
        help="torch.compile the model, compiled during warm-up; 'reduce-overhead' adds CUDA graphs "
        "(default mode: default)",
    )
    parser.add_argument("--warmup", type=int, default=10, help="untimed iterations per scope (default 10)")
    parser.add_argument("--runs", type=int, default=50, help="timed iterations per scope (default 50)")
    parser.add_argument(
        "--scope", choices=("model", "end-to-end", "both"), default="both", help="what to time (default both)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op CPU threads (default: torch's)")
    parser.add_argument("--out", default=None, help="write the full result as JSON here")
    parser.set_defaults(func=_run_benchmark)


def _run_benchmark(args: argparse.Namespace) -> int:
    from egtr.benchmark import benchmark_sizes, format_result, run_benchmark, write_result
    from egtr.config import EGTRConfig
    from egtr.models.egtr import EGTR

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if args.model and args.config:
        print("error: give --model or --config, not both", file=sys.stderr)
        return 2
    scopes = {"model": ("model",), "end-to-end": ("end_to_end",), "both": ("model", "end_to_end")}[args.scope]
    try:
        if args.model:
            model, description = EGTR.from_pretrained(args.model), str(args.model)
        else:
            config = EGTRConfig.from_json(args.config) if args.config else EGTRConfig()
            model = EGTR(config).eval()
            description = f"{args.config or 'EGTR VG configuration'} (random weights; speed does not depend on them)"
        image_size, max_size = benchmark_sizes(args.model, args.size, args.max_size)
        result = run_benchmark(
            model,
            args.image,
            image_size=image_size,
            max_size=max_size,
            batch_size=args.batch_size,
            device=args.device,
            dtype=args.dtype,
            compile_model=args.compile is not None,
            compile_mode=args.compile or "default",
            warmup=args.warmup,
            runs=args.runs,
            scopes=scopes,
            model_description=description,
        )
    except (ValueError, FileNotFoundError) as error:  # bad model/config path, image, device, dtype or counts
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_result(result))
    if args.out:
        print(f"written to {write_result(result, args.out)}")
    return 0


def _add_evaluate_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="reference SGG metrics (R@K, mR@K, OI wmAP, AP50) of a model on a dataset split, or of a predictions file",
        description="Run a model over a dataset split (or read a saved predictions file) and compute the original "
        "EGTR evaluation: VG R@K/mR@K with and without graph constraint and COCO AP50, or the Open Images micro R@50, "
        "wmAP_rel, wmAP_phr and score_wtd. Writes a JSON with every number and the settings, prints a table.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="model directory, official artifact or .ckpt, or an `egtr train` run")
    source.add_argument("--predictions", help="a predictions .npz written by --save-predictions (no model needed)")
    parser.add_argument("--data-root", default=None, help="dataset folder (needed with --model)")
    parser.add_argument("--kind", choices=("vg", "oi"), default="vg", help="dataset layout: vg (RelTR) or oi (SGTR)")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test")
    parser.add_argument(
        "--ground-truth",
        default=None,
        help="with --predictions: ground-truth .npz (default: the one saved next to the predictions, else --data-root)",
    )
    _add_size_arguments(parser, 800, 1333, "the paper's evaluation")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, ...")
    parser.add_argument("--top-k", type=int, default=100, help="triplets kept per image (default 100)")
    parser.add_argument(
        "--modes",
        default=None,
        help="comma list of graph_constraint, no_graph_constraint, open_images (default: VG both graph modes; OI "
        "graph_constraint,open_images)",
    )
    parser.add_argument("--no-detection", action="store_true", help="skip the (slow) pycocotools detection AP")
    parser.add_argument("--zero-shot", action="store_true", help="also zero-shot recall (triplets unseen in train)")
    parser.add_argument("--max-images", type=int, default=None, help="only the first N images (quick check)")
    parser.add_argument("--save-predictions", default=None, help="write the predictions (and ground truth) here")
    parser.add_argument("--output", default=None, help="metrics JSON path (default: evaluation-<split>.json)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from egtr.evaluation import run_evaluation
    from egtr.models.checkpoint import CheckpointError

    try:
        report, output = run_evaluation(
            model=args.model,
            predictions=args.predictions,
            data_root=args.data_root,
            kind=args.kind,
            split=args.split,
            ground_truth=args.ground_truth,
            size=args.size,
            max_size=args.max_size,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            device=args.device,
            top_k=args.top_k,
            modes=args.modes.split(",") if args.modes else None,
            detection=not args.no_detection,
            zero_shot=args.zero_shot,
            max_images=args.max_images,
            save_predictions=args.save_predictions,
            output=args.output or f"evaluation-{args.split}.json",
            progress=not args.no_progress,
        )
    except (CheckpointError, FileNotFoundError) as error:  # a missing or unreadable model (directory)
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.format_table())
    print(f"metrics and settings written to {output}")
    return 0


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `train` and `pretrain-detector` (see docs/training.md)."""
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="any TrainConfig setting, dotted for nested ones: lr=1e-4 data.eval_size=600 model.num_queries=100",
    )
    parser.add_argument("--data-root", default=None, help="dataset folder (VG: RelTR layout; OI: SGTR layout)")
    parser.add_argument("--dataset", choices=("vg", "oi"), default="vg", help="dataset preset (OI: reference §4.5)")
    parser.add_argument("--config", default=None, help="a TrainConfig JSON file (e.g. a run's config.json)")
    parser.add_argument("--output-dir", default=None, help="run directory (checkpoints, metrics, final model)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its last.ckpt")
    parser.add_argument(
        "--detector-weights",
        default=None,
        help="pre-trained detector: a run's model/ dir, the released DETR dir or COCO Deformable DETR",
    )
    parser.add_argument("--backbone-weights", default=None, help="ImageNet ResNet checkpoint (torchvision/timm names)")
    parser.add_argument("--devices", default=None, help="devices per node (>1: DDP), or 'auto'")
    parser.add_argument("--num-nodes", type=int, default=None, help="nodes (torchrun / SLURM launch)")
    parser.add_argument("--accelerator", default=None, help="cpu, gpu or auto")
    parser.add_argument("--precision", default=None, choices=("32-true", "bf16-mixed", "16-mixed"))
    parser.add_argument("--batch-size", type=int, default=None, help="images per device and step")
    parser.add_argument("--accumulate-grad-batches", type=int, default=None, help="steps per optimiser update")
    parser.add_argument("--max-epochs", type=int, default=None, help="epochs of the main pass")
    parser.add_argument("--finetune-epochs", type=int, default=None, help="epochs of the x0.1 pass (0: none)")
    parser.add_argument("--num-workers", type=int, default=None, help="DataLoader workers per device")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--fast-dev-run",
        type=int,
        nargs="?",
        const=1,
        default=None,
        help="smoke test: N training + N validation batches per pass, no checkpoints",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")


def _add_train_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="EGTR relation training from a pre-trained detector (main + x0.1 pass, reference §4.2-4.3)"
    )
    _add_training_arguments(parser)
    parser.set_defaults(func=lambda args: _run_training(args, "egtr"))


def _add_pretrain_detector_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain-detector", help="stage 0: Deformable DETR training on the scene-graph dataset (reference §4.1)"
    )
    _add_training_arguments(parser)
    parser.set_defaults(func=lambda args: _run_training(args, "detector"))


def _run_training(args: argparse.Namespace, stage: str) -> int:
    from egtr.training.commandline import run_command

    return run_command(args, stage)


def _add_demo_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the whole system on the embedded synthetic world: train, evaluate and draw scene graphs (minutes, CPU)",
        description="Generate the synthetic scene world, pre-train a small detector, train EGTR on it, evaluate "
        "R@K/mR@K on the test split and draw a few predicted scene graphs. A second run reuses finished steps.",
    )
    parser.add_argument("--out", default="demo_out", help="output folder (default ./demo_out)")
    parser.add_argument("--quick", action="store_true", help="a tiny run of every step (under 2 minutes; for CI)")
    parser.add_argument("--restart", action="store_true", help="remove the demo's earlier outputs in --out first")
    parser.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from egtr.demo import run_demo

    try:
        run_demo(args.out, quick=args.quick, restart=args.restart)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="egtr", description="EGTR scene graph generation")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add_command in (
        _add_info_command,
        _add_data_command,
        _add_predict_command,
        _add_benchmark_command,
        _add_evaluate_command,
        _add_train_command,
        _add_pretrain_detector_command,
        _add_demo_command,
    ):
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    tune_cpu_allocator()  # freed activations are reused instead of page-faulted in again (see egtr.allocator)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
