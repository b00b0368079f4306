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

from egtr.cli.options import add_deprecated, positive_int
from egtr.console import adopt_lightning_logging
from egtr.extras import require_extra

if TYPE_CHECKING:
    from egtr.bulk.sources import Corpus
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
    bulk.add_argument(
        "--input-root", default=None, metavar="DIR", help="folder that relative paths in input lists start from"
    )
    # --data-root names a dataset folder in every other command; here it was the input lists' base folder.
    add_deprecated(parser, "--data-root", "--input-root", dest="input_root")
    bulk.add_argument(
        "--output-format",
        choices=("files", "label-studio", "jsonl", "jsonl.gz", "parquet"),
        default="files",
        help="files: one JSON + drawing per image (default); label-studio: those JSON files and Label Studio tasks "
        "with predictions; jsonl, jsonl.gz, parquet: shards of records, resumable",
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
    listed = Corpus(input_lists=tuple(args.input_list), data_root=args.input_root, path_column=args.path_column)
    paths = []
    for _, path, problem in listed.check().list_entries():
        if problem or path is None:
            print(f"warning: {problem}", file=sys.stderr)
        else:
            paths.append(path)
    return image_inputs, paths


def run(args: argparse.Namespace, make_predictor: Callable[[argparse.Namespace], Predictor]) -> int:
    """`egtr predict --output-format jsonl|jsonl.gz|parquet`; `make_predictor` is predict's (from the options).

    Everything that can be checked without the model is checked before Lightning is imported (it takes 20 s to
    90 s on a busy machine): the inputs, the devices, and whether the folder already holds this run complete.
    """
    require_extra("bulk", f"--output-format {args.output_format}")
    from egtr.bulk.launch import lightning_devices, local_processes, started_externally, supervise

    corpus, unmatched = _checked_corpus(args)
    accelerator, devices = lightning_devices(args.device, args.devices)
    request = _request(args, corpus)
    if not args.overwrite:
        from egtr.bulk.writers import OutputFolder

        manifest = OutputFolder(args.out, args.output_format).complete_manifest(request=request)
        if manifest is not None:
            return _say_complete(args.out, manifest, unmatched)
    processes = local_processes(accelerator, devices)
    if processes > 1 and args.num_nodes == 1 and not started_externally():
        # egtr starts and watches the ranks, so that one that dies is named (see egtr.bulk.launch)
        return supervise([sys.executable, "-m", "egtr.cli", *args.command_line], processes)
    return _run_rank(args, make_predictor, corpus, unmatched, (accelerator, devices), request)


def _checked_corpus(args: argparse.Namespace) -> tuple[Corpus, list[str]]:
    """The corpus of the command, checked (lists exist and have the path column, shards exist), and the inputs that
    matched nothing (warned about)."""
    from egtr.bulk import BulkInputError, Corpus, split_inputs
    from egtr.cli.video import is_video_input
    from egtr.inference.files import expand_image_paths

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
        data_root=args.input_root,
        path_column=args.path_column,
        shard_size=args.shard_size,
    ).check()
    return corpus, unmatched


# Options that change how a run executes, never its records (the folder's settings leave them out too).
_EXECUTION_OPTIONS = frozenset(
    {"device", "devices", "num_nodes", "decode_workers", "threads", "no_progress", "overwrite", "out", "verbose"}
    | {"debug", "run", "command_line"}
)


def _request(args: argparse.Namespace, corpus: Corpus) -> dict[str, object]:
    """What the command asks for, before the model is loaded: the options that can change the records (every option
    but `_EXECUTION_OPTIONS`), the model's files (path, sizes, times) and the inputs' fingerprint. A rerun with the
    same request on a complete folder has nothing to do."""
    options = {
        name: value
        for name, value in sorted(vars(args).items())
        if name not in _EXECUTION_OPTIONS and isinstance(value, (str, int, float, bool, list, type(None)))
    }
    return {"options": options, "model": _files_fingerprint(args.model), "inputs": corpus.fingerprint()}


def _files_fingerprint(path: str | None) -> list[list[object]] | None:
    """(name, size, modification time) of a file, or of every file under a folder: changes when the model does,
    without reading it."""
    if path is None or not Path(path).exists():
        return None
    root = Path(path).resolve()
    files = [root] if root.is_file() else sorted(item for item in root.rglob("*") if item.is_file())
    return [[str(item.relative_to(root.parent)), item.stat().st_size, item.stat().st_mtime_ns] for item in files]


def _say_complete(out: str, manifest: dict, unmatched: list[str]) -> int:
    """The rerun of a complete run: one line, nothing changed; the exit code the run had."""
    counts = manifest["counts"]
    print(
        f"{out}: complete, nothing to do ({counts['records']} records in {counts['shards']} shards, "
        f"{counts['errors']} unreadable, finished {manifest['finished']}); --overwrite predicts them again"
    )
    return 1 if counts["errors"] or unmatched else 0


def _run_rank(
    args: argparse.Namespace,
    make_predictor: Callable[[argparse.Namespace], Predictor],
    corpus: Corpus,
    unmatched: list[str],
    lightning: tuple[str, int | str | list[int]],
    request: dict[str, object],
) -> int:
    """This process's part of the run: load the model and predict its units (all of them in a single process)."""
    from egtr.bulk.launch import PeerLostError, local_processes, report_status, supervised
    from egtr.runtime import threads_per_process

    adopt_lightning_logging()
    from egtr.bulk.runner import BulkOptions, predict_corpus

    # Loaded on the CPU: Lightning moves the model to each rank's device (not every rank's copy to cuda:0 first).
    predictor = make_predictor(argparse.Namespace(**{**vars(args), "device": "cpu"}))
    options = BulkOptions(
        out=Path(args.out),
        output_format=args.output_format,
        accelerator=lightning[0],
        devices=lightning[1],
        num_nodes=args.num_nodes,
        num_workers=args.decode_workers,
        bucket=args.bucket,
        overwrite=args.overwrite,
        progress=not args.no_progress,  # a bar on a terminal, plain lines in a log file
        threads=args.threads or threads_per_process(local_processes(*lightning)),
        request=request,
    )
    try:
        summary = predict_corpus(predictor, corpus, options)
    except PeerLostError:
        if not supervised():
            raise
        report_status("peer-lost")  # the process that started the ranks names the one that died
        return 1
    report_status("done")
    if summary.already_complete and summary.manifest is not None:
        return _say_complete(args.out, summary.manifest, unmatched)
    if summary.manifest is not None:  # rank 0: the whole run
        counts = summary.manifest["counts"]
        print(
            f"{counts['records']} images predicted, {counts['errors']} unreadable (errors.jsonl); results in {args.out}"
        )
        return 1 if counts["errors"] or unmatched else 0
    return 1 if summary.errors or unmatched else 0
