"""OI V6 (SGTR layout) loading: +1 box convention, training filters, per-load predicate sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from egtr.data import DataConfig, OpenImagesDataset, build_dataset, count_triplets

from .conftest import photo, write_oi

OI_CLASSES = ["person", "cup", "cat", "table", "chair"]
OI_PREDICATES = ["holds", "on", "near", "wears"]


@pytest.fixture()
def oi_root(tmp_path: Path) -> Path:
    generated = Image.fromarray(np.zeros((50, 80, 3), dtype=np.uint8))
    splits = {
        "train": [
            {
                "img_fn": "coffee",
                "image": photo("coffee"),
                "bbox": [[100, 50, 399, 329], [0, 300, 599, 399]],
                "det_labels": [1, 3],
                # duplicate (0, 1, 1) and two predicates for the pair (0, 1)
                "rel": [[0, 1, 1], [0, 1, 2], [0, 1, 1], [1, 0, 2]],
            },
            {
                "img_fn": "crowded",
                "image": generated,
                "bbox": [[0, 0, 9, 9]] * 4,
                "det_labels": [0, 1, 2, 3],
                "rel": [[0, 1, 0]],
            },
            {
                "img_fn": "chelsea",
                "image": photo("chelsea"),
                "bbox": [[50, 20, 349, 279], [440, 250, 460, 310]],
                "det_labels": [2, 4],
                "rel": [[0, 1, 2], [0, 1, 2]],
            },
        ],
        "val": [
            {
                "img_fn": "astronaut",
                "image": photo("astronaut"),
                "bbox": [[120, 30, 369, 509], [20, 20, 10, 60]],
                "det_labels": [0, 1],
                "rel": [[0, 1, 3], [1, 0, 0], [0, 1, 0]],
            },
        ],
        "test": [{"img_fn": "generated", "image": generated, "bbox": [[5, 5, 20, 20]], "det_labels": [4], "rel": []}],
    }
    return write_oi(tmp_path / "oi", splits, OI_CLASSES, OI_PREDICATES)


def _config(root: Path, **overrides) -> DataConfig:
    # Small sizes keep the test fast; targets are normalised, so the expected values do not depend on them.
    sizes = {"train_sizes": (64,), "train_intermediate_prob": 0.0, "eval_size": 200, "eval_max_size": 400}
    return DataConfig(kind="oi", root=str(root), **{**sizes, **overrides})


NUM_QUERIES = 3  # the model's query count: Open Images training drops images with more boxes


def test_train_filters(oi_root: Path) -> None:
    dataset = build_dataset(_config(oi_root), "train", train=False, num_queries=NUM_QUERIES)
    assert isinstance(dataset, OpenImagesDataset)
    assert dataset.class_names == OI_CLASSES and dataset.predicate_names == OI_PREDICATES
    # "crowded" has 4 > num_queries boxes and is dropped; ids are positions in the file.
    assert [annotation.image_id for annotation in dataset.annotations] == [0, 2]
    # duplicate triplets removed, first-occurrence order kept
    assert dataset.annotations[0].relations.tolist() == [[0, 1, 1], [0, 1, 2], [1, 0, 2]]
    assert dataset.annotations[1].relations.tolist() == [[0, 1, 2]]


def test_plus_one_boxes_and_clipping(oi_root: Path) -> None:
    dataset = build_dataset(_config(oi_root), "train", train=False, num_queries=NUM_QUERIES)
    _, target = dataset[1]  # chelsea 451 x 300; box 1 [440, 250, 460, 310] -> [440, 250, 461, 311] -> clipped
    assert target["orig_size"].tolist() == [300, 451]
    expected = torch.tensor(
        [[200 / 451, 150 / 300, 300 / 451, 260 / 300], [445.5 / 451, 275 / 300, 11 / 451, 50 / 300]]
    )
    torch.testing.assert_close(target["boxes"], expected, atol=1e-6, rtol=0)
    assert target["class_labels"].tolist() == [2, 4]
    assert target["relations"].tolist() == [[0, 1, 2]]


def test_one_random_predicate_per_pair_each_load(oi_root: Path) -> None:
    dataset = build_dataset(_config(oi_root), "train", train=True, num_queries=NUM_QUERIES)
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        relations = dataset[0][1]["relations"].tolist()
        pairs = [(subject, obj) for subject, obj, _ in relations]
        assert len(pairs) == len(set(pairs)) == 2  # one predicate for (0, 1) and one for (1, 0)
        assert [1, 0, 2] in relations
        seen.add(next(predicate for subject, obj, predicate in relations if (subject, obj) == (0, 1)))
    assert seen == {1, 2}  # both predicates of the pair are drawn across loads


def test_eval_split_is_not_filtered(oi_root: Path) -> None:
    dataset = build_dataset(_config(oi_root), "val", train=False, num_queries=NUM_QUERIES)
    assert not dataset.sample_one_predicate
    _, target = dataset[0]  # astronaut; box 1 [20, 20, 10, 60] has x2 < x1 -> empty, dropped with relation (1,0,0)
    assert target["class_labels"].tolist() == [0]
    assert target["relations"].tolist() == []
    no_plus_one = build_dataset(_config(oi_root, oi_box_plus_one=False), "val", train=False, num_queries=NUM_QUERIES)
    _, target = no_plus_one[0]
    torch.testing.assert_close(target["boxes"][0] * 512, torch.tensor([244.5, 269.5, 249.0, 479.0]), atol=1e-3, rtol=0)


def test_statistics_use_filtered_train_targets(oi_root: Path) -> None:
    dataset = build_dataset(_config(oi_root), "train", train=True, num_queries=NUM_QUERIES)
    counts = count_triplets(dataset, dataset.num_labels, dataset.num_rel_labels)
    assert counts.shape == (6, 6, 4) and counts.dtype == torch.int64
    expected = torch.zeros(6, 6, 4, dtype=torch.int64)
    expected[1, 3, 1] = 1  # cup-holds... (labels 1 -> 3, predicate 1)
    expected[1, 3, 2] = 1
    expected[3, 1, 2] = 1
    expected[2, 4, 2] = 1  # chelsea's duplicate counted once
    assert torch.equal(counts, expected)
