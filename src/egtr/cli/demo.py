"""`egtr demo`: the whole system on the embedded synthetic world (train, evaluate, draw; minutes on a CPU)."""

from __future__ import annotations

import argparse
from pathlib import Path

from egtr.cli.options import Subparsers, check_out
from egtr.console import adopt_lightning_logging
from egtr.extras import require_extra
from egtr.fileio import read_json
from egtr.stopping import Stopped


def add_command(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "demo",
        parents=[common],
        help="the whole system on the embedded synthetic world: train, evaluate and draw scene graphs (about 20 "
        "minutes on 2 CPU cores; --quick: 1-2 minutes)",
        description="Generate the synthetic scene world, pre-train a small detector, train EGTR on it, evaluate "
        "R@K/mR@K on the test split and draw a few predicted scene graphs. A second run reuses finished steps.",
    )
    parser.add_argument("--out", default="demo_out", help="output folder (default ./demo_out)")
    parser.add_argument("--quick", action="store_true", help="a tiny run of every step (under 2 minutes; for CI)")
    parser.add_argument("--restart", action="store_true", help="remove the demo's earlier outputs in --out first")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    require_extra("train", "egtr demo")  # it trains a detector and EGTR, then draws
    require_extra("viz", "egtr demo")
    check_out(args.out)
    adopt_lightning_logging()
    from egtr.demo import run_demo

    try:
        run_demo(args.out, quick=args.quick, restart=args.restart)
    except Stopped as stop:
        stop.add_detail(demo_progress(Path(args.out), args.quick))
        raise
    return 0


def demo_progress(out_dir: Path, quick: bool) -> str:
    """What a stopped demo keeps (its finished steps, the last checkpoint of a training step) and how to go on: a
    second run reuses finished steps and resumes an interrupted training from its last checkpoint."""
    from egtr.cli.train import surviving_checkpoint
    from egtr.demo import STATE_FILE, STEPS

    state_file = out_dir / STATE_FILE
    try:
        finished = [step for step in STEPS if step in read_json(state_file).get("steps", {})]
    except (OSError, ValueError):
        finished = []
    parts = [f"finished steps kept in {state_file}: {', '.join(finished)}" if finished else "no step was finished"]
    current = next((step for step in STEPS if step not in finished), None)
    if current in ("detector", "egtr") and (out_dir / current).is_dir():
        parts.append(f"step {current}: {surviving_checkpoint(out_dir / current)}")
    rerun = f"egtr demo --out {out_dir}" + (" --quick" if quick else "")
    parts.append(f"run `{rerun}` again to continue (finished steps are reused, a training resumes)")
    return "; ".join(parts)
