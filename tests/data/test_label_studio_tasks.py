"""`egtr predict --output-format label-studio`: tasks whose predictions propose the graphs, the labelling config,
image references, thresholds; and the round trip through what Label Studio does with them (accept, export) back
into `egtr data import label-studio`, with the same boxes and relations (the real Label Studio:
benchmarks/label_studio_roundtrip.py)."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import pytest
from tests.data.importers.helpers import image_file, read_back

from egtr.cli import main
from egtr.data.label_studio_tasks import image_name_candidates, image_reference, labelling_config, task_score
from egtr.inference.scene_graph import SceneGraph

MODEL = Path(__file__).parents[1] / "fixtures" / "reference" / "artifact"
FAST = ["--size", "64", "--max-size", "96", "--device", "cpu", "--no-progress"]


def photos(folder: Path) -> list[Path]:
    """Four photos, one in a sub-folder with a space in its name, one stored 60 x 90 with EXIF orientation 6 (shown
    90 x 60: Label Studio's percentages are of the shown image)."""
    paths = [image_file(folder / f"p{index}.jpg", 80 + 8 * index, 48) for index in range(2)]
    paths.append(image_file(folder / "sub" / "my photo.jpg", 64, 64))
    paths.append(image_file(folder / "rotated.jpg", 60, 90, orientation=6))
    return paths


def predict(inputs: list[str], out: Path, *options: str) -> int:
    command = ["predict", *inputs, "--model", str(MODEL), "--out", str(out), "--output-format", "label-studio"]
    return main([*command, *FAST, *options])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ls")
    photos(root / "photos")
    assert predict([str(root / "photos")], root / "out", "--recursive", "--top-k", "6") == 0
    return root / "photos", root / "out"


def test_tasks_propose_each_graph_in_percent_of_the_shown_image(run):
    _folder, out = run
    tasks = json.loads((out / "tasks.json").read_text())
    references = [task["data"]["image"] for task in tasks]
    # Local files by default: from the parent of the image folder (Label Studio's document root must lie above the
    # folder of its local-files storage).
    assert references == [
        "/data/local-files/?d=photos/p0.jpg",
        "/data/local-files/?d=photos/p1.jpg",
        "/data/local-files/?d=photos/rotated.jpg",
        "/data/local-files/?d=photos/sub/my%20photo.jpg",
    ]
    for task in tasks:
        name = image_name_candidates(task["data"]["image"])[0]
        graph = SceneGraph.from_json(out / "graphs" / f"{Path(name).stem}.json")
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "artifact" and prediction["score"] == pytest.approx(task_score(graph))
        rectangles = [item for item in prediction["result"] if item["type"] == "rectanglelabels"]
        relations = [item for item in prediction["result"] if item["type"] == "relation"]
        height, width = graph.image_size
        assert len(rectangles) == len(graph.objects) and len(graph.relations) == 6
        for item, obj in zip(rectangles, graph.objects, strict=True):
            assert (item["from_name"], item["to_name"]) == ("label", "image")
            assert (item["original_width"], item["original_height"]) == (width, height)
            assert item["value"]["rectanglelabels"] == [obj.label_name] and item["score"] == obj.score
            x1, y1, x2, y2 = obj.box
            value = item["value"]
            assert value["x"] == pytest.approx(100 * x1 / width) and value["width"] == pytest.approx(
                100 * (x2 - x1) / width
            )
            assert value["y"] == pytest.approx(100 * y1 / height) and value["height"] == pytest.approx(
                100 * (y2 - y1) / height
            )
        proposed = {(r["from_id"], label, r["to_id"]) for r in relations for label in r["labels"]}
        assert proposed == {(f"o{r.subject}", r.predicate_name, f"o{r.object}") for r in graph.relations}
        assert all(r["direction"] == "right" for r in relations)
    rotated = json.loads((out / "graphs" / "rotated.json").read_text())["image_size"]
    assert rotated == {"height": 60, "width": 90}  # the EXIF-rotated photo as shown


def test_the_labelling_config_lists_the_model_names(run):
    config = (run[1] / "labeling_config.xml").read_text()
    assert '<RectangleLabels name="label" toName="image">' in config and "<Relations>" in config
    assert config.count("<Label value=") == 12 and config.count("<Relation value=") == 7
    odd = ElementTree.fromstring(labelling_config(['a "b" & c', "d'e"], ["<on>"]))  # names XML would break on
    assert [label.get("value") for label in odd.iter("Label")] == ['a "b" & c', "d'e"]
    assert [relation.get("value") for relation in odd.iter("Relation")] == ["<on>"]


def test_round_trip_through_accepted_predictions_gives_the_same_boxes_and_relations(run, tmp_path):
    """What Label Studio does when a person submits a pre-annotated task unchanged: the prediction's result becomes
    the annotation's; its JSON export is then imported."""
    folder, out = run
    tasks = json.loads((out / "tasks.json").read_text())
    export = [
        {
            "id": 100 + index,
            "data": task["data"],
            "annotations": [{"id": index, "result": task["predictions"][0]["result"]}],
        }
        for index, task in enumerate(tasks)
    ]
    (tmp_path / "export.json").write_text(json.dumps(export))
    data = tmp_path / "data"
    assert main(["data", "import", "label-studio", str(tmp_path / "export.json"), "--images", str(folder),
                 "--out", str(data), "--val-fraction", "0.25", "--test-fraction", "0.25"]) == 0  # fmt: skip
    imported = {name: image for split in read_back(data).values() for name, image in split.items()}
    assert sorted(imported) == ["p0.jpg", "p1.jpg", "rotated.jpg", "sub/my photo.jpg"]
    for name, image in imported.items():
        graph = SceneGraph.from_json(out / "graphs" / f"{Path(name).stem}.json")
        expected = [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in (obj.box for obj in graph.objects)]
        assert image["size"] == (graph.image_size[1], graph.image_size[0])
        assert len(image["boxes"]) == len(expected)
        for box, want in zip(image["boxes"], expected, strict=True):
            assert max(abs(a - b) for a, b in zip(box, want, strict=True)) <= 1e-3  # well within 1 px
        relations = {(s, p, o) for s, p, o in image["relations"]}
        assert relations == {(r.subject, r.predicate_name, r.object) for r in graph.relations}


def test_references_for_urls_and_roots_and_input_lists(tmp_path, capsys):
    paths = photos(tmp_path / "photos")
    listed = tmp_path / "list.txt"
    listed.write_text(f"{paths[2]}\n")
    options = ["--image-root", str(tmp_path), "--image-prefix", "https://img.example/data/", "--no-graph-constraint"]
    assert predict([str(paths[0])], tmp_path / "out", "--input-list", str(listed), *options) == 0
    tasks = json.loads((tmp_path / "out" / "tasks.json").read_text())
    assert [task["data"]["image"] for task in tasks] == [
        "https://img.example/data/photos/p0.jpg",
        "https://img.example/data/photos/sub/my%20photo.jpg",
    ]
    assert image_reference(paths[0], tmp_path, "s3://bucket/") == "s3://bucket/photos/p0.jpg"
    # An image outside the root: one line, exit 2, before the model loads and anything is written.
    capsys.readouterr()
    assert predict([str(paths[0])], tmp_path / "out2", "--image-root", str(tmp_path / "photos" / "sub")) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ") and "p0.jpg: not under the image root" in error[0]
    assert not (tmp_path / "out2" / "graphs").exists()


def test_thresholds_decide_what_is_proposed(tmp_path):
    paths = photos(tmp_path / "photos")
    assert predict([str(paths[0])], tmp_path / "few", "--top-k", "2") == 0
    assert predict([str(paths[0])], tmp_path / "none", "--score-threshold", "2", "--object-threshold", "0.3") == 0
    (few,) = json.loads((tmp_path / "few" / "tasks.json").read_text())
    labels = [
        label for item in few["predictions"][0]["result"] if item["type"] == "relation" for label in item["labels"]
    ]
    assert len(labels) == 2
    (none,) = json.loads((tmp_path / "none" / "tasks.json").read_text())
    result = none["predictions"][0]["result"]
    assert not [item for item in result if item["type"] == "relation"] and none["predictions"][0]["score"] == 0
    assert result and all(item["score"] >= 0.3 for item in result)  # objects above --object-threshold, unrelated
