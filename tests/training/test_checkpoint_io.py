"""Atomic checkpoint writes: a failure mid-write leaves the previous checkpoint intact and no temporary file."""

from __future__ import annotations

import pytest
import torch

from egtr.training import AtomicCheckpointIO, checkpoint_io


def test_save_and_load_round_trip(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 3, "weights": torch.arange(4.0)}, path)
    loaded = io.load_checkpoint(path)
    assert loaded["global_step"] == 3 and torch.equal(loaded["weights"], torch.arange(4.0))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_failure_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "weights": torch.ones(1000)}, path)

    real_save = torch.save

    def save_half_then_die(payload, stream):
        # Write a real prefix of the new checkpoint, then fail as a kill or a full disk would.
        real_save(payload, stream)
        stream.truncate(stream.tell() // 2)
        raise OSError("simulated crash in the middle of the write")

    monkeypatch.setattr(checkpoint_io.torch, "save", save_half_then_die)
    with pytest.raises(OSError, match="simulated crash"):
        io.save_checkpoint({"global_step": 2, "weights": torch.zeros(1000)}, path)
    monkeypatch.setattr(checkpoint_io.torch, "save", real_save)

    loaded = io.load_checkpoint(path)  # still the complete previous checkpoint
    assert loaded["global_step"] == 1 and torch.equal(loaded["weights"], torch.ones(1000))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_storage_options_are_rejected(tmp_path):
    with pytest.raises(TypeError):
        AtomicCheckpointIO().save_checkpoint({}, tmp_path / "x.ckpt", storage_options={"a": 1})


def test_stale_temporaries_of_a_killed_write_are_removed(tmp_path):
    from egtr.fileio import remove_stale_temporaries

    (tmp_path / ".last.ckpt.abc123.tmp").write_bytes(b"partial")
    (tmp_path / "last.ckpt").write_bytes(b"complete")
    (tmp_path / "notes.tmp").write_bytes(b"not ours")  # not a name atomic_torch_save makes
    assert remove_stale_temporaries(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "notes.tmp"]
