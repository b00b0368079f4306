"""The synthetic scene world: deterministic, valid, loaded by the VG code path, relations visible in the pixels."""

from __future__ import annotations

import json
from itertools import permutations
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from egtr.box_ops import box_cxcywh_to_xyxy
from egtr.data import DataConfig, VisualGenomeDataset, build_dataset, collate_fn
from egtr.data.synthetic import (
    CLASS_COLOURS,
    CLASS_NAMES,
    PREDICATE_NAMES,
    SceneObject,
    _pair_is_clear,
    generate_synthetic_dataset,
    relation_between,
)
from egtr.data.validate import validate_dataset

IMAGE_SIZE = 128


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("world"), 40, 6, 6, image_size=IMAGE_SIZE, seed=5)


def _objects(dataset: VisualGenomeDataset, index: int) -> list[SceneObject]:
    annotation = dataset.annotations[index]
    return [
        SceneObject(CLASS_NAMES[label], int(x), int(y), int(x + w), int(y + h))
        for (x, y, w, h), label in zip(annotation.boxes_xywh, annotation.labels)
    ]


def test_world_is_valid(world: Path) -> None:
    assert validate_dataset(world, "vg") == []
    meta = json.loads((world / "synthetic.json").read_text())
    assert meta["seed"] == 5 and meta["image_size"] == IMAGE_SIZE


def test_loaded_by_the_vg_code_path(world: Path) -> None:
    dataset = build_dataset(DataConfig.for_synthetic(str(world), IMAGE_SIZE), "train", train=False)
    assert isinstance(dataset, VisualGenomeDataset)
    assert dataset.class_names == list(CLASS_NAMES) and dataset.predicate_names == list(PREDICATE_NAMES)
    batch = collate_fn([dataset[index] for index in range(4)])
    assert batch["pixel_values"].shape == (4, 3, IMAGE_SIZE, IMAGE_SIZE)
    for index, target in enumerate(batch["labels"]):
        annotation = dataset.annotations[index]
        assert 2 <= len(target["class_labels"]) <= 6
        pixels = box_cxcywh_to_xyxy(target["boxes"]) * IMAGE_SIZE
        expected = torch.as_tensor(annotation.boxes_xywh, dtype=torch.float32)
        expected[:, 2:] += expected[:, :2]
        torch.testing.assert_close(pixels, expected, atol=1e-4, rtol=0)


def test_relations_follow_the_geometry(world: Path) -> None:
    dataset = VisualGenomeDataset(world, "train")
    margin = json.loads((world / "synthetic.json").read_text())["margin"]
    predicates_seen = set()
    for index in range(len(dataset)):
        objects = _objects(dataset, index)
        expected = sorted(
            (s, o, relation_between(objects[s], objects[o], margin))
            for s, o in permutations(range(len(objects)), 2)
            if relation_between(objects[s], objects[o], margin) is not None
        )
        assert sorted(map(tuple, dataset.annotations[index].relations.tolist())) == expected
        assert all(_pair_is_clear(a, b, margin) for a, b in permutations(objects, 2))  # no borderline pair
        predicates_seen.update(p for _, _, p in expected)
    assert len(predicates_seen) >= 5  # nearly every predicate occurs in 40 images


def test_objects_are_visible_in_the_pixels(world: Path) -> None:
    dataset = VisualGenomeDataset(world, "val")
    for index in range(len(dataset)):
        pixels = np.asarray(Image.open(dataset.image_path(index)).convert("RGB")).astype(int)
        for obj in _objects(dataset, index):
            if obj.kind in ("ring", "frame"):
                continue  # hollow: the centre shows what is behind
            centre = pixels[(obj.y1 + obj.y2) // 2, (obj.x1 + obj.x2) // 2]
            assert np.abs(centre - np.asarray(CLASS_COLOURS[obj.kind])).max() <= 12, obj


def test_generation_is_deterministic(world: Path, tmp_path: Path) -> None:
    again = generate_synthetic_dataset(tmp_path / "again", 40, 6, 6, image_size=IMAGE_SIZE, seed=5)
    other = generate_synthetic_dataset(tmp_path / "other", 40, 6, 6, image_size=IMAGE_SIZE, seed=6)
    for name in ("train.json", "val.json", "test.json", "rel.json"):
        assert (again / name).read_text() == (world / name).read_text()
    first = np.asarray(Image.open(world / "images" / "000001.png"))
    assert np.array_equal(first, np.asarray(Image.open(again / "images" / "000001.png")))
    assert (other / "train.json").read_text() != (world / "train.json").read_text()


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image_size"):
        generate_synthetic_dataset(tmp_path, 1, 1, 1, image_size=32)
    with pytest.raises(ValueError, match="at least one image"):
        generate_synthetic_dataset(tmp_path, 1, 0, 1)
