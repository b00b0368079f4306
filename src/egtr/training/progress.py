"""Progress that tells the truth without a terminal (CI logs, `make demo > log`, a scheduler's output file).

Lightning's progress bar redraws one line with carriage returns: in a file it is noise, so egtr turns it off when
stderr is not a terminal. `ProgressLines` then logs one line per epoch instead: the pass, the epoch, the optimiser
steps done of the pass's total, the last training loss, the validation loss, the time so far and an estimate of the
time left (time per step so far x steps left; the first epoch's estimate includes start-up costs).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

__all__ = ["ProgressLines", "format_duration"]

logger = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    """'1h02m', '3m07s', '12s'."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class ProgressLines(Callback):
    """One log line per training epoch (rank 0 only), for runs without a progress bar."""

    def __init__(self, pass_name: str) -> None:
        self.pass_name = pass_name
        self._started = 0.0
        self._first_step = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.monotonic()
        self._first_step = trainer.global_step  # a resumed pass starts part-way

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            logger.info("%s", self.line(trainer))

    def line(self, trainer: pl.Trainer) -> str:
        elapsed = time.monotonic() - self._started
        done, total = trainer.global_step, _total_steps(trainer)
        parts = [f"{self.pass_name} epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        parts.append(f"step {done}/{total}" if total else f"step {done}")
        for name in ("train_loss", "validation_loss"):
            value = _metric(trainer.callback_metrics, name)
            if value is not None:
                parts.append(f"{name} {value:.4f}")
        timing = f"{format_duration(elapsed)} elapsed"
        if total and done > self._first_step:
            timing += f", about {format_duration(elapsed / (done - self._first_step) * (total - done))} left"
        return ", ".join([*parts, timing])


def _total_steps(trainer: pl.Trainer) -> int | None:
    total = trainer.estimated_stepping_batches  # optimiser steps of all epochs (inf when it cannot be known)
    return int(total) if math.isfinite(total) else None


def _metric(metrics: dict[str, Any], name: str) -> float | None:
    value = metrics.get(name)
    return None if value is None else float(value)
