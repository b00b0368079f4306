"""Shared test fixtures: paths to the reference data produced by the original EGTR code."""

from pathlib import Path

import numpy as np
import pytest
import torch

REFERENCE = Path(__file__).parent / "fixtures" / "reference"


@pytest.fixture(autouse=True, scope="session")
def _two_threads():
    # The reference outputs were produced with 2 intra-op threads; CI machines have 2 cores.
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return REFERENCE


@pytest.fixture(scope="session")
def reference_outputs() -> dict[str, np.ndarray]:
    return dict(np.load(REFERENCE / "outputs.npz"))


@pytest.fixture(scope="session")
def reference_inputs() -> dict[str, np.ndarray]:
    return dict(np.load(REFERENCE / "inputs.npz"))
