"""`egtr predict --output-format label-studio` and `egtr data select`'s task file: Label Studio pre-annotations.

The options say how a task refers to its image (`--image-root`, `--image-prefix`) and which model proposed it
(`--model-version`); the tasks themselves are written by `egtr.data.label_studio_tasks` (docs/own-data.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from egtr.data.label_studio_tasks import (
    LOCAL_FILES_PREFIX,
    default_image_root,
    image_reference,
    tasks_for_graphs,
    write_project,
)

if TYPE_CHECKING:
    from egtr.inference.scene_graph import SceneGraph

FORMAT = "label-studio"
GRAPHS_DIR = "graphs"  # --output-format label-studio: the scene graph JSON of each image, as `egtr predict` writes


def add_reference_options(parser: argparse.ArgumentParser) -> None:
    """`--image-root`, `--image-prefix`, `--model-version`: how tasks refer to images, and who proposed them."""
    group = parser.add_argument_group("Label Studio tasks (docs/own-data.md)")
    group.add_argument(
        "--image-root",
        default=None,
        help="folder the tasks' image paths are relative to (for local files: Label Studio's "
        "LOCAL_FILES_DOCUMENT_ROOT; default: the deepest folder holding every image, for local files its parent)",
    )
    group.add_argument(
        "--image-prefix",
        default=LOCAL_FILES_PREFIX,
        help=f"put before each relative path: {LOCAL_FILES_PREFIX} (default: files served by Label Studio), a URL "
        "such as https://host/photos/, or a cloud storage prefix such as s3://bucket/photos/",
    )
    group.add_argument(
        "--model-version",
        default=None,
        help="the predictions' model_version (default: the model's or the run's folder name)",
    )


def image_root(args: argparse.Namespace, paths: Sequence[Path]) -> Path:
    """The folder the tasks' references start from (--image-root, or the default for --image-prefix), checked to
    hold every image before any work is done (ConfigError naming the first image outside it)."""
    root = Path(args.image_root) if args.image_root else default_image_root(paths, args.image_prefix)
    for path in paths:
        image_reference(path, root, args.image_prefix)
    return root


def write_tasks(
    args: argparse.Namespace,
    out: Path,
    root: Path,
    graphs: Sequence[tuple[Path, SceneGraph]],
    class_names: Iterable[str],
    predicate_names: Iterable[str],
    default_version: str,
) -> int:
    """Write `tasks.json` and `labeling_config.xml` into `out` (images referred to from `root`, see `image_root`) and
    say how to use them; returns the task count. `default_version`: the model_version without --model-version."""
    tasks = tasks_for_graphs(graphs, root, args.image_prefix, args.model_version or default_version)
    tasks_path, config_path = write_project(out, tasks, list(class_names), list(predicate_names))
    print(f"{len(tasks)} Label Studio tasks with predictions: {tasks_path}; labelling config: {config_path}")
    if args.image_prefix == LOCAL_FILES_PREFIX:
        print(
            "  the images are Label Studio local files: start it with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true "
            f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root.resolve()}, and add a Local files source storage for the "
            "image folder under it (docs/own-data.md)"
        )
    return len(tasks)


def graphs_of_run(paths: Sequence[Path], outputs: dict[str, list[Path]]) -> list[tuple[Path, SceneGraph]]:
    """(image, graph) of every image `predict_files` wrote a JSON for, in input order."""
    from egtr.inference.scene_graph import SceneGraph

    return [(path, SceneGraph.from_json(outputs[str(path)][0])) for path in paths if str(path) in outputs]
