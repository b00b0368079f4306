"""`egtr data select --predictions RUN --budget N --strategy uncertainty|diverse|random --out DIR`: what to label
next (docs/own-data.md)."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from egtr.cli.label_studio import add_reference_options, image_root, write_tasks
from egtr.cli.options import Subparsers, check_out, positive_int

if TYPE_CHECKING:
    from egtr.inference.scene_graph import SceneGraph
    from egtr.inference.selection import Candidate

SELECTION_LIST = "selection.txt"  # one image path per line: `egtr predict --input-list`, or any other tool
SELECTION_TABLE = "selection.csv"


def add_command(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    from egtr.inference.selection import STRATEGIES

    parser = commands.add_parser(
        "select",
        parents=[common],
        help="rank the unlabelled images of a prediction run: the ones to label next, with Label Studio tasks",
        description="Choose --budget images of a prediction run (an `egtr predict` folder, or the --out of a bulk "
        "run) to label next. Writes OUT/selection.txt (one image path per line), OUT/selection.csv (rank, image, "
        "uncertainty) and OUT/tasks.json + OUT/labeling_config.xml: Label Studio tasks for just those images, "
        "pre-annotated with the run's graphs.",
    )
    parser.add_argument("--predictions", required=True, help="the --out folder of an `egtr predict` run")
    parser.add_argument("--budget", type=positive_int, required=True, help="how many images to choose")
    parser.add_argument("--strategy", choices=STRATEGIES, default="uncertainty", help="how (default uncertainty)")
    parser.add_argument("--labelled", default=None, help="a dataset folder whose images are skipped (by file name)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --strategy random")
    parser.add_argument("--out", required=True, help="folder for the list and the tasks (created if missing)")
    add_reference_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from egtr.inference.selection import labelled_names, read_predictions, select

    check_out(args.out)
    candidates = read_predictions(Path(args.predictions))
    if args.labelled:
        done = labelled_names(Path(args.labelled))
        candidates = [item for item in candidates if Path(item.key).name not in done]
    if not candidates:
        raise FileNotFoundError(f"{args.predictions}: every image is labelled already (--labelled {args.labelled})")
    chosen = select(candidates, args.budget, args.strategy, args.seed)
    with_files = [(item.path, item.graph) for item in chosen if item.path is not None]
    root = image_root(args, [path for path, _ in with_files])  # a wrong --image-root: before anything is written
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_lists(out, chosen)
    print(f"{len(chosen)} of {len(candidates)} unlabelled images chosen ({args.strategy}): {out / SELECTION_LIST}")
    if len(with_files) < len(chosen):
        print(f"warning: {len(chosen) - len(with_files)} chosen image(s) not found as files: no task", file=sys.stderr)
    class_names, predicate_names = _names(Path(args.predictions), [graph for _, graph in with_files])
    run_name = Path(args.predictions).resolve().name  # the proposals are the run's graphs
    write_tasks(args, out, root, with_files, class_names, predicate_names, default_version=run_name)
    return 0


def _write_lists(out: Path, chosen: list[Candidate]) -> None:
    from egtr.fileio import write_text

    write_text(out / SELECTION_LIST, "".join(f"{item.path or item.key}\n" for item in chosen))
    rows = [["rank", "image", "uncertainty", "relations"]]
    rows += [[str(rank), str(item.path or item.key), f"{item.uncertainty:.6f}", str(len(item.graph.relations))]
             for rank, item in enumerate(chosen, 1)]  # fmt: skip
    with open(out / SELECTION_TABLE, "w", newline="", encoding="utf-8") as table:
        csv.writer(table).writerows(rows)


def _names(run: Path, graphs: list[SceneGraph]) -> tuple[list[str], list[str]]:
    """The labelling config's names: the run's own config (`--output-format label-studio` wrote the model's), else
    the names the chosen graphs use (a model's other names are then not offered in Label Studio: noted)."""
    from egtr.data.label_studio_tasks import CONFIG_NAME, config_names

    if (run / CONFIG_NAME).is_file():
        return config_names((run / CONFIG_NAME).read_text(encoding="utf-8"))
    print(
        f"note: {run} has no {CONFIG_NAME}: the labelling config lists only the names of the chosen graphs",
        file=sys.stderr,
    )
    classes = sorted({obj.label_name for graph in graphs for obj in graph.objects})
    return classes, sorted({relation.predicate_name for graph in graphs for relation in graph.relations})
