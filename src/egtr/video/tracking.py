"""Object identities over time: ByteTrack on the objects of each frame's `SceneGraph`, classes voted per track.

Association is the `trackers` package's `ByteTrackTracker` (Roboflow's maintained ByteTrack, the successor of
`supervision.ByteTrack`, which supervision 0.30 removed): Kalman-predicted boxes matched by IoU, confident
detections first, then the less confident ones, so that a frame in which an object's score dips does not break its
track. ByteTrack ignores classes; the class of a track is decided here, over the track: every frame adds the
object's score to its class, and the track's class is the one with the largest sum so far (a causal vote, so a
frame in which the detector confuses two classes does not flip the label).

Before association, a box that overlaps a higher-scoring box of the same class by `duplicate_iou` or more is left
out of tracking (it keeps its place in the frame's graph, without a track id): DETR-style models are trained to give
one query per object, but a small or undertrained one gives some objects a second box, and each such duplicate
would otherwise start a short track of its own (docs/video.md, "Measured").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from egtr.inference.scene_graph import SceneGraph


@dataclass(frozen=True)
class TrackingConfig:
    """Settings of `SceneGraphTracker` (ByteTrack's, in seconds where ByteTrack counts frames).

    Attributes:
        activation_threshold: an unmatched object starts a new track only with a score at least this
            (`egtr predict --track-threshold`).
        high_score_threshold: objects at or above it are associated first (ByteTrack's two stages); capped at
            `activation_threshold` (see `association_threshold`).
        iou_threshold: least IoU between a track's predicted box and an object to associate them.
        lost_track_seconds: a track that finds no object is kept this long for re-association.
        min_track_frames: frames a new track must be seen in a row before it gets an id (before: no id).
        duplicate_iou: a box overlapping a higher-scoring box of its class by this IoU is not tracked (None: all are).
    """

    activation_threshold: float = 0.5
    high_score_threshold: float = 0.5
    iou_threshold: float = 0.2
    lost_track_seconds: float = 1.0
    min_track_frames: int = 2
    duplicate_iou: float | None = 0.7

    @property
    def association_threshold(self) -> float:
        """The score that splits ByteTrack's two stages as used. ByteTrack starts tracks only from objects of the
        first (high-score) stage, so an activation threshold below `high_score_threshold` would otherwise start no
        track below the latter: every object that may start a track is associated first."""
        return min(self.high_score_threshold, self.activation_threshold)

    def to_dict(self) -> dict[str, str | float | None]:
        return {
            "tracker": "ByteTrack (trackers.ByteTrackTracker)",
            "activation_threshold": self.activation_threshold,
            "high_score_threshold": self.association_threshold,
            "iou_threshold": self.iou_threshold,
            "lost_track_seconds": self.lost_track_seconds,
            "min_track_frames": self.min_track_frames,
            "duplicate_iou": self.duplicate_iou,
        }


@dataclass
class TrackSummary:
    """What is known about one track: class votes (score sums per class), first/last time, frames seen."""

    track_id: int
    votes: dict[int, float] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    first_time: float = 0.0
    last_time: float = 0.0
    frames: int = 0

    @property
    def label(self) -> int:
        return max(self.votes, key=lambda label: (self.votes[label], -label))

    @property
    def label_name(self) -> str:
        return self.names[self.label]

    def to_dict(self) -> dict[str, object]:
        return {
            "track_id": self.track_id,
            "label": self.label,
            "label_name": self.label_name,
            "first_time": self.first_time,
            "last_time": self.last_time,
            "frames": self.frames,
        }


class SceneGraphTracker:
    """Give every object of consecutive `SceneGraph`s a persistent track id.

    Args:
        frame_rate: sampled frames per second (so that `lost_track_seconds` means seconds).
        config: association settings.
    """

    def __init__(self, frame_rate: float, config: TrackingConfig | None = None) -> None:
        from trackers import ByteTrackTracker

        self.config = config or TrackingConfig()
        if not frame_rate > 0:
            raise ValueError(f"frame_rate must be > 0, got {frame_rate}")
        self.frame_rate = float(frame_rate)
        self._tracker = ByteTrackTracker(
            # ByteTrack counts its buffer in frames at 30 fps and rescales it by frame_rate / 30 itself.
            lost_track_buffer=max(1, round(self.config.lost_track_seconds * 30)),
            frame_rate=self.frame_rate,
            track_activation_threshold=self.config.activation_threshold,
            minimum_consecutive_frames=self.config.min_track_frames,
            minimum_iou_threshold=self.config.iou_threshold,
            high_conf_det_threshold=self.config.association_threshold,
        )
        self.tracks: dict[int, TrackSummary] = {}

    def update(self, graph: SceneGraph, time: float) -> list[int | None]:
        """The track id of each object of `graph` (None: not (yet) a confirmed track), updating the votes."""
        detections = graph.to_detections()
        if self.config.duplicate_iou is not None and len(detections) > 1:
            detections = detections.with_nms(threshold=self.config.duplicate_iou, class_agnostic=False)
        tracked = self._tracker.update(detections)
        track_ids: list[int | None] = [None] * len(graph.objects)
        tracker_ids: Iterable[int] = tracked.tracker_id if tracked.tracker_id is not None else ()
        # A frame without objects comes back as `Detections.empty()`, which has no `data` columns.
        for row, assigned in zip(tracked.data.get("object_index", ()), tracker_ids):
            if assigned >= 0:
                track_ids[int(row)] = int(assigned)
        for item, track_id in zip(graph.objects, track_ids):
            if track_id is None:
                continue
            summary = self.tracks.get(track_id)
            if summary is None:
                summary = self.tracks[track_id] = TrackSummary(track_id, first_time=time)
            summary.votes[item.label] = summary.votes.get(item.label, 0.0) + item.score
            summary.names[item.label] = item.label_name
            summary.last_time = time
            summary.frames += 1
        return track_ids

    def label_of(self, track_id: int) -> tuple[int, str]:
        """(class index, class name) of a track, by the vote so far."""
        summary = self.tracks[track_id]
        return summary.label, summary.label_name
