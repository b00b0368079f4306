"""Distributed for real: 2 CPU processes of DDP (gloo) train a few steps and end with identical weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.slow
def test_two_process_ddp_replicas_end_identical(synthetic_root: Path, tmp_path: Path):
    environment = {key: value for key, value in os.environ.items() if key not in ("LOCAL_RANK", "RANK", "WORLD_SIZE")}
    completed = subprocess.run(
        [sys.executable, str(WORKER), str(synthetic_root), str(tmp_path)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["global_step"] == rank1["global_step"] == 3
    # Each rank trained on its own shard of the data (DistributedSampler) ...
    assert len(rank0["image_ids"]) == len(rank1["image_ids"]) == 6
    assert rank0["image_ids"] != rank1["image_ids"]
    # ... and the gradient all-reduce kept the replicas identical, and they did move.
    changed = 0
    for key, value in rank0["state_dict"].items():
        assert torch.equal(value, rank1["state_dict"][key]), key
        changed += not torch.equal(value, rank0["initial"][key])
    assert changed > 10
