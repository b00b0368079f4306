"""Triplet counts, the frequency-bias tables (quirk Q1 and the intended formula) and the cache."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from egtr.data import (
    VisualGenomeDataset,
    count_triplets,
    frequency_bias_tables,
    load_or_compute_triplet_counts,
    statistics,
)


def test_count_triplets_from_vg_dataset(vg_root: Path) -> None:
    dataset = VisualGenomeDataset(vg_root, "train")
    counts = count_triplets(dataset, dataset.num_labels, dataset.num_rel_labels)
    assert counts.shape == (5, 5, 3) and counts.dtype == torch.int64
    expected = torch.zeros(5, 5, 3, dtype=torch.int64)
    # chelsea (image 3) raw annotations: labels [cat, cup, table, cup] = [2, 1, 3, 1]; all 5 relations count
    # (the original counts the raw annotations, before degenerate boxes are dropped)
    expected[2, 3, 1] += 1  # [0, 2, 2]
    expected[1, 2, 2] += 1  # [1, 0, 3]
    expected[3, 2, 2] += 1  # [2, 0, 3]
    expected[2, 1, 2] += 1  # [0, 3, 3]
    expected[2, 3, 2] += 1  # [0, 2, 3]
    expected[1, 3, 1] += 1  # coffee (image 7): cup -> table, predicate 2
    assert torch.equal(counts, expected)
    assert counts[4].sum() == 0 and counts[:, 4].sum() == 0  # the extra row/column stays zero


def test_count_triplets_from_target_dicts() -> None:
    targets = [
        {"class_labels": torch.tensor([0, 1]), "relations": torch.tensor([[0, 1, 1], [1, 0, 0], [0, 1, 1]])},
        {"class_labels": torch.tensor([1]), "relations": torch.zeros(0, 3, dtype=torch.int64)},
    ]
    counts = count_triplets(targets, num_labels=2, num_rel_labels=2)
    assert counts[0, 1, 1] == 2 and counts[1, 0, 0] == 1 and counts.sum() == 3


def test_frequency_bias_tables_original_formula() -> None:
    counts = np.zeros((3, 3, 2), dtype=np.int64)
    counts[0, 1] = [3, 0]
    counts[1, 1] = [2, 6]
    triplet_dist, rel_dist = frequency_bias_tables(torch.from_numpy(counts))
    assert triplet_dist.dtype == torch.float32 and triplet_dist.shape == (3, 3, 2)
    assert triplet_dist[0, 1, 0].item() == pytest.approx(math.log(3), abs=1e-6)  # ~ log(count)
    assert triplet_dist[0, 1, 1].item() == pytest.approx(math.log(1e-12 / 3), rel=1e-5)  # ~ -28.7
    assert triplet_dist[1, 1, 1].item() == pytest.approx(math.log(6), abs=1e-6)
    assert (triplet_dist[2] == 0).all() and triplet_dist[0, 0, 0] == 0  # unseen class pair: log(1) = 0
    torch.testing.assert_close(rel_dist, torch.tensor([5 / 11, 6 / 11]))
    # bit-for-bit the original recipe: float64 numpy, cast to float32, log in float32
    original = torch.FloatTensor(counts + 1e-12 / (counts.sum(2, keepdims=True) + 1e-12)).log()
    assert torch.equal(triplet_dist, original)


def test_frequency_bias_tables_intended_formula() -> None:
    counts = np.zeros((2, 2, 2), dtype=np.int64)
    counts[0, 1] = [3, 1]
    triplet_dist, _ = frequency_bias_tables(counts, intended=True)
    assert triplet_dist[0, 1, 0].item() == pytest.approx(math.log(3 / 4), abs=1e-6)  # log-probability
    assert triplet_dist[0, 1, 1].item() == pytest.approx(math.log(1 / 4), abs=1e-6)
    assert triplet_dist[0, 0, 0].item() == pytest.approx(0.0, abs=1e-6)  # log(eps / eps)


def test_counts_are_cached_next_to_the_dataset(vg_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = VisualGenomeDataset(vg_root, "train")
    counts = load_or_compute_triplet_counts(dataset)
    assert (vg_root / "egtr_cache" / "vg_train_triplet_counts.npz").is_file()

    def fail(*args, **kwargs):
        raise AssertionError("recomputed although the cache is valid")

    monkeypatch.setattr(statistics, "count_triplets", fail)
    assert torch.equal(load_or_compute_triplet_counts(dataset), counts)
    # editing the annotations invalidates the cache
    rel_file = vg_root / "rel.json"
    rel_file.write_text(rel_file.read_text().replace('"7": [[0, 1, 2]]', '"7": [[0, 1, 3]]'))
    monkeypatch.undo()
    changed = load_or_compute_triplet_counts(VisualGenomeDataset(vg_root, "train"))
    assert changed[1, 3, 2] == 1 and changed[1, 3, 1] == 0
