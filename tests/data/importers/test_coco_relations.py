"""`coco-relations` import: SGG-Benchmark's COCO layout, every pitfall of docs/annotation-formats.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.data.importers.helpers import image_file, problems, read_back, run_import, write_json

from egtr.cli import main
from egtr.data.importers.export import export_coco_relations
from egtr.data.synthetic import generate_synthetic_dataset
from egtr.errors import DataError


def coco_split(image_ids: list[int], **extra) -> dict:
    """Two objects per image: man (annotation id 10*i) riding horse (10*i + 1)."""
    images, annotations, relations = [], [], []
    for image_id in image_ids:
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 40, "height": 30})
        annotations += [
            {"id": 10 * image_id, "image_id": image_id, "category_id": 3, "bbox": [1, 2, 10, 20], "iscrowd": 0},
            {"id": 10 * image_id + 1, "image_id": image_id, "category_id": 7, "bbox": [5, 5, 30, 20], "iscrowd": 0},
        ]
        relations.append(
            {
                "id": image_id,
                "image_id": image_id,
                "subject_id": 10 * image_id,
                "predicate_id": 4,
                "object_id": 10 * image_id + 1,
            }
        )
    return {
        "images": images,
        "annotations": annotations,
        "rel_annotations": relations,
        # 1-based ids with gaps and the background entry at 0, as on the Hub.
        "categories": [{"id": 0, "name": "__background__"}, {"id": 3, "name": "man"}, {"id": 7, "name": "horse"}],
        "rel_categories": [{"id": 0, "name": "__background__"}, {"id": 4, "name": "riding"}, {"id": 9, "name": "near"}],
        **extra,
    }


@pytest.fixture
def hub_layout(tmp_path: Path) -> Path:
    """`{split}/_annotations.coco.json` with the images next to each file."""
    for split, ids in (("train", [1, 2, 3]), ("val", [4]), ("test", [5])):
        write_json(tmp_path / "src" / split / "_annotations.coco.json", coco_split(ids))
        for image_id in ids:
            image_file(tmp_path / "src" / split / f"{image_id}.jpg")
    return tmp_path / "src"


def test_hub_layout_keeps_splits_ids_names_and_annotation_id_references(hub_layout, tmp_path):
    report = run_import("coco-relations", hub_layout, tmp_path / "out")
    data = read_back(tmp_path / "out")
    assert {split: sorted(images) for split, images in data.items()} == {
        "train": ["1.jpg", "2.jpg", "3.jpg"],
        "val": ["4.jpg"],
        "test": ["5.jpg"],
    }
    image = data["train"]["2.jpg"]
    assert image["id"] == 2 and image["labels"] == ["man", "horse"] and image["boxes"][1] == [5, 5, 30, 20]
    assert image["relations"] == [(0, "riding", 1)]
    categories = json.loads((tmp_path / "out" / "train.json").read_text())["categories"]
    assert [c["name"] for c in categories] == ["man", "horse"]  # background dropped, ids 1..C
    assert json.loads((tmp_path / "out" / "rel.json").read_text())["rel_categories"] == [
        "__background__",
        "riding",
        "near",
    ]
    assert report.num_dropped == 0 and report.splits["train"]["relations"] == 3
    assert main(["data", "validate", "--data-root", str(tmp_path / "out")]) == 0


def test_zero_based_ids_without_background(tmp_path):
    split = coco_split([1, 2, 3])  # three images: one per split
    split["categories"] = [{"id": 0, "name": "horse"}, {"id": 3, "name": "man"}, {"id": 7, "name": "tree"}]
    split["rel_categories"] = ["near", "riding", "on", "under", "riding2"]  # bare strings: ids 1..5, 4 = under
    write_json(tmp_path / "one.json", split)
    for image_id in (1, 2, 3):
        image_file(tmp_path / f"{image_id}.jpg")
    run_import("coco-relations", tmp_path / "one.json", tmp_path / "out")
    image = next(image for split in read_back(tmp_path / "out").values() for image in split.values())
    assert image["labels"] == ["man", "tree"] and image["relations"] == [(0, "under", 1)]


def test_every_drop_is_reported_with_file_record_field_and_source(hub_layout, tmp_path):
    path = hub_layout / "train" / "_annotations.coco.json"
    data = json.loads(path.read_text())
    # Image 1: a zero-size box first (positions after it must not shift), a relation to it, one to an annotation of
    # image 2, a duplicated triplet and a second predicate for the same pair (kept).
    data["annotations"].insert(0, {"id": 99, "image_id": 1, "category_id": 3, "bbox": [3, 3, 0, 5]})
    data["rel_annotations"] += [
        {"id": 50, "image_id": 1, "subject_id": 99, "predicate_id": 4, "object_id": 11},
        {"id": 51, "image_id": 1, "subject_id": 10, "predicate_id": 4, "object_id": 21},
        {"id": 52, "image_id": 1, "subject_id": 10, "predicate_id": 4, "object_id": 11},
        {"id": 53, "image_id": 1, "subject_id": 10, "predicate_id": 9, "object_id": 11},
        {"id": 54, "image_id": 1, "subject_id": 10, "predicate_id": 5, "object_id": 11},
    ]
    # Image 3 loses its only relation: the image is dropped. Image 2's file is missing.
    data["rel_annotations"] = [r for r in data["rel_annotations"] if r["image_id"] != 3]
    data["annotations"].append({"id": 77, "image_id": 2, "category_id": 3, "bbox": [1, 2, "x", 4]})
    path.write_text(json.dumps(data))
    (hub_layout / "train" / "2.jpg").unlink()
    report = run_import("coco-relations", hub_layout, tmp_path / "out")
    assert dict(report.dropped) == {
        "zero-size box": 1,
        "relation to a dropped object": 1,
        "relation to a missing object": 1,
        "duplicate triplet": 1,
        "unknown predicate": 1,
        "image without relations": 1,
        "image file not found": 1,
        "malformed record": 1,
    }
    image = read_back(tmp_path / "out")["train"]["1.jpg"]
    assert image["labels"] == ["man", "horse"] and sorted(image["relations"]) == [(0, "near", 1), (0, "riding", 1)]
    listed = {(p["reason"], p["record"], p["field"]): p for p in problems(tmp_path / "out")}
    assert listed[("relation to a dropped object", "rel_annotation id 50", "subject")]["source"]["subject_id"] == 99
    assert listed[("relation to a missing object", "rel_annotation id 51", "object")]["file"] == str(path)
    assert listed[("zero-size box", "annotation id 99", "bbox")]["source"]["bbox"] == [3, 3, 0, 5]
    assert ("unknown predicate", "rel_annotation id 54", "predicate_id") in listed
    assert ("malformed record", "annotation id 77", "bbox") in listed
    assert ("image without relations", "image id 3", "relations") in listed
    assert ("image file not found", "image id 2", "file_name") in listed
    assert json.loads((tmp_path / "out" / "import_report.json").read_text())["dropped"]["duplicate triplet"] == 1


def test_single_file_is_split_by_image_with_the_seed(tmp_path):
    ids = list(range(1, 41))
    write_json(tmp_path / "all.json", coco_split(ids))
    for image_id in ids:
        image_file(tmp_path / f"{image_id}.jpg", 8, 8)
    run_import("coco-relations", tmp_path / "all.json", tmp_path / "a", val_fraction=0.2, test_fraction=0.2, seed=3)
    run_import("coco-relations", tmp_path / "all.json", tmp_path / "b", val_fraction=0.2, test_fraction=0.2, seed=3)
    run_import("coco-relations", tmp_path / "all.json", tmp_path / "c", val_fraction=0.2, test_fraction=0.2, seed=4)
    a, b, c = (read_back(tmp_path / name) for name in "abc")
    assert {s: sorted(v) for s, v in a.items()} == {s: sorted(v) for s, v in b.items()}
    assert {s: sorted(v) for s, v in a.items()} != {s: sorted(v) for s, v in c.items()}
    assert sum(len(images) for images in a.values()) == 40 and all(len(a[split]) >= 3 for split in ("val", "test"))


def test_round_trip_native_export_import_gives_the_same_dataset(tmp_path):
    native = generate_synthetic_dataset(tmp_path / "native", 6, 2, 2, 64, seed=2)
    export_coco_relations(native, tmp_path / "exported")
    report = run_import(
        "coco-relations", tmp_path / "exported", tmp_path / "again", images=native / "images", link=True
    )
    assert report.num_dropped == 0
    assert read_back(tmp_path / "again") == read_back(native)
    linked = tmp_path / "again" / "images" / "000001.png"
    assert linked.is_symlink() and linked.resolve() == (native / "images" / "000001.png").resolve()
    assert (native / "images" / "000001.png").is_file()  # never moved


def test_cli_exit_codes_and_one_line_errors(hub_layout, tmp_path, capsys):
    assert main(["data", "import", "coco-relations", str(hub_layout), "--out", str(tmp_path / "ok")]) == 0
    assert "train: 3 images, 6 objects, 3 relations" in capsys.readouterr().out
    # The output exists: refused without --overwrite.
    assert main(["data", "import", "coco-relations", str(hub_layout), "--out", str(tmp_path / "ok")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    (hub_layout / "test" / "5.jpg").unlink()  # the only test image: nothing left for the split
    assert main(["data", "import", "coco-relations", str(hub_layout), "--out", str(tmp_path / "x")]) == 2
    assert "no image left for split(s) test" in capsys.readouterr().err
    image_file(hub_layout / "test" / "5.jpg")
    path = hub_layout / "val" / "_annotations.coco.json"
    data = json.loads(path.read_text())
    data["rel_annotations"].append({"id": 8, "image_id": 4, "subject_id": 40, "predicate_id": 4, "object_id": 404})
    path.write_text(json.dumps(data))
    assert main(["data", "import", "coco-relations", str(hub_layout), "--out", str(tmp_path / "some")]) == 1
    assert "relation to a missing object" in capsys.readouterr().out
    path.write_text('{"images": [')
    assert main(["data", "import", "coco-relations", str(hub_layout), "--out", str(tmp_path / "bad")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {path}: malformed JSON") and "\n" not in error
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".bad.*"))  # nothing half-written


def test_plain_coco_without_relations_is_refused(tmp_path):
    split = coco_split([1])
    del split["rel_annotations"]
    write_json(tmp_path / "plain.json", split)
    with pytest.raises(DataError, match=r"plain.json: field 'rel_annotations' is missing .*no relations"):
        run_import("coco-relations", tmp_path / "plain.json", tmp_path / "out")


def test_dropped_records_are_quoted_from_each_split_file(hub_layout, tmp_path):
    """The importer streams the files and keeps no records: the problems file quotes them from the right file."""
    val = write_json(hub_layout / "val" / "_annotations.coco.json", coco_split([4, 7]))
    image_file(hub_layout / "val" / "7.jpg")
    data = json.loads(val.read_text())
    data["images"].append({"id": 4, "file_name": "8.jpg", "width": 40, "height": 30, "note": "second"})
    data["images"][0]["note"] = "first"
    data["annotations"][1]["bbox"] = [5, 5, 0, 20]  # image 4 loses its object, then its relation and itself
    data["rel_annotations"].append({"id": "r-7", "image_id": 4, "subject_id": "40", "predicate_id": 4, "object_id": 41})
    val.write_text(json.dumps(data))
    run_import("coco-relations", hub_layout, tmp_path / "out")
    listed = {(p["reason"], p["record"]): p for p in problems(tmp_path / "out")}
    image = listed[("image without relations", "image id 4")]
    assert image["file"] == str(val) and image["source"]["note"] == "first"
    assert listed[("duplicate image", "image id 4")]["source"]["note"] == "second"
    assert listed[("zero-size box", "annotation id 41")]["source"]["bbox"] == [5, 5, 0, 20]
    assert listed[("relation to a dropped object", "rel_annotation id 4")]["source"]["object_id"] == 41
    string_end = listed[("relation to a missing object", "rel_annotation id r-7")]
    assert string_end["field"] == "subject" and string_end["source"]["subject_id"] == "40"
