"""Atomic Lightning checkpoints: a kill or a crash mid-write never leaves a truncated `last.ckpt`.

The checkpoint is written by `egtr.fileio.atomic_write`: a temporary file in the target's directory, flushed to disk
(`fsync`), then renamed over the target with `os.replace`, which POSIX and Windows make atomic within one file system.
A reader therefore sees either the previous complete checkpoint or the new complete one. A failed write removes its
temporary file.

`BestAndLastCheckpoint` is the `ModelCheckpoint` of a pass: best checkpoint on the validation loss, and a `last.ckpt`
that always holds the latest epoch-end state (Lightning's own `save_last` lags behind, see the class).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from egtr.fileio import atomic_write, write_bytes_stream

logger = logging.getLogger(__name__)


def atomic_torch_save(payload: object, path: str | Path) -> None:
    """`torch.save(payload, path)` through `egtr.fileio.atomic_write`; a full disk raises `DiskFullError`."""
    atomic_write(path, lambda temporary: write_bytes_stream(temporary, lambda stream: torch.save(payload, stream)))


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose `save_checkpoint` is atomic on local file systems (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint does not take storage_options")
        logger.debug("saving checkpoint %s", path)
        atomic_torch_save(checkpoint, path)


class BestAndLastCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` (monitor, top-k, `save_last=True`) whose `last.ckpt` follows training, not the best score.

    Why: Lightning 2.6 writes `last.ckpt` at an epoch end only together with a top-k file. `on_train_epoch_end` and
    `on_validation_end` call `_save_last_checkpoint` only `if self._last_global_step_saved == trainer.global_step`,
    i.e. if `_save_topk_checkpoint` has just written a file at this step, and with a monitored metric it writes one
    only when the metric improved (`_save_monitor_checkpoint` -> `check_monitor_top_k`). `on_train_end` saves the
    last checkpoint only if nothing was ever saved. So every epoch whose validation loss did not improve (the
    `patience` epochs before early stopping, often the last epochs of a pass, and with `val_every_n_epochs=N` the
    epochs without validation) left `last.ckpt` at the last improvement: a finished pass ended with a stale
    `last.ckpt`, and a killed run resumed from it trained those epochs again.

    This subclass also writes `last.ckpt` where the parent would have checkpointed without an improvement (each
    validated epoch) and at the end of the last epoch of the pass. A step at which this callback already saved is
    not saved twice (`_should_skip_saving_checkpoint`, which also skips sanity checks and `fast_dev_run`).
    """

    @property
    def state_key(self) -> str:
        # The parent's key (class name + settings), so that resuming a run checkpointed by a plain ModelCheckpoint
        # restores the best score and path.
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer) or _is_last_epoch(trainer):
            self._refresh_last_checkpoint(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last_checkpoint(trainer)

    def _refresh_last_checkpoint(self, trainer: pl.Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def _is_last_epoch(trainer: pl.Trainer) -> bool:
    """In `on_train_epoch_end`: whether training stops after this epoch (max_epochs, max_steps, early stopping)."""
    loop = trainer.fit_loop
    epochs = loop.epoch_progress.current.processed  # type: ignore[attr-defined]  # Lightning's stub lacks it
    return (
        trainer.should_stop
        or (loop.max_epochs is not None and 0 <= loop.max_epochs <= epochs)
        or 0 <= loop.max_steps <= trainer.global_step
    )
