"""`validate_dataset` / `egtr data validate` find every planted fault, with file, record and field."""

from __future__ import annotations

import io
import json
from pathlib import Path

from egtr.cli import main
from egtr.data.validate import Problem, validate_dataset

from .conftest import VG_CLASSES, VG_PREDICATES, photo, vg_specs, write_oi, write_vg


def _faulty_vg(root: Path) -> Path:
    specs = vg_specs()
    specs["train"] += [
        {
            "id": 20,
            "file_name": "missing.jpg",
            "image": None,
            "width": 100,
            "height": 100,
            "objects": [(1, [0.0, 0.0, 10.0, 10.0])],
        },
        {
            "id": 21,
            "file_name": "truncated.jpg",
            "image": None,
            "width": 451,
            "height": 300,
            "objects": [(1, [0.0, 0.0, 10.0, 10.0])],
        },
        {"id": 22, "file_name": "garbage.jpg", "image": None, "objects": []},
    ]
    specs["val"][0]["width"] = 500  # astronaut is 512 wide
    specs["val"].append(
        {"id": 3, "file_name": "chelsea.jpg", "image": None, "width": 451, "height": 300, "objects": []}
    )  # image 3 is also in train
    write_vg(root, specs, VG_CLASSES, VG_PREDICATES)
    buffer = io.BytesIO()
    photo("chelsea").save(buffer, format="JPEG")
    (root / "images" / "truncated.jpg").write_bytes(buffer.getvalue()[:5000])
    (root / "images" / "garbage.jpg").write_text("not a jpeg")
    coco = json.loads((root / "train.json").read_text())
    coco["annotations"][0]["category_id"] = 9  # image 7, object 0
    coco["annotations"][1]["id"] = coco["annotations"][0]["id"]  # duplicate annotation id
    coco["images"].append(dict(coco["images"][0]))  # duplicate image id 7
    (root / "train.json").write_text(json.dumps(coco))
    rel = json.loads((root / "rel.json").read_text())
    rel["train"]["7"] += [[0, 5, 1], [1, 0, 4], [1, 0, 0], [0, 1, 2]]  # index, predicate, predicate, duplicate
    rel["train"]["999"] = [[0, 0, 1]]
    (root / "rel.json").write_text(json.dumps(rel))
    (root / "test.json").write_text('{"images": [}')
    return root


def _find(problems: list[Problem], severity: str, file_end: str, record_part: str, message_part: str) -> Problem:
    matches = [
        p
        for p in problems
        if p.severity == severity
        and p.file.endswith(file_end)
        and record_part in p.record
        and message_part in p.message
    ]
    assert matches, f"no {severity} in {file_end} / {record_part!r} / {message_part!r}:\n" + "\n".join(
        map(str, problems)
    )
    return matches[0]


def test_every_planted_vg_fault_is_reported(tmp_path: Path) -> None:
    problems = validate_dataset(_faulty_vg(tmp_path / "vg"), "vg")
    _find(problems, "error", "missing.jpg", "image 20", "image file not found")
    _find(problems, "error", "truncated.jpg", "image 21", "corrupt or truncated")
    _find(problems, "error", "garbage.jpg", "image 22", "not a readable image")
    _find(problems, "error", "train.json", "image 7, object 0", "9 outside 1..4")
    # Before: only the second occurrence was named.
    _find(problems, "error", "train.json", "annotations[1]", "duplicate annotation id 1 (also annotations[0])")
    _find(problems, "error", "train.json", "image 7", "duplicate image id")
    _find(problems, "error", "rel.json", "train['7'], relation 1", "object index 5 outside 0..1")
    _find(problems, "error", "rel.json", "train['7'], relation 2", "predicate 4 outside 1..3")
    _find(problems, "error", "rel.json", "train['7'], relation 3", "predicate 0 outside 1..3")
    _find(problems, "warning", "rel.json", "train['7'], relation 4", "duplicate triplet")
    _find(problems, "error", "rel.json", "train['999']", "not in the split")
    _find(problems, "error", "val.json", "image 3", "also in split 'train'")
    _find(problems, "error", "astronaut.jpg", "image 11", "annotation says 500x512, image is 512x512")
    _find(problems, "warning", "train.json", "image 3, object 1", "empty box")
    _find(problems, "warning", "train.json", "image 3, object 2", "outside the 451x300 image")
    _find(problems, "error", "test.json", "", "malformed JSON at line 1")
    empty = _find(
        problems,
        "warning",
        "train.json",
        "image 3, object 3",
        "lies outside the 451x300 image: the loader drops it and its 1 relation(s)",
    )
    assert "field bbox" in str(empty)


def test_clean_dataset_has_only_the_documented_warnings(vg_root: Path) -> None:
    problems = validate_dataset(vg_root, "vg")
    assert {p.severity for p in problems} == {"warning"}
    assert len(problems) == 3  # chelsea: one empty box, two boxes that extend outside


def test_every_planted_oi_fault_is_reported(tmp_path: Path) -> None:
    coffee = photo("coffee")
    splits = {
        "train": [
            {
                "img_fn": "coffee",
                "image": coffee,
                "bbox": [[10, 10, 50, 50], [0, 0, 700, 20]],
                "det_labels": [0, 7],
                "rel": [[0, 2, 0], [0, 1, 3]],
            },
            {"img_fn": "absent", "image": None, "bbox": [[1, 1, 5, 5]], "det_labels": [0, 1], "rel": []},
            {"img_fn": "coffee", "image": None, "bbox": [], "det_labels": [], "rel": []},
        ],
        "val": [{"img_fn": "coffee", "image": None, "bbox": [], "det_labels": [], "rel": []}],
        "test": [],
    }
    root = write_oi(tmp_path / "oi", splits, ["a", "b", "c"], ["p", "q", "r"])
    problems = validate_dataset(root, "oi")
    _find(problems, "error", "vrd-train-anno.json", "record 0 (coffee), object 1", "7 outside 0..2")
    _find(problems, "error", "vrd-train-anno.json", "record 0 (coffee), relation 0", "object index 2 outside 0..1")
    _find(problems, "error", "vrd-train-anno.json", "record 0 (coffee), relation 1", "predicate 3 outside 0..2")
    _find(problems, "warning", "vrd-train-anno.json", "record 0 (coffee), object 1", "outside the 600x400 image")
    _find(problems, "error", "vrd-train-anno.json", "record 1 (absent)", "same length")
    _find(problems, "error", "absent.jpg", "record 1", "image file not found")
    _find(problems, "error", "vrd-train-anno.json", "record 2 (coffee)", "duplicate image")
    _find(problems, "error", "vrd-val-anno.json", "record 0 (coffee)", "also in split 'train'")
    _find(problems, "error", "vrd-test-anno.json", "", "non-empty list")


def test_cli_validate_exit_codes(tmp_path: Path, vg_root: Path, capsys) -> None:
    assert main(["data", "validate", str(_faulty_vg(tmp_path / "bad"))]) == 1
    output = capsys.readouterr().out
    assert "ERROR:" in output and "missing.jpg" in output and "error(s)" in output
    assert main(["data", "validate", str(vg_root), "--no-decode"]) == 0
    assert main(["data", "validate", str(vg_root), "--strict"]) == 1
