"""The class / predicate name lists shipped in `egtr.names`."""

import json
from importlib import resources

import pytest

from egtr.names import guess_names, load_names


@pytest.mark.parametrize("alias", ["visual_genome", "vg150", "VG150"])
def test_visual_genome(alias):
    objects, predicates = load_names(alias)
    assert len(objects) == 150 and len(predicates) == 50
    assert objects[0] == "airplane" and objects[-1] == "zebra"
    assert objects == sorted(objects)  # Neural-Motifs order is alphabetical
    assert predicates[0] == "above" and predicates[-1] == "with"
    assert predicates[19] == "has" and predicates[30] == "on" and predicates[47] == "wearing"


@pytest.mark.parametrize("alias", ["open_images_v6", "oiv6"])
def test_open_images_v6(alias):
    objects, predicates = load_names(alias)
    assert len(objects) == 601 and len(predicates) == 30
    assert objects[0] == "Tortoise" and objects[-1] == "Helmet"
    assert objects[18] == "Beer" and objects[285] == "Bottle"
    assert predicates[0] == "at" and predicates[-1] == "read"
    assert predicates[16] == "contain" and "is" not in predicates


@pytest.mark.parametrize("dataset", ["visual_genome", "open_images_v6"])
def test_no_duplicates_and_clean_strings(dataset):
    objects, predicates = load_names(dataset)
    for names in (objects, predicates):
        assert len(set(names)) == len(names)
        assert all(isinstance(n, str) and n and n == n.strip() for n in names)


def test_returns_fresh_lists():
    objects, _ = load_names("vg150")
    objects[0] = "changed"
    assert load_names("vg150")[0][0] == "airplane"


def test_open_images_records_its_source():
    text = resources.files("egtr.names").joinpath("open_images_v6.json").read_text(encoding="utf-8")
    data = json.loads(text)
    assert data["source"]


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_names("coco")


def test_guess_names():
    assert guess_names(150, 50) == load_names("visual_genome")
    assert guess_names(601, 30) == load_names("open_images_v6")
    assert guess_names(150, 30) is None
    assert guess_names(91, 50) is None
