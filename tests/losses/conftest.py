"""Reference fixtures of the loss tests: the original code's outputs, targets, matching and losses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "reference"


@pytest.fixture(scope="session")
def reference_outputs() -> dict[str, torch.Tensor]:
    """The criterion inputs of `losses.json`: the four arrays of outputs.npz under the model's field names."""
    arrays = np.load(REFERENCE_DIR / "outputs.npz")
    return {
        "logits": torch.from_numpy(arrays["logits"]),
        "pred_boxes": torch.from_numpy(arrays["pred_boxes"]),
        "rel_logits": torch.from_numpy(arrays["pred_rel_logits"]),
        "connectivity_logits": torch.from_numpy(arrays["pred_connectivity_logits"]),
    }


@pytest.fixture(scope="session")
def reference_targets() -> list[dict[str, torch.Tensor]]:
    """targets.npz as the data loader's target dicts (`relations` = the (M, 3) triplets)."""
    arrays = np.load(REFERENCE_DIR / "targets.npz")
    return [
        {
            "boxes": torch.from_numpy(arrays[f"boxes_{image}"]),
            "class_labels": torch.from_numpy(arrays[f"class_labels_{image}"]),
            "relations": torch.from_numpy(arrays[f"rel_triplets_{image}"]),
        }
        for image in range(int(arrays["batch_size"]))
    ]


@pytest.fixture(scope="session")
def reference_matching() -> dict[str, np.ndarray]:
    arrays = np.load(REFERENCE_DIR / "matching.npz")
    return {name: arrays[name] for name in arrays.files}


@pytest.fixture(scope="session")
def reference_losses() -> dict:
    return json.loads((REFERENCE_DIR / "losses.json").read_text())
