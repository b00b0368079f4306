"""`egtr data select`: rank a prediction run's unlabelled images by uncertainty, diversity or at random, and write
the list and Label Studio tasks for just those images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from tests.data.importers.helpers import image_file

from egtr.cli import main
from egtr.data.label_studio_tasks import labelling_config, task_score
from egtr.inference.scene_graph import SceneGraph, SceneObject, SceneRelation
from egtr.inference.selection import Candidate, read_predictions, select


def graph(image: Path, score: float, predicate: str = "on", count: int = 10) -> SceneGraph:
    """`count` relations `a predicate b` of triplet score `score` in a 40 x 30 image."""
    objects = [SceneObject((1, 2, 20, 25), 0, "a", 0.9), SceneObject((10, 5, 39, 29), 1, "b", 0.8)]
    relations = [SceneRelation(0, 1, 0, predicate, score, score) for _ in range(count)]
    return SceneGraph(objects, relations, (30, 40), str(image))


@pytest.fixture
def run(tmp_path) -> Path:
    """A predict folder of six images: confidence 0.9, 0.2, 0.5, 0.8, 0.3 and 0.1 (the last three 'left of')."""
    out = tmp_path / "run"
    out.mkdir()
    for index, (score, predicate) in enumerate(
        [(0.9, "on"), (0.2, "on"), (0.5, "on"), (0.8, "left of"), (0.3, "left of"), (0.1, "left of")]
    ):
        image = image_file(tmp_path / "photos" / f"img{index}.jpg")
        graph(image, score, predicate).to_json(out / f"img{index}.json")
    (out / "labeling_config.xml").write_text(labelling_config(["a", "b", "c"], ["on", "left of", "under"]))
    return out


def names(chosen: list[Candidate]) -> list[str]:
    return [Path(item.key).stem for item in chosen]


def test_uncertainty_takes_the_least_confident_first(run):
    candidates = read_predictions(run)
    assert len(candidates) == 6 and task_score(candidates[0].graph) == pytest.approx(0.9)
    assert candidates[5].uncertainty == pytest.approx(0.9)
    assert names(select(candidates, 3, "uncertainty")) == ["img5", "img1", "img4"]
    # A graph with fewer relations than the score's 10 counts the missing ones as 0: less sure.
    assert task_score(graph(Path("x.jpg"), 0.9, count=5)) == pytest.approx(0.45)


def test_diverse_covers_what_the_model_sees_and_random_follows_the_seed(run):
    candidates = read_predictions(run)
    # From the most uncertain ('left of'), the next is the most uncertain of the images least like it ('on').
    assert names(select(candidates, 2, "diverse")) == ["img5", "img1"]
    first, again, other = (names(select(candidates, 6, "random", seed)) for seed in (0, 0, 1))
    assert first == again and sorted(first) == [f"img{i}" for i in range(6)] and first != other


def test_select_writes_the_list_the_table_and_tasks_for_just_those(run, tmp_path):
    labelled = tmp_path / "data"
    labelled.mkdir()
    for split in ("train", "val", "test"):  # img5 is labelled already
        images = [{"id": 1, "file_name": "sub/img5.jpg"}] if split == "train" else []
        (labelled / f"{split}.json").write_text(json.dumps({"images": images}))
    out = tmp_path / "next"
    assert main(["data", "select", "--predictions", str(run), "--budget", "2", "--strategy", "uncertainty",
                 "--labelled", str(labelled), "--out", str(out)]) == 0  # fmt: skip
    listed = (out / "selection.txt").read_text().splitlines()
    assert [Path(line).name for line in listed] == ["img1.jpg", "img4.jpg"]
    rows = list(csv.DictReader((out / "selection.csv").open()))
    assert [row["rank"] for row in rows] == ["1", "2"] and float(rows[0]["uncertainty"]) == pytest.approx(0.8)
    tasks = json.loads((out / "tasks.json").read_text())
    assert [task["data"]["image"] for task in tasks] == [
        "/data/local-files/?d=photos/img1.jpg",
        "/data/local-files/?d=photos/img4.jpg",
    ]
    assert tasks[0]["predictions"][0]["model_version"] == "run"
    assert tasks[0]["predictions"][0]["score"] == pytest.approx(0.2)
    # The run's own labelling config (all of the model's names), not only the names the chosen graphs use.
    assert (out / "labeling_config.xml").read_text() == (run / "labeling_config.xml").read_text()


def test_bulk_shards_are_read_too(tmp_path):
    image = image_file(tmp_path / "photo.jpg")
    (tmp_path / "bulk" / "shards").mkdir(parents=True)
    lines = [json.dumps({"key": f"k{i}", **graph(image, score).to_dict()}) for i, score in enumerate((0.7, 0.1))]
    (tmp_path / "bulk" / "shards" / "list-000000.jsonl").write_text("\n".join(lines) + "\n")
    candidates = read_predictions(tmp_path / "bulk")
    assert [item.key for item in candidates] == ["k0", "k1"] and candidates[0].path == image
    assert [item.key for item in select(candidates, 1, "uncertainty")] == ["k1"]


def test_a_folder_without_predictions_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["data", "select", "--predictions", str(tmp_path / "empty"), "--budget", "3",
                 "--out", str(tmp_path / "out")]) == 2  # fmt: skip
    assert "no predictions" in capsys.readouterr().err
