"""`egtr info`: describe a model (config, parameters), optionally with one forward pass on an image."""

from __future__ import annotations

import argparse

from egtr.cli.options import Subparsers


def add_command(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "info", parents=[common], help="describe a model (config, parameters) and optionally run one forward pass"
    )
    parser.add_argument(
        "--model", default=None, help="a model in any layout (default: the VG configuration with random weights)"
    )
    parser.add_argument("--image", default=None, help="run one forward pass on this image and print a summary")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from egtr.model_summary import describe_model

    print(describe_model(args.model, args.image))
    return 0
