"""`label-studio` import: percent boxes, directions, several annotations, renamed uploads, EXIF orientation."""

from __future__ import annotations

import json
import re

import pytest
from tests.data.importers.helpers import image_file, problems, read_back, run_import, write_json

from egtr.cli import main
from egtr.data.importers.label_studio import image_name_candidates
from egtr.errors import DataError


def rectangle(region_id, label, x, y, w, h, rotation=0, **extra):
    value = {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": [label]}
    return {
        "id": region_id,
        "type": "rectanglelabels",
        "original_width": 80,
        "original_height": 40,
        "value": value,
        **extra,
    }


def relation(source, target, *labels, direction="right"):
    return {"type": "relation", "from_id": source, "to_id": target, "direction": direction, "labels": list(labels)}


def task(task_id, image, result, **extra):
    return {
        "id": task_id,
        "data": {"image": image},
        "annotations": [{"result": result, "was_cancelled": False}],
        **extra,
    }


def simple_task(task_id, name):
    return task(
        task_id,
        f"/data/upload/1/{task_id:08x}-{name}",
        [rectangle("a", "man", 0, 0, 50, 50), rectangle("b", "horse", 50, 50, 50, 50), relation("a", "b", "riding")],
    )


@pytest.fixture
def export(tmp_path):
    images = tmp_path / "photos"
    for name in ("one.jpg", "two.jpg", "three.jpg", "four.jpg"):
        image_file(images / name, 80, 40)
    # Stored 40 x 80 (w x h), EXIF orientation 6: shown (and annotated) as 80 x 40.
    image_file(images / "rotated.jpg", 40, 80, orientation=6)
    tasks = [
        task(
            1,
            "/data/upload/1/ab12cd34-one.jpg",  # renamed upload: resolved to photos/one.jpg
            [
                rectangle("a", "man", 10, 20, 30, 40),
                # A `rectangle` region labelled by a separate `labels` item with the same id (deduplicated).
                {
                    "id": "b",
                    "type": "rectangle",
                    "original_width": 80,
                    "original_height": 40,
                    "value": {"x": 50, "y": 50, "width": 25, "height": 50, "rotation": 0},
                },
                {
                    "id": "b",
                    "type": "labels",
                    "value": {"x": 50, "y": 50, "width": 25, "height": 50, "labels": ["horse"]},
                },
                relation("a", "b", "riding"),  # right: a -> b
                relation("a", "b", "holding", direction="left"),  # left: b -> a
                relation("b", "a", "beside", "near", direction="bi"),  # both ways, two labels
            ],
        ),
        {
            "id": 2,
            "data": {"image": "http://localhost:8080/data/local-files/?d=photos/two.jpg"},
            "annotations": [
                {
                    "result": [
                        rectangle("x", "man", 0, 0, 10, 10),
                        rectangle("y", "man", 20, 0, 10, 10),
                        relation("x", "y", "near"),
                    ],
                    "was_cancelled": False,
                    "created_at": "2024-01-02T00:00:00",
                },
                {
                    "result": [
                        rectangle("x", "horse", 0, 0, 10, 10),
                        rectangle("y", "man", 20, 0, 10, 10),
                        relation("x", "y", "riding"),
                    ],
                    "was_cancelled": False,
                    "created_at": "2024-03-01T00:00:00",
                },  # the latest: taken
                {"result": [], "was_cancelled": True, "created_at": "2024-05-01T00:00:00"},
            ],
        },
        task(
            3,
            "/data/upload/1/0badf00d-rotated.jpg",
            [rectangle("p", "man", 0, 0, 50, 100), rectangle("q", "horse", 50, 0, 50, 100), relation("p", "q", "near")],
        ),
        task(
            4,
            "three.jpg",
            [
                rectangle("s", "man", 10, 10, 20, 20, rotation=90),
                rectangle("t", "horse", 60, 10, 20, 20),
                relation("s", "t", "near"),
            ],
        ),
        simple_task(5, "four.jpg"),
    ]
    return write_json(tmp_path / "export.json", tasks), images


def test_boxes_relations_annotations_and_file_names(export, tmp_path):
    path, images = export
    report = run_import("label-studio", path, tmp_path / "out", images=images, val_fraction=0.3, test_fraction=0.3)
    data = {name: image for split in read_back(tmp_path / "out").values() for name, image in split.items()}
    assert sorted(data) == ["four.jpg", "one.jpg", "rotated.jpg", "three.jpg", "two.jpg"]
    one = data["one.jpg"]
    assert one["size"] == (80, 40) and one["boxes"] == [[8, 8, 24, 16], [40, 20, 20, 20]]  # percent of 80 x 40
    assert sorted(one["relations"]) == [
        (0, "beside", 1),
        (0, "near", 1),
        (0, "riding", 1),
        (1, "beside", 0),
        (1, "holding", 0),
        (1, "near", 0),
    ]
    assert data["two.jpg"]["labels"] == ["horse", "man"] and data["two.jpg"]["relations"] == [(0, "riding", 1)]
    # The EXIF-rotated photo: its displayed size converts the percentages, and the loader sees the same size.
    assert data["rotated.jpg"]["size"] == (80, 40) and data["rotated.jpg"]["boxes"] == [[0, 0, 40, 40], [40, 0, 40, 40]]
    # Rotated by 90 degrees about its top-left corner (8, 4): the enclosing box lies to the left of it.
    assert data["three.jpg"]["boxes"][0] == [0, 4, 8, 16]
    assert report.notes["bidirectional relation: imported in both directions"] == 1
    # One note per annotation set aside (task 2: an older one and a cancelled one), each named below.
    assert report.notes["task with several annotations: took the latest not cancelled"] == 2
    assert report.notes["rotated rectangle: took its enclosing axis-aligned box"] == 1
    assert report.num_dropped == 0
    names = json.loads((tmp_path / "out" / "rel.json").read_text())["rel_categories"]
    assert names == ["__background__", "beside", "holding", "near", "riding"]
    assert main(["data", "validate", "--data-root", str(tmp_path / "out")]) == 0  # decodes every image: sizes agree


def test_bad_tasks_are_reported_and_skipped(export, tmp_path):
    path, images = export
    tasks = json.loads(path.read_text())
    tasks[4]["annotations"][0]["result"].append(relation("a", "b"))  # no label
    tasks[4]["annotations"][0]["result"].append(relation("a", "zz", "near"))  # no such region
    tasks.append(task(6, "/data/upload/1/deadbeef-missing.jpg", tasks[4]["annotations"][0]["result"]))
    tasks.append({"id": 7, "data": {"text": "no image"}, "annotations": []})
    tasks.append({"id": 8, "data": {"image": "four.jpg"}, "annotations": [{"result": [], "was_cancelled": True}]})
    path.write_text(json.dumps(tasks))
    report = run_import("label-studio", path, tmp_path / "out", images=images, val_fraction=0.3, test_fraction=0.3)
    listed = {(p["reason"], p["record"].split(", relation")[0], p["field"]) for p in problems(tmp_path / "out")}
    assert ("malformed record", "task 5", "labels") in listed
    assert ("relation to a missing object", "task 5", "object") in listed
    assert ("image file not found", "task 6", "file_name") in listed
    assert ("malformed record", "task 7", "data.image") in listed
    assert ("image without relations", "task 8", "annotations") in listed
    assert report.num_dropped == 5


def test_upload_names_and_other_exports(tmp_path):
    assert image_name_candidates("/data/upload/3/1a2b3c4d-my photo.jpg") == [
        "upload/3/1a2b3c4d-my photo.jpg",
        "1a2b3c4d-my photo.jpg",
        "my photo.jpg",
    ]
    assert image_name_candidates("/data/local-files/?d=dataset/x%201.png")[:2] == ["dataset/x 1.png", "x 1.png"]
    write_json(tmp_path / "min.json", [{"image": "/data/upload/1/x.jpg", "label": [{"x": 1}]}])
    with pytest.raises(DataError, match="JSON-MIN export"):
        run_import("label-studio", tmp_path / "min.json", tmp_path / "out")
    write_json(tmp_path / "boxes.json", [task(1, "x.jpg", [rectangle("a", "man", 0, 0, 5, 5)])])
    with pytest.raises(DataError, match="<Relations>"):
        run_import("label-studio", tmp_path / "boxes.json", tmp_path / "out")


def test_every_annotation_set_aside_is_named_with_its_task(export, tmp_path):
    # Before: only a count ("1 x task with several annotations"), and nothing at all for a cancelled annotation
    # next to a valid one.
    path, images = export
    tasks = json.loads(path.read_text())
    tasks[4]["annotations"].insert(0, {"id": 51, "result": [], "was_cancelled": True})
    path.write_text(json.dumps(tasks))
    report = run_import("label-studio", path, tmp_path / "out", images=images, val_fraction=0.3, test_fraction=0.3)
    notes = {(p["record"], p["detail"]) for p in problems(tmp_path / "out") if p["kind"] == "note"}
    assert notes == {
        ("task 2, annotations[0]", "not used: older than annotations[1] (created_at '2024-01-02T00:00:00')"),
        ("task 2, annotations[2]", "not used: cancelled"),
        ("task 5, annotation 51", "not used: cancelled"),
    }
    assert report.notes["task with several annotations: took the latest not cancelled"] == 3
    assert report.num_dropped == 0
    printed = report.format()
    assert "note: " in printed and "task 5, annotation 51: task with several annotations" in printed


def three_images(tmp_path, first_task_id, result):
    """An export of three 80 x 40 images (a dataset needs one per split), each annotated with `result`."""
    names = ("one.jpg", "two.jpg", "three.jpg")
    for name in names:
        image_file(tmp_path / name, 80, 40)
    tasks = [task(first_task_id + position, name, result) for position, name in enumerate(names)]
    return write_json(tmp_path / "export.json", tasks)


def test_a_two_way_relation_with_a_one_way_predicate_is_warned_about(tmp_path):
    # Before: "left of" made two-way became "a left of b" and "b left of a" with nothing but a count of notes.
    result = [
        rectangle("a", "man", 0, 0, 20, 20),
        rectangle("b", "horse", 50, 0, 20, 20),
        relation("a", "b", "left of", direction="bi"),
        relation("a", "b", "near", direction="bi"),  # reads the same both ways: no warning
    ]
    report = run_import("label-studio", three_images(tmp_path, 9, result), tmp_path / "out")
    data = {name: image for split in read_back(tmp_path / "out").values() for name, image in split.items()}
    assert sorted(data["one.jpg"]["relations"]) == [
        (0, "left of", 1),
        (0, "near", 1),
        (1, "left of", 0),
        (1, "near", 0),
    ]
    warnings = [p for p in problems(tmp_path / "out") if p["kind"] == "warning"]
    assert len(warnings) == 3 and report.warnings == {
        "two-way relation with a one-way predicate: imported in both directions": 3
    }
    assert warnings[0]["record"] == "task 9, relation a->b (result[2]), label 'left of'"
    assert warnings[0]["detail"].startswith("a left of b and b left of a")
    assert warnings[0]["source"]["direction"] == "bi"
    assert "warning: 3 x two-way relation with a one-way predicate" in report.format()


def test_validate_names_the_source_ids_of_a_box_partly_outside_the_image(tmp_path, capsys):
    # Before: "annotations[1] (image 1, object 1)": the ids of the imported dataset only.
    result = [rectangle("a", "man", 0, 0, 20, 20), rectangle("zz", "horse", 90, 0, 20, 20), relation("a", "zz", "near")]
    run_import("label-studio", three_images(tmp_path, 17, result), tmp_path / "out")
    assert main(["data", "validate", "--data-root", str(tmp_path / "out")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "extends outside" in line]
    assert len(lines) == 3
    found = [re.search(r"source: image '(\d+)', object 'zz'\)", line) for line in lines]
    assert sorted(match.group(1) for match in found if match) == ["17", "18", "19"]
