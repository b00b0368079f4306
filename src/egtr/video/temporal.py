"""Relations over time: per (subject track, object track, predicate), a smoothed score with hysteresis.

The rule (`RelationSmoother`), for every sampled frame t and every triplet key k = (subject track, object track,
predicate), an exponential moving average with a time constant tau (seconds, so the same setting means the same at
any sampling rate, and a gap in a stream weighs the next frame more):

    s_k(t) = alpha * x_k(t) + (1 - alpha) * s_k(t_prev),     alpha = 1 - exp(-(t - t_prev) / tau),
    s_k = 0 before the key is first seen (the first frame uses the nominal frame interval for t - t_prev)

where x_k(t) is the frame's predicate score of k (`SceneRelation.predicate_score`: relation x connectivity) when the
frame's scene graph has that relation between the two tracks, and 0 otherwise (not ranked, or a track not
detected in that frame). A relation *appears* when s_k reaches `on_threshold` and *ends* when s_k falls below
`off_threshold` (< `on_threshold`): between the two thresholds it keeps its state, so a score that wobbles around
one threshold does not make it blink. With tau = 0 (alpha = 1) and `off_threshold = on_threshold` the rule is the
unsmoothed per-frame decision (`SmoothingConfig.unsmoothed`), the baseline of the measurements in docs/video.md.

The smoother keeps one number per live key; keys that are off and whose score has decayed below 1e-3 are
forgotten, so memory stays flat on long videos. Intervals are recorded as (first active frame, last active frame)
with their times; changes carry the frame and time at which the state flipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

TripletKey = tuple[int, int, int]  # (subject track id, object track id, predicate)
FORGET_BELOW = 1e-3


@dataclass(frozen=True)
class SmoothingConfig:
    """The EMA's time constant in seconds (0 = no smoothing) and the two hysteresis thresholds (see the module
    docstring). The defaults were chosen on simulated clips (docs/video.md, "Measured")."""

    time_constant: float = 0.35
    on_threshold: float = 0.4
    off_threshold: float = 0.1

    def __post_init__(self) -> None:
        if not self.time_constant >= 0:
            raise ValueError(f"smoothing time constant must be >= 0 seconds, got {self.time_constant}")
        if not 0 < self.off_threshold <= self.on_threshold <= 1:
            raise ValueError(
                f"need 0 < off threshold ({self.off_threshold}) <= on threshold ({self.on_threshold}) <= 1"
            )

    @classmethod
    def unsmoothed(cls, threshold: float = 0.5) -> SmoothingConfig:
        """The per-frame decision: a relation holds in exactly the frames whose score is >= `threshold`."""
        return cls(time_constant=0.0, on_threshold=threshold, off_threshold=threshold)

    def alpha(self, interval: float) -> float:
        """Weight of a frame that comes `interval` seconds after the previous one."""
        if self.time_constant == 0:
            return 1.0
        return 1.0 - math.exp(-max(interval, 0.0) / self.time_constant)

    def to_dict(self) -> dict[str, object]:
        return {
            "rule": "s(t) = alpha * x(t) + (1 - alpha) * s(t_prev), alpha = 1 - exp(-(t - t_prev) / time_constant), "
            "x = 0 when not predicted; appears when s >= on_threshold, ends when s < off_threshold",
            "time_constant": self.time_constant,
            "on_threshold": self.on_threshold,
            "off_threshold": self.off_threshold,
        }


@dataclass(frozen=True)
class RelationChange:
    """A relation that appeared or ended at `frame_index` / `time`."""

    key: TripletKey
    change: str  # "appeared" | "ended"
    frame_index: int
    time: float


@dataclass
class RelationInterval:
    """A run of frames in which a relation holds (both ends inclusive; `end_*` None while it still holds)."""

    start_frame: int
    start_time: float
    end_frame: int | None = None
    end_time: float | None = None


@dataclass
class _State:
    score: float = 0.0
    active: bool = False


@dataclass
class RelationSmoother:
    """Apply the smoothing rule frame by frame; collects intervals and changes.

    `frame_interval` is the nominal time between sampled frames (seconds), used for the first frame only.
    """

    frame_interval: float
    config: SmoothingConfig = field(default_factory=SmoothingConfig)
    intervals: dict[TripletKey, list[RelationInterval]] = field(default_factory=dict)
    changes: list[RelationChange] = field(default_factory=list)
    _states: dict[TripletKey, _State] = field(default_factory=dict)
    _last: tuple[int, float] | None = None  # (frame, time) of the last update

    def update(self, frame_index: int, time: float, observations: Mapping[TripletKey, float]) -> list[RelationChange]:
        """Feed one frame's scores (keys absent = score 0); returns the changes this frame caused."""
        elapsed = self.frame_interval if self._last is None else time - self._last[1]
        alpha = self.config.alpha(elapsed)
        new_changes = []
        for key in set(self._states) | set(observations):
            state = self._states.setdefault(key, _State())
            state.score = alpha * float(observations.get(key, 0.0)) + (1 - alpha) * state.score
            if not state.active and state.score >= self.config.on_threshold:
                state.active = True
                self.intervals.setdefault(key, []).append(RelationInterval(frame_index, time))
                new_changes.append(RelationChange(key, "appeared", frame_index, time))
            elif state.active and state.score < self.config.off_threshold:
                state.active = False
                self._close(key)
                new_changes.append(RelationChange(key, "ended", frame_index, time))
            if not state.active and state.score < FORGET_BELOW:
                del self._states[key]
        self._last = (frame_index, time)
        new_changes.sort(key=lambda change: (change.change != "ended", change.key))
        self.changes.extend(new_changes)
        return new_changes

    def _close(self, key: TripletKey) -> None:
        interval = self.intervals[key][-1]
        if self._last is not None:  # the last frame in which it still held
            interval.end_frame, interval.end_time = self._last

    def active(self) -> dict[TripletKey, float]:
        """The relations that hold now, with their smoothed scores, best first."""
        live = {key: state.score for key, state in self._states.items() if state.active}
        return dict(sorted(live.items(), key=lambda item: (-item[1], item[0])))

    def finish(self) -> None:
        """Close the intervals still open at the last frame (the video ended while they held)."""
        for key, state in self._states.items():
            if state.active and self._last is not None:
                interval = self.intervals[key][-1]
                interval.end_frame, interval.end_time = self._last
