"""Atomic Lightning checkpoints: a kill or a crash mid-write never leaves a truncated `last.ckpt`.

The checkpoint is written to a temporary file in the target's directory, flushed to disk (`fsync`), then renamed over
the target with `os.replace`, which POSIX and Windows make atomic within one file system. A reader therefore sees
either the previous complete checkpoint or the new complete one. A failed write removes its temporary file.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

logger = logging.getLogger(__name__)


def atomic_torch_save(payload: Any, path: str | Path) -> None:
    """`torch.save(payload, path)` through a same-directory temporary file + fsync + `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        # Includes KeyboardInterrupt: the partial temporary file must not stay behind.
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    _fsync_directory(path.parent)


def remove_stale_temporaries(directory: str | Path) -> int:
    """Delete the temporary files of writes that a killed process (SIGKILL) could not clean up; returns how many.

    Only names `atomic_torch_save` creates (`.<target>.<random>.tmp`) are touched. Call it before resuming, when no
    other process writes to `directory`.
    """
    removed = 0
    for temporary in Path(directory).glob(".*.tmp"):
        temporary.unlink(missing_ok=True)
        removed += 1
    if removed:
        logger.warning("removed %d unfinished checkpoint file(s) left by an interrupted run in %s", removed, directory)
    return removed


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose `save_checkpoint` is atomic on local file systems (see the module docstring)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint does not take storage_options")
        logger.debug("saving checkpoint %s", path)
        atomic_torch_save(checkpoint, path)
