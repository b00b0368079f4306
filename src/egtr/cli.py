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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="egtr", description="EGTR scene graph generation")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add_command in (_add_info_command,):
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
