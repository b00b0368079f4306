"""`egtr.fileio`: atomic writes keep the umask's permissions, clean up after any failure, and name a full disk."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from pathlib import Path

import pytest
import torch

from egtr import EGTR, EGTRConfig
from egtr.fileio import DiskFullError, atomic_write, read_json, remove_stale_temporaries, write_json
from egtr.training.checkpoint_io import atomic_torch_save

TINY = {"backbone": "resnet18", "d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "num_queries": 4}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_atomic_files_get_the_permissions_of_a_plain_write(tmp_path: Path, umask_022):
    # Before: tempfile.mkstemp's 0600 survived the rename, so other users could not read a trained model.
    (tmp_path / "plain").write_text("x")
    expected = _mode(tmp_path / "plain")
    assert expected == 0o644
    EGTR(EGTRConfig(**TINY)).save_pretrained(tmp_path / "model")
    atomic_torch_save({"a": torch.ones(2)}, tmp_path / "last.ckpt")
    write_json(tmp_path / "summary.json", {"a": 1})
    for path in [*(tmp_path / "model").iterdir(), tmp_path / "last.ckpt", tmp_path / "summary.json"]:
        assert _mode(path) == expected, path

    os.umask(0o077)
    write_json(tmp_path / "private.json", {"a": 1})
    assert _mode(tmp_path / "private.json") == 0o600  # the umask is respected, not widened
    os.chmod(tmp_path / "summary.json", 0o640)
    write_json(tmp_path / "summary.json", {"a": 2})
    assert _mode(tmp_path / "summary.json") == 0o640  # a replaced file keeps its mode, as with open("w")


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path):
    target = write_json(tmp_path / "config.json", {"version": 1})

    def fail(temporary: Path) -> None:
        temporary.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, fail)
    assert read_json(target) == {"version": 1}
    assert os.listdir(tmp_path) == ["config.json"]


def test_full_disk_is_one_error_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    atomic_torch_save({"step": 1}, tmp_path / "last.ckpt")
    import egtr.fileio as fileio

    monkeypatch.setattr(fileio, "_ErrorRecordingStream", _recording_full_disk(fileio._ErrorRecordingStream))
    with pytest.raises(DiskFullError, match=r"no space left on the device writing .*last\.ckpt"):
        atomic_torch_save({"step": 2, "weights": torch.zeros(10_000)}, tmp_path / "last.ckpt")
    assert torch.load(tmp_path / "last.ckpt", weights_only=True) == {"step": 1}
    assert os.listdir(tmp_path) == ["last.ckpt"]


def _recording_full_disk(recorder_class):
    """The recording stream of `write_bytes_stream` over a device that is full (torch then says "unexpected pos")."""

    class FullDiskRecorder(recorder_class):
        def write(self, data):
            self.error = OSError(errno.ENOSPC, "No space left on device")
            raise self.error

    return FullDiskRecorder


def test_full_tmpfs_gives_disk_full_for_checkpoints_and_models(tmp_path: Path):
    """The real thing where the test runs as root: a 1 MiB tmpfs (skipped elsewhere)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True
        ).returncode
    ):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        atomic_torch_save({"step": 1}, mount_point / "last.ckpt")
        with pytest.raises(DiskFullError, match=r"last\.ckpt"):
            atomic_torch_save({"step": 2, "weights": torch.zeros(1_000_000)}, mount_point / "last.ckpt")
        with pytest.raises(DiskFullError, match=r"model\.safetensors"):
            EGTR(EGTRConfig(**TINY)).save_pretrained(mount_point / "model")
        assert torch.load(mount_point / "last.ckpt", weights_only=True) == {"step": 1}
        assert sorted(os.listdir(mount_point)) == ["last.ckpt", "model"]
        assert os.listdir(mount_point / "model") == []
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_stale_temporaries_are_only_ours(tmp_path: Path):
    (tmp_path / ".last.ckpt.abc123.tmp").write_bytes(b"partial")
    (tmp_path / "notes.tmp").write_bytes(b"not ours")
    assert remove_stale_temporaries(tmp_path) == 1
    assert os.listdir(tmp_path) == ["notes.tmp"]


def test_read_json_names_the_file(tmp_path: Path):
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=r"bad\.json: malformed JSON at line 1"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(ValueError, match=r"absent\.json: file not found"):
        read_json(tmp_path / "absent.json")
