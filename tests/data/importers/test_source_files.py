"""What every importer says about a file of the wrong kind, and the permissions of the dataset it writes."""

from __future__ import annotations

import os
import stat

import pytest
from tests.data.importers.helpers import image_file, run_import, write_json
from tests.data.importers.test_coco_relations import coco_split

from egtr.errors import DataError


@pytest.mark.parametrize("format_name", ["coco-relations", "label-studio", "psg", "gqa"])
def test_a_csv_file_is_called_not_json(tmp_path, format_name):
    # Before: "malformed JSON at line 1 column 1" (coco-relations) or "expected ... (a list of tasks)": never that
    # the file is no JSON at all.
    path = tmp_path / "export.json"
    path.write_text("image,label,x,y,width,height\none.jpg,man,1,2,3,4\n")
    with pytest.raises(DataError, match=r"export.json: not JSON \(it looks like CSV\): it begins with 'image,label"):
        run_import(format_name, path, tmp_path / "out")


def test_a_file_of_one_json_number_is_named_as_such(tmp_path):
    path = tmp_path / "export.json"
    path.write_text("42\n")
    with pytest.raises(DataError, match="JSON of a single int, not a list or an object"):
        run_import("label-studio", path, tmp_path / "out")


def test_a_coco_file_imported_as_gqa_is_called_not_gqa(tmp_path):
    # Before: "no class or predicate is used 1 times or more".
    path = write_json(tmp_path / "train_sceneGraphs.json", coco_split([1, 2, 3]))
    with pytest.raises(DataError, match=r"this is not a GQA scene-graph file.*import it as coco-relations"):
        run_import("gqa", path, tmp_path / "out")


def test_the_dataset_folder_has_the_mode_of_the_umask(tmp_path):
    # Before: 0700 whatever the umask (the temporary folder's mode survived the rename): unreadable for others.
    path = write_json(tmp_path / "src.json", coco_split([1, 2, 3]))
    for image_id in (1, 2, 3):
        image_file(tmp_path / f"{image_id}.jpg")
    previous = os.umask(0o022)
    try:
        run_import("coco-relations", path, tmp_path / "out")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out" / "images").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out" / "train.json").stat().st_mode) == 0o644
