r"""Options that several sub-commands share: one spelling, one help text and one meaning everywhere.

| option                   | meaning                                                                     |
|--------------------------|-----------------------------------------------------------------------------|
| `--model M`              | a model in any layout `egtr.models.read_checkpoint` knows, or an export     |
| `--runtime R`            | torch, onnxruntime or openvino (default: torch; an export's own runtime)    |
| `--data-root D`          | a dataset folder                                                            |
| `--dataset vg\|oi`       | its layout: Visual Genome (RelTR, native) or Open Images (SGTR)             |
| `--split S`              | train, val or test                                                          |
| `--out P`                | where results go (a folder, or a file for single-file results)              |
| `--device`, `--dtype`    | `egtr.runtime`'s spellings                                                  |
| `--size`, `--max-size`   | the resize (default: the model's recorded preprocessing, else the paper's)  |
| `--batch-size`, `--num-workers`, `--seed`, `--no-progress`                                              |

Old spellings of earlier releases (`--output`, `--output-dir`, `--kind`, `--precision`, a positional dataset
folder, `--config` for a model config) still work for one release and print a deprecation note.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from egtr.console import stderr_is_terminal
from egtr.errors import OutputError
from egtr.runtime import DTYPE_CHOICES

if TYPE_CHECKING:
    from egtr.inference import Predictor

logger = logging.getLogger("egtr.cli")

Subparsers = argparse._SubParsersAction  # argparse exposes no public name for it


class DeprecatedAlias(argparse.Action):
    """An old spelling of an option: stores into the new option's destination and says so once."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str, **kwargs: object) -> None:
        self.new = new
        # argparse's stub types each keyword of Action; these are forwarded exactly as add_argument passed them.
        super().__init__(option_strings, dest, **kwargs)  # type: ignore[arg-type]

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[object] | None,
        option_string: str | None = None,
    ) -> None:
        deprecation_note(f"{option_string} is deprecated; use {self.new}")
        setattr(namespace, self.dest, values)


def deprecation_note(message: str) -> None:
    """One line on stderr: a deprecated spelling was used (it goes away in the next release)."""
    print(f"note: {message} (the old spelling goes away in the next release)", file=sys.stderr)


def add_deprecated(
    parser: argparse.ArgumentParser, old: str, new: str, dest: str, choices: Sequence[str] | None = None
) -> None:
    parser.add_argument(old, dest=dest, action=DeprecatedAlias, new=new, choices=choices, help=argparse.SUPPRESS)


def add_model(parser: argparse.ArgumentParser, required: bool = True, extra: str = "") -> None:
    parser.add_argument(
        "--model",
        required=required,
        default=None,
        help="model: our directory, the official artifact or a .ckpt, an `egtr train` run or pass folder, an "
        "`egtr export` folder, or a Hugging Face Hub name org/name[@revision] (hf://org/name: the Hub even where a "
        "local folder of that name exists; the hub extra)" + extra,
    )


def add_runtime(parser: argparse.ArgumentParser) -> None:
    from egtr.inference.runtimes import RUNTIMES

    parser.add_argument(
        "--runtime",
        default=None,
        choices=RUNTIMES,
        help="what runs the network: torch (default for a checkpoint), onnxruntime or openvino (default for an "
        "`egtr export` folder: its own; a checkpoint is exported once into the cache; docs/deploy.md)",
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")


def add_dtype(
    parser: argparse.ArgumentParser, help_text: str = "precision: float32, or bfloat16/float16 autocast"
) -> None:
    parser.add_argument("--dtype", default=None, choices=DTYPE_CHOICES, metavar="DTYPE", help=help_text)


def add_sizes(parser: argparse.ArgumentParser, size: int, max_size: int, why: str) -> None:
    """`--size` / `--max-size`; not given means the model's recorded preprocessing, else `size` / `max_size`."""
    recorded = "default: the model's preprocessor_config.json, else"
    parser.add_argument(
        "--size", type=positive_int, default=None, help=f"shorter side after resize ({recorded} {size}, {why})"
    )
    parser.add_argument(
        "--max-size", type=positive_int, default=None, help=f"cap on the longer side ({recorded} {max_size})"
    )


def add_prediction_options(parser: argparse.ArgumentParser) -> None:
    """`--top-k`, `--score-threshold`, `--object-threshold`, `--no-graph-constraint` (`Predictor`'s options)."""
    parser.add_argument("--top-k", type=positive_int, default=20, help="relations kept per image (default 20)")
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


def load_predictor(args: argparse.Namespace, batch_size: int = 1) -> Predictor:
    """`Predictor.from_pretrained` with `--model`, `--runtime`, `--size`, `--max-size`, `--device`, `--dtype`,
    `--max-pixels` and the options of `add_prediction_options`, `batch_size` images per forward pass."""
    from egtr.inference import Predictor

    return Predictor.from_pretrained(
        args.model,
        size=args.size,
        max_size=args.max_size,
        device=args.device,
        dtype=args.dtype or "float32",
        runtime=getattr(args, "runtime", None),
        threads=getattr(args, "threads", None),
        top_k=args.top_k,
        score_threshold=args.score_threshold,
        graph_constraint=not args.no_graph_constraint,
        object_threshold=args.object_threshold,
        max_pixels=args.max_pixels,
        batch_size=batch_size,
    )


def add_max_pixels(parser: argparse.ArgumentParser, consequence: str) -> None:
    """`--max-pixels` (decompression bombs); `consequence` says what happens to a larger image."""
    from egtr.images import DEFAULT_MAX_PIXELS

    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=DEFAULT_MAX_PIXELS,
        help=f"{consequence} images with more pixels than this (default {DEFAULT_MAX_PIXELS:,})",
    )


def add_data_root(parser: argparse.ArgumentParser, required: bool = False, positional_alias: bool = False) -> None:
    parser.add_argument("--data-root", required=required and not positional_alias, default=None, help="dataset folder")
    if positional_alias:
        parser.add_argument("legacy_path", nargs="?", default=None, metavar="PATH", help=argparse.SUPPRESS)


def add_dataset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset", choices=("vg", "oi"), default="vg", help="dataset layout: vg (RelTR, native) or oi (SGTR)"
    )
    add_deprecated(parser, "--kind", "--dataset", "dataset", choices=("vg", "oi"))


def add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (also off when not a terminal)")


def data_root_of(args: argparse.Namespace) -> str | None:
    """`--data-root`, or the positional folder of earlier releases (with a note)."""
    legacy = getattr(args, "legacy_path", None)
    if legacy is not None:
        if args.data_root is not None and args.data_root != legacy:
            raise argparse.ArgumentTypeError(f"two dataset folders given: {legacy} and --data-root {args.data_root}")
        deprecation_note(f"a positional dataset folder is deprecated; use --data-root {legacy}")
        return str(legacy)
    return args.data_root


def check_out(path: str | Path, kind: Literal["folder", "file", "new-folder"] = "folder") -> Path:
    """Make sure results can be written at `--out` before any work is done (a model loaded, images computed).

    `kind` is what `path` is: a `folder` the command writes into (created here), a `file`, or a `new-folder` the
    command creates itself (an import renames its finished folder into place). The folder that receives the writes
    is created and a temporary file is written there and removed: a read-only file system or a missing permission
    shows now, as one `OutputError` line (exit 2), not as errno text after the first image.

    Raises:
        OutputError: `path` is a file where a folder is needed (or the reverse), or nothing can be written there.
    """
    target = Path(path)
    if target.exists() and target.is_dir() != (kind != "file"):
        wrong = "is a folder; give a file name" if kind == "file" else "exists and is a file, not a folder"
        raise OutputError(f"--out {target}: {wrong}")
    folder = target if kind == "folder" else target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".egtr-write-test-"):
            pass
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"--out {target}: {_first_file_on_the_way(folder)} is a file, not a folder") from None
    except OSError as error:
        raise OutputError(f"--out {target}: cannot write in {folder} ({error.strerror or error})") from error
    return target


def _first_file_on_the_way(folder: Path) -> Path:
    """The path component of `folder` that exists as a file (what made `mkdir(parents=True)` fail)."""
    for parent in (*reversed(folder.parents), folder):
        if parent.exists() and not parent.is_dir():
            return parent
    return folder


def progress_enabled(args: argparse.Namespace) -> bool:
    """Progress bars only for a person at a terminal: `--no-progress`, or stderr not a TTY, turn them off."""
    return not getattr(args, "no_progress", False) and stderr_is_terminal()


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value
