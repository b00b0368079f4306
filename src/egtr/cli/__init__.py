"""The `egtr` command line: a thin layer of argparse over the Python API.

Each sub-command lives in its own module with `add_command(subparsers)`, which declares the arguments and sets
`run`, a function of the parsed arguments that calls the library (with plain values, never the namespace) and
returns an exit code. Shared options are declared once in `egtr.cli.options`.

`main` owns what every command shares:
- one error handler: a problem with the user's input (`egtr.errors.EgtrError`, a missing file, a bad value, a missing
  optional dependency) prints one line, `error: ...`, to stderr and exits 2; a full disk or another system error exits
  1 with one line; anything else is an internal error (exit 1, one line asking for a report); `--debug` shows the
  traceback in every case;
- logging: egtr's own messages at INFO (`-v`: DEBUG), other libraries' at WARNING (`-v`: INFO), each line once,
  without the advertisements and deprecation warnings about libraries' internals that users cannot act on;
- SIGTERM and SIGINT (`egtr.stopping`): one line, `stopped by SIGTERM: <what was saved>; <how to continue>`, exit
  143 (SIGTERM) or 130 (SIGINT); commands add what they saved to the `Stopped` exception on its way up;
- `--version`, and `-v` / `--debug` accepted before or after the sub-command.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import traceback
from collections.abc import Sequence

import egtr
from egtr.allocator import tune_cpu_allocator
from egtr.cli import benchmark, data, demo, evaluate, export, hub, info, predict, serve, train
from egtr.console import LIGHTNING_LOGGERS, route_library_logging, silence_lightning_warnings
from egtr.errors import EgtrError
from egtr.stopping import Stopped, stop_on_signals

COMMANDS = (info, data, predict, benchmark, evaluate, export, hub, train, demo, serve)
_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")  # a `key=value` training setting (dotted for nested ones)
# Libraries whose INFO lines are noise at the default verbosity.
_QUIET_LIBRARIES = (
    *LIGHTNING_LOGGERS,
    "pytorch_lightning",
    "torch",
    "PIL",
    "onnxscript",  # `egtr export`: hundreds of INFO lines of its graph optimiser
    "onnx_ir",
)
# Messages nobody can act on: third-party advertisements and deprecations inside a library's own code.
_SUPPRESSED_MESSAGES = (
    "litmodels",
    "💡 Tip",
    "LitLogger",
    "torchvision is not installed",  # torch.onnx's exporter looks for torchvision's ops; egtr uses none
)


def _common_options() -> argparse.ArgumentParser:
    """Options accepted after the sub-command as well (`egtr predict ... -v`)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of any error"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(prog="egtr", description="EGTR scene graph generation", parents=[common])
    parser.add_argument("--version", action="version", version=f"egtr {egtr.__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_command(subparsers, common)
    return parser


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in _SUPPRESSED_MESSAGES)


def configure_logging(verbose: bool) -> None:
    """One stderr handler on the root logger; libraries' own handlers removed so that no line prints twice."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_DropNoise())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    route_library_logging(_QUIET_LIBRARIES, verbose)
    logging.captureWarnings(True)
    silence_lightning_warnings()


def _is_user_error(error: BaseException) -> bool:
    if isinstance(error, (EgtrError, argparse.ArgumentTypeError, ImportError)):
        return True
    if isinstance(error, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return True
    # The library validates values with ValueError/TypeError messages that name the value (top_k=0, ...).
    return type(error) in (ValueError, TypeError) and bool(str(error))


def _one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    if isinstance(error, ImportError) and getattr(error, "name", None):
        text = f"{text} (an optional dependency is missing: pip install 'egtr[all]')"
    return " ".join(text.split("\n")) if "\n" not in text.strip() else text.split("\n")[0] + " ..."


def parse_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """`parse_args`, except that `key=value` settings of the commands that take them (`overrides`) may stand anywhere.

    argparse gives a positional list one place only: `egtr train --out R model.d_model=64 --max-epochs 1 lr=1e-4`
    left `lr=1e-4` unrecognized. Such leftovers are appended to `overrides` in their order; anything else left over
    (a mistyped option) is still refused.
    """
    args, leftovers = parser.parse_known_args(argv)
    settings = [item for item in leftovers if _OVERRIDE.match(item)] if hasattr(args, "overrides") else []
    unknown = [item for item in leftovers if item not in settings]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if settings:
        args.overrides = [*args.overrides, *settings]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `egtr` command; returns the exit code (0 success, 1 failure, 2 bad input, 143 / 130 stopped by
    SIGTERM / SIGINT)."""
    try:
        args = parse_arguments(build_parser(), argv)
    except SystemExit as exit_request:  # --help, --version, or a usage error (argparse printed it; code 2)
        return int(exit_request.code or 0)
    args.command_line = list(sys.argv[1:] if argv is None else argv)  # to start more processes of this command
    debug = getattr(args, "debug", False)
    configure_logging(getattr(args, "verbose", False))
    tune_cpu_allocator()  # freed activations are reused instead of page-faulted in again (see egtr.allocator)
    try:
        with stop_on_signals():
            return int(args.run(args))
    except Stopped as stop:
        if debug:
            traceback.print_exc()
        print(stop.message(), file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:  # raised by code outside the handlers' reach (a thread), as Ctrl-C
        print("stopped by SIGINT", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            traceback.print_exc()
        if _is_user_error(error):
            print(f"error: {_one_line(error)}", file=sys.stderr)
            return 2
        if isinstance(error, OSError):  # a full disk, a lost mount: not the input's fault
            print(f"error: {_one_line(error)}", file=sys.stderr)
            return 1
        print(
            f"internal error: {type(error).__name__}: {_one_line(error)}"
            + ("" if debug else " (run again with --debug for the traceback, and please report it)"),
            file=sys.stderr,
        )
        return 1
