"""Progress of one rank on a long run: a tqdm bar (images/s, ETA) on a terminal, plain log lines elsewhere."""

from __future__ import annotations

import logging
import time

from egtr.console import stderr_is_terminal

logger = logging.getLogger("egtr.bulk")


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class RankProgress:
    """Counts the images of one rank and shows the rate and ETA.

    On a terminal: one tqdm bar per rank (`position` = local rank, so the bars of one node stack). Otherwise (a
    log file, a SLURM job): one line every `interval` seconds, `rank 1/8: 1200/50000 images (2.4%), 31.2 images/s,
    ETA 26m04s`.
    """

    def __init__(self, rank: int, world_size: int, local_rank: int, total: int | None, enabled: bool, interval: float):
        self.rank, self.world_size = rank, world_size
        self.total = total
        self.done = 0
        self.errors = 0
        self.started = time.monotonic()
        self.interval = interval
        self._last_line = self.started
        self._bar = None
        self.enabled = enabled
        if enabled and stderr_is_terminal():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                unit="image",
                desc=f"rank {rank}/{world_size}" if world_size > 1 else "predict",
                position=local_rank,
                dynamic_ncols=True,
            )

    def update(self, images: int, errors: int) -> None:
        self.done += images + errors
        self.errors += errors
        if self._bar is not None:
            self._bar.update(images + errors)
            return
        now = time.monotonic()
        if self.enabled and now - self._last_line >= self.interval:
            self._last_line = now
            logger.info(self.line())

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        if self.total:
            eta = format_duration((self.total - self.done) / rate) if rate > 0 else "?"
            position = f"{self.done}/{self.total} images ({100 * self.done / self.total:.1f}%)"
        else:
            eta, position = "?", f"{self.done} images"
        return f"rank {self.rank}/{self.world_size}: {position}, {rate:.2f} images/s, ETA {eta}"

    def close(self) -> float:
        """Close the bar; returns the elapsed seconds."""
        if self._bar is not None:
            self._bar.close()
        return time.monotonic() - self.started
