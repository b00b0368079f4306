"""What to label next (`egtr data select`): rank the unlabelled images of a prediction run for a labelling budget.

A run is a bulk output folder (`egtr predict --output-format parquet|jsonl|jsonl.gz`, its `shards/`) or a folder of
scene-graph JSON files (`egtr predict`, or `--output-format label-studio`, whose JSON files are in `graphs/`).

Strategies (docs/own-data.md; benchmarks/active_selection.py measures them on the synthetic world):

* `uncertainty`: the images the model is least sure of first, by `1 - task_score` (`task_score`: the mean triplet
  score of the image's 10 best relations, a missing one counting 0; the score Label Studio shows and sorts by);
* `diverse`: greedy k-center over what the model sees in each image (how often each class and predicate is in its
  graph), starting from the most uncertain image: each next image is the one least like any chosen so far, the
  more uncertain of equally distant ones;
* `random`: a seeded shuffle, the baseline the others must beat.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from egtr.data.label_studio_tasks import task_score
from egtr.errors import DataError
from egtr.inference.scene_graph import SceneGraph

STRATEGIES = ("uncertainty", "diverse", "random")
_SHARD_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz")


@dataclass(frozen=True)
class Candidate:
    """One predicted image: `key` names it in the run (its path for files), `path` is its file when it exists."""

    key: str
    path: Path | None
    graph: SceneGraph

    @property
    def uncertainty(self) -> float:
        return 1.0 - task_score(self.graph)


# ------------------------------------------------------------------ reading a run
def read_predictions(run: Path) -> list[Candidate]:
    """Every image of a prediction run (bulk shards or scene-graph JSON files), in the run's order.

    Raises:
        DataError: `run` holds neither shards nor scene-graph JSON files, or a record is no scene graph.
    """
    if not run.is_dir():
        raise DataError(f"{run}: not a folder; pass the --out folder of an `egtr predict` run")
    shards = sorted(path for path in (run / "shards").glob("*") if path.name.endswith(_SHARD_SUFFIXES))
    records = _shard_records(shards) if shards else _graph_files(run)
    candidates = []
    for source, record in records:
        try:
            graph = SceneGraph.from_dict(record, source=source)
        except ValueError as error:
            raise DataError(str(error)) from error
        key = str(record.get("key") or graph.image_path or source)
        path = Path(graph.image_path) if graph.image_path and Path(graph.image_path).is_file() else None
        candidates.append(Candidate(key, path, graph))
    if not candidates:
        raise DataError(f"{run}: no predictions (neither shards/ of a bulk run nor scene-graph JSON files)")
    return candidates


def _shard_records(shards: Sequence[Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    for shard in shards:
        if shard.name.endswith(".parquet"):
            import pyarrow.parquet as pq  # the bulk extra, as for writing the shards

            for position, record in enumerate(pq.read_table(shard).to_pylist()):
                yield f"{shard}, record {position}", record
            continue
        opener = gzip.open if shard.name.endswith(".gz") else open
        with opener(shard, "rt", encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                yield f"{shard}, line {number}", json.loads(line)


def _graph_files(run: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """The scene-graph JSON files of a predict folder (other JSON files, such as tasks.json, are passed over)."""
    for path in sorted([*run.glob("*.json"), *run.glob("graphs/*.json")]):
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(f"{path}: cannot be read as JSON ({error})") from error
        if isinstance(values, dict) and "objects" in values and "relations" in values:
            yield str(path), values


def labelled_names(data_root: Path) -> set[str]:
    """The file names (without folders) of every image of a native dataset: images labelled already."""
    names: set[str] = set()
    for split in ("train", "val", "test"):
        path = data_root / f"{split}.json"
        if not path.is_file():
            raise DataError(f"{path}: not found; --labelled takes a dataset folder (egtr data import --out)")
        names.update(Path(image["file_name"]).name for image in json.loads(path.read_text())["images"])
    return names


# ------------------------------------------------------------------ choosing
def select(candidates: Sequence[Candidate], budget: int, strategy: str, seed: int = 0) -> list[Candidate]:
    """The `budget` candidates to label next, best first (all of them, ranked, when there are fewer)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    by_uncertainty = sorted(candidates, key=lambda item: (-item.uncertainty, item.key))
    if strategy == "uncertainty":
        return by_uncertainty[:budget]
    if strategy == "random":
        shuffled = sorted(candidates, key=lambda item: item.key)
        random.Random(seed).shuffle(shuffled)
        return shuffled[:budget]
    return _k_center(by_uncertainty, budget)


def _features(candidates: Sequence[Candidate]) -> np.ndarray:
    """One row per candidate: how often each class and predicate is in its graph, scaled to unit length (content
    only: how sure the model is orders the candidates, see `_k_center`)."""
    columns: dict[str, int] = {}
    rows = []
    for candidate in candidates:
        row: dict[int, float] = {}
        graph = candidate.graph
        seen = [f"class:{o.label_name}" for o in graph.objects] + [
            f"predicate:{r.predicate_name}" for r in graph.relations
        ]
        for name in seen:
            column = columns.setdefault(name, len(columns))
            row[column] = row.get(column, 0.0) + 1.0
        rows.append(row)
    features = np.zeros((len(candidates), max(len(columns), 1)))
    for index, row in enumerate(rows):
        for column, value in row.items():
            features[index, column] = value
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.where(norms > 0, norms, 1.0)


def _k_center(ranked: Sequence[Candidate], budget: int) -> list[Candidate]:
    """Greedy k-center from the first of `ranked`; ties go to the earlier (more uncertain) candidate."""
    features = _features(ranked)
    chosen = [0]
    distance = np.linalg.norm(features - features[0], axis=1)
    while len(chosen) < min(budget, len(ranked)):
        distance[chosen] = -1.0
        best = int(np.argmax(distance))  # the first of equal distances: the most uncertain
        chosen.append(best)
        distance = np.minimum(distance, np.linalg.norm(features - features[best], axis=1))
    return [ranked[index] for index in chosen]
