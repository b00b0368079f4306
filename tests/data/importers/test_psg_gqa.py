"""`psg` and `gqa` imports: xyxy boxes, position and objectId references, string ids, vocabularies."""

from __future__ import annotations

import json

from tests.data.importers.helpers import image_file, problems, read_back, run_import, write_json

from egtr.cli import main
from egtr.data.importers.psg import readable_names


def psg_item(image_id, file_name, annotations, relations):
    return {
        "image_id": image_id,
        "file_name": file_name,
        "width": 60,
        "height": 40,
        "coco_image_id": 1,
        "annotations": annotations,
        "relations": relations,
    }


def test_psg_xyxy_positions_split_and_names(tmp_path):
    person = {"bbox": [10, 5, 30, 35], "bbox_mode": 0, "category_id": 0}
    grass = {"bbox": [0, 20, 60, 40], "bbox_mode": 0, "category_id": 2}  # a stuff class: index 2 = 2 things + 0
    empty = {"bbox": [5, 5, 5, 30], "bbox_mode": 0, "category_id": 1}  # zero width
    data = [
        # The zero-size box is at position 0: the relation [1, 2, 1] must still link person -> grass.
        psg_item("107902", "train2017/a.jpg", [empty, person, grass], [[1, 2, 1], [0, 2, 0], [2, 7, 0]]),
        psg_item("2", "val2017/b.jpg", [person, grass], [[0, 1, 2]]),
        psg_item("x3", "train2017/c.jpg", [person, grass], [[0, 1, 0], [0, 1, 0]]),
        psg_item("4", "train2017/d.jpg", [person, grass], [[0, 1, 0]]),
    ]
    payload = {
        "data": data,
        "thing_classes": ["person", "dog"],
        "stuff_classes": ["grass-merged", "wall-other-merged"],
        "predicate_classes": ["over", "in front of", "beside"],
        "test_image_ids": ["2"],
    }
    write_json(tmp_path / "psg" / "psg.json", payload)
    for name in ("train2017/a.jpg", "val2017/b.jpg", "train2017/c.jpg", "train2017/d.jpg"):
        image_file(tmp_path / "coco" / name, 60, 40)
    report = run_import(
        "psg", tmp_path / "psg" / "psg.json", tmp_path / "out", images=tmp_path / "coco", val_fraction=0.3
    )
    data = read_back(tmp_path / "out")
    assert list(data["test"]) == ["val2017/b.jpg"]  # test_image_ids (a string id) form the test split
    every = {name: image for split in data.values() for name, image in split.items()}
    a = every["train2017/a.jpg"]
    assert a["boxes"] == [[10, 5, 20, 30], [0, 20, 60, 20]] and a["labels"] == ["person", "grass"]
    assert a["relations"] == [(0, "in front of", 1)]
    assert every["train2017/c.jpg"]["relations"] == [(0, "over", 1)]
    assert dict(report.dropped) == {
        "zero-size box": 1,
        "relation to a dropped object": 1,
        "relation to a missing object": 1,
        "duplicate triplet": 1,
    }
    listed = {(p["reason"], p["record"]) for p in problems(tmp_path / "out")}
    assert ("relation to a missing object", "image_id 107902, relations[2]") in listed
    categories = json.loads((tmp_path / "out" / "train.json").read_text())["categories"]
    assert [c["name"] for c in categories] == ["person", "dog", "grass", "wall"]
    assert main(["data", "validate", "--data-root", str(tmp_path / "out")]) == 0


def test_psg_names_keep_suffixes_that_would_collide():
    assert readable_names(["wall-other-merged", "wall", "grass-merged", "sky-other"]) == [
        "wall-other",
        "wall",
        "grass",
        "sky",
    ]


def gqa_graph(objects):
    return {"width": 64, "height": 48, "objects": objects}


def gqa_object(name, x, y, w, h, *relations):
    return {
        "name": name,
        "x": x,
        "y": y,
        "w": w,
        "h": h,
        "attributes": [],
        "relations": [{"name": n, "object": o} for n, o in relations],
    }


def test_gqa_vocabulary_object_ids_and_min_count(tmp_path):
    train = {
        "1": gqa_graph(
            {
                # Keys out of order: objects are sorted by id, relations follow objectIds, not positions.
                "30": gqa_object("floor", 0, 30, 64, 18),
                "4": gqa_object("chair", 5, 10, 10, 20, ("on", "30"), ("to the left of", "12")),
                "12": gqa_object("table ", 30, 10, 20, 20, ("to the right of", "4"), ("on", "30"), ("near", "99")),
                "13": gqa_object("unicorn", 1, 1, 5, 5, ("on", "30")),  # a rare class: dropped with its relation
                "14": gqa_object("chair", 1, 1, 0, 5, ("on", "30")),  # zero-size box
            }
        ),
        "2": gqa_graph(
            {
                "5": gqa_object("chair", 0, 0, 10, 10, ("on", "6"), ("to the left of", "6")),
                "6": gqa_object("floor", 0, 10, 64, 38, ("to the right of", "5")),
            }
        ),
        "n3": gqa_graph({"7": gqa_object("table", 0, 0, 10, 10, ("on", "8")), "8": gqa_object("floor", 0, 10, 9, 9)}),
    }
    val = {"9": gqa_graph({"1": gqa_object("chair", 0, 0, 10, 10, ("on", "2")), "2": gqa_object("table", 0, 10, 9, 9)})}
    write_json(tmp_path / "gqa" / "train_sceneGraphs.json", train)
    write_json(tmp_path / "gqa" / "val_sceneGraphs.json", val)
    for image_id in ("1", "2", "n3", "9"):
        image_file(tmp_path / "images" / f"{image_id}.jpg", 64, 48)
    report = run_import(
        "gqa", tmp_path / "gqa", tmp_path / "out", images=tmp_path / "images", min_count=2, test_fraction=0.3
    )
    data = read_back(tmp_path / "out")
    assert list(data["val"]) == ["9.jpg"]
    every = {name: image for split in data.values() for name, image in split.items()}
    one = every["1.jpg"]
    assert one["labels"] == ["chair", "table", "floor"]  # ids 4, 12, 30 ("table " stripped)
    assert sorted(one["relations"]) == [(0, "on", 2), (0, "to the left of", 1), (1, "on", 2), (1, "to the right of", 0)]
    # "near" is used once: below --min-count 2, like the unicorn.
    names = json.loads((tmp_path / "out" / "rel.json").read_text())["rel_categories"]
    assert names == ["__background__", "on", "to the left of", "to the right of"]
    image_ids = {json.loads((tmp_path / "out" / f"{s}.json").read_text())["images"][0]["source_id"] for s in data}
    assert image_ids <= {"1", "2", "n3", "9"}
    assert dict(report.dropped) == {
        "rare class": 1,
        "rare predicate": 1,
        "zero-size box": 1,
        "relation to a dropped object": 2,
    }
    assert main(["data", "validate", "--data-root", str(tmp_path / "out")]) == 0


def test_a_folder_where_a_file_is_expected_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "exports").mkdir()
    assert main(["data", "import", "psg", str(tmp_path / "exports"), "--out", str(tmp_path / "out")]) == 2
    assert "a folder without psg.json" in capsys.readouterr().err
    assert main(["data", "import", "label-studio", str(tmp_path / "exports"), "--out", str(tmp_path / "out")]) == 2
    assert "pass the JSON export file" in capsys.readouterr().err
    assert main(["data", "import", "gqa", str(tmp_path / "exports"), "--out", str(tmp_path / "out")]) == 2
    assert "no train_sceneGraphs.json or val_sceneGraphs.json" in capsys.readouterr().err
