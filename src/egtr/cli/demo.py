"""`egtr demo`: the whole system on the embedded synthetic world (train, evaluate, draw; minutes on a CPU)."""

from __future__ import annotations

import argparse

from egtr.cli.options import Subparsers, adopt_lightning_logging


def add_command(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "demo",
        parents=[common],
        help="the whole system on the embedded synthetic world: train, evaluate and draw scene graphs (minutes, CPU)",
        description="Generate the synthetic scene world, pre-train a small detector, train EGTR on it, evaluate "
        "R@K/mR@K on the test split and draw a few predicted scene graphs. A second run reuses finished steps.",
    )
    parser.add_argument("--out", default="demo_out", help="output folder (default ./demo_out)")
    parser.add_argument("--quick", action="store_true", help="a tiny run of every step (under 2 minutes; for CI)")
    parser.add_argument("--restart", action="store_true", help="remove the demo's earlier outputs in --out first")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    adopt_lightning_logging()
    from egtr.demo import run_demo

    run_demo(args.out, quick=args.quick, restart=args.restart)
    return 0
