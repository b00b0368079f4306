"""One demo experiment: `egtr demo` with some `DemoSettings` (and `TrainConfig`) changed, its time per step and recall.

The numbers of docs/demo-experiments.md ("Within 10 minutes") come from this script. Each run writes one JSON line
to `--results`: the changed settings, the wall time of every step, the optimiser steps and seconds per step of each
training stage, and the test metrics (R@50, mR@50, no-graph-constraint R@50, box AP50). Not a test.

    python benchmarks/demo_experiments.py --name baseline --out /tmp/demo-a
    python benchmarks/demo_experiments.py --name cosine --set egtr_finetune_epochs=0 --train lr_schedule=cosine \\
        --train warmup_steps=30 --out /tmp/demo-b
    # the EGTR stage only, on the world and detector of an earlier run of the same world and detector settings:
    python benchmarks/demo_experiments.py --name egtr-5 --set egtr_epochs=5 --reuse-detector /tmp/demo-a --out /tmp/c

`--train` changes apply to both training stages, or, with `--reuse-detector`, to the EGTR stage only.
Time it with nothing else running on the machine (`lscpu` names the CPU; the line records it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

from egtr.benchmark import cpu_name
from egtr.demo import DemoRun, DemoSettings
from egtr.fileio import read_json
from egtr.training import TrainConfig

METRICS = (
    "graph_constraint/recall@50",
    "graph_constraint/mean_recall@50",
    "no_graph_constraint/recall@50",
    "bbox/AP50",
)
# Settings that change the world or the detector: an experiment reusing a detector must not change them.
DETECTOR_FIELDS = {
    field.name for field in dataclasses.fields(DemoSettings) if not field.name.startswith(("egtr_", "num_drawings"))
} - {"name", "draw_top_k"}


def parse_settings(base: str, assignments: list[str]) -> DemoSettings:
    """`DemoSettings.full()` or `.quick()` with `key=value` changes, values typed as the field's default."""
    settings = DemoSettings.quick() if base == "quick" else DemoSettings.full()
    changes = {}
    for assignment in assignments:
        key, _, text = assignment.partition("=")
        if not hasattr(settings, key):
            raise SystemExit(f"error: DemoSettings has no field {key!r}")
        default = getattr(settings, key)
        changes[key] = type(default)(text) if not isinstance(default, bool) else text.lower() in ("1", "true")
    return dataclasses.replace(settings, name="experiment", **changes)


class ExperimentRun(DemoRun):
    """The demo's steps, with `TrainConfig` fields the demo does not set (e.g. `lr_schedule`) changed in both
    training stages."""

    def __init__(self, out_dir: Path, settings: DemoSettings, train_changes: dict[str, object]) -> None:
        super().__init__(out_dir, settings)
        self.train_changes = train_changes
        self.state["train_changes"] = train_changes

    def _train_config(self, stage: str, output_dir: Path, detector_weights: Path | None) -> TrainConfig:
        config = super()._train_config(stage, output_dir, detector_weights)
        return dataclasses.replace(config, **self.train_changes).validate()


def parse_train_changes(assignments: list[str]) -> dict[str, object]:
    """`key=value` changes of `TrainConfig`, typed as the field's default."""
    defaults = TrainConfig()
    changes: dict[str, object] = {}
    for assignment in assignments:
        key, _, text = assignment.partition("=")
        if not hasattr(defaults, key):
            raise SystemExit(f"error: TrainConfig has no field {key!r}")
        changes[key] = type(getattr(defaults, key))(text)
    return changes


def reuse_detector(run: DemoRun, source: Path) -> None:
    """Take the world and the detector of an earlier run whose world and detector settings are the same."""
    state = read_json(source / "demo.json")
    different = sorted(
        key for key in DETECTOR_FIELDS if state["settings"].get(key) != dataclasses.asdict(run.settings).get(key)
    )
    if different:
        raise SystemExit(f"error: {source} has other world/detector settings: {different}")
    run.out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("data", "detector"):
        shutil.copytree(source / name, run.out_dir / name)
    run.state["steps"] = {step: state["steps"][step] for step in ("world", "detector")}
    run.save_state()


def stage_speed(record: dict) -> dict:
    steps = sum(item["steps"] for item in record["passes"])
    return {"steps": steps, "seconds": record["seconds"], "seconds_per_step": round(record["seconds"] / steps, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--base", choices=("full", "quick"), default="full", help="the settings changed by --set")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--train", action="append", default=[], metavar="FIELD=VALUE", help="TrainConfig changes")
    parser.add_argument("--out", type=Path, required=True, help="the demo's output folder (removed first)")
    parser.add_argument("--reuse-detector", type=Path, default=None, metavar="DEMO_OUT")
    parser.add_argument("--results", type=Path, default=Path("demo_experiments.jsonl"))
    arguments = parser.parse_args()
    settings = parse_settings(arguments.base, arguments.set)
    shutil.rmtree(arguments.out, ignore_errors=True)
    run = ExperimentRun(arguments.out, settings, parse_train_changes(arguments.train))
    if arguments.reuse_detector:
        reuse_detector(run, arguments.reuse_detector)
    started = time.perf_counter()
    result = run.run()
    wall = time.perf_counter() - started
    steps = run.state["steps"]
    line = {
        "name": arguments.name,
        "base": arguments.base,
        "changes": arguments.set + arguments.train,
        "cpu": cpu_name(),
        "wall_seconds": round(wall, 1),
        "step_seconds": {step: record["seconds"] for step, record in steps.items()},
        "reused": result.reused,
        "detector": stage_speed(steps["detector"]),
        "egtr": stage_speed(steps["egtr"]),
        "passes": {stage: steps[stage]["passes"] for stage in ("detector", "egtr")},
        "test": {key: round(result.metrics[key], 4) for key in METRICS if key in result.metrics},
    }
    print(json.dumps(line))
    with arguments.results.open("a") as file:
        file.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
