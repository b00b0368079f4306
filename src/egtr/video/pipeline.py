"""Temporal scene graphs of a video: decode -> batched EGTR -> tracks -> smoothed relations -> files.

`TemporalSceneGraphs` turns a sequence of per-frame `SceneGraph`s into frame records with track ids and smoothed
relations (usable without a model, e.g. on saved records). `predict_video` runs a `Predictor` over a video and
writes, while the video is processed:

* `<name>.frames.jsonl`: one record per sampled frame: the `egtr predict` JSON of the frame plus `frame_index`,
  `time`, per object `track_id` / `track_label` / `track_label_name`, `tracked_relations` (the relations that
  hold after smoothing, between track ids) and `changes` (those that appeared or ended at this frame);
* `<name>.events.json`: the tracks, per relation the intervals in which it holds, and the changes (appeared /
  ended at time t), plus the settings;
* `<name>.annotated.mp4`: boxes with track ids, the top relations, a live graph panel (see `egtr.video.annotate`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from egtr.fileio import write_json
from egtr.inference.scene_graph import SceneGraph
from egtr.video.annotate import RelationLine, TrackBox, render_frame
from egtr.video.decode import VideoEndedEarly, VideoFrame, check_sampling, iter_frames, video_info
from egtr.video.temporal import RelationSmoother, SmoothingConfig, TripletKey
from egtr.video.tracking import SceneGraphTracker, TrackingConfig
from egtr.video.writers import JsonLinesWriter, MP4Writer

if TYPE_CHECKING:
    from egtr.inference import Predictor

logger = logging.getLogger(__name__)

# Objects the model finds with at least this score are tracked even when they take part in no top relation.
DEFAULT_OBJECT_THRESHOLD = 0.3


def relation_observations(graph: SceneGraph, track_ids: Sequence[int | None]) -> dict[TripletKey, float]:
    """The frame's relations between tracked objects as {(subject track, object track, predicate): score}.

    The score is `predicate_score` (relation x connectivity, independent of the object scores, which the tracker
    already judges); a key seen twice (no graph constraint) keeps its best score.
    """
    observations: dict[TripletKey, float] = {}
    for relation in graph.relations:
        subject, obj = track_ids[relation.subject], track_ids[relation.object]
        if subject is None or obj is None or subject == obj:
            continue
        key = (subject, obj, relation.predicate)
        observations[key] = max(observations.get(key, 0.0), relation.predicate_score)
    return observations


@dataclass
class TemporalSceneGraphs:
    """Tracks and smoothed relations over a sequence of frames, one `update` per sampled frame."""

    frame_rate: float
    predicate_names: Sequence[str]
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)

    def __post_init__(self) -> None:
        self.tracker = SceneGraphTracker(self.frame_rate, self.tracking)
        self.smoother = RelationSmoother(1.0 / self.frame_rate, self.smoothing)
        self.frames = 0

    def update(self, graph: SceneGraph, frame_index: int, time: float) -> dict[str, Any]:
        """Track the frame's objects, smooth its relations and return the frame's JSONL record."""
        track_ids = self.tracker.update(graph, time)
        changes = self.smoother.update(frame_index, time, relation_observations(graph, track_ids))
        self.frames += 1
        record = {"frame_index": frame_index, "time": round(time, 6), **graph.to_dict()}
        for item, track_id in zip(record["objects"], track_ids):
            item["track_id"] = track_id
            if track_id is not None:
                item["track_label"], item["track_label_name"] = self.tracker.label_of(track_id)
        record["tracked_relations"] = [
            self._relation_dict(key) | {"score": round(score, 6)} for key, score in self.smoother.active().items()
        ]
        # The changes of this frame too, so that a consumer of a live stream need not wait for the events file.
        record["changes"] = [{"change": change.change} | self._relation_dict(change.key) for change in changes]
        return record

    def _relation_dict(self, key: TripletKey) -> dict[str, Any]:
        subject, obj, predicate = key
        return {
            "subject_track": subject,
            "object_track": obj,
            "predicate": predicate,
            "predicate_name": self.predicate_names[predicate],
            "subject_name": self.tracker.label_of(subject)[1],
            "object_name": self.tracker.label_of(obj)[1],
        }

    def events(self) -> dict[str, Any]:
        """Tracks, relation intervals and changes so far (class names by the final vote)."""
        self.smoother.finish()
        relations = [
            self._relation_dict(key)
            | {
                "intervals": [
                    {
                        "start": run.start_time,
                        "end": run.end_time,
                        "start_frame": run.start_frame,
                        "end_frame": run.end_frame,
                    }
                    for run in runs
                ]
            }
            for key, runs in sorted(self.smoother.intervals.items())
        ]
        changes = [
            {"time": change.time, "frame_index": change.frame_index, "change": change.change}
            | self._relation_dict(change.key)
            for change in self.smoother.changes
        ]
        return {
            "frames": self.frames,
            "tracking": self.tracking.to_dict(),
            "smoothing": self.smoothing.to_dict(),
            "tracks": [summary.to_dict() for _, summary in sorted(self.tracker.tracks.items())],
            "relations": relations,
            "changes": changes,
        }

    def drawing_inputs(self, record: dict[str, Any]) -> tuple[list[TrackBox], list[RelationLine]]:
        """What `render_frame` needs from a frame record (tracked objects only)."""
        boxes = [
            TrackBox(tuple(item["box"]), item["track_id"], item["track_label_name"], item["score"])
            for item in record["objects"]
            if item["track_id"] is not None
        ]
        lines = [
            RelationLine(item["subject_track"], item["object_track"], item["predicate_name"], item["score"])
            for item in record["tracked_relations"]
        ]
        return boxes, lines


@dataclass
class VideoReport:
    """What `predict_video` did: frames processed and the files written (an empty MP4 slot if not drawn);
    `ended_early` says where and why the video broke off (None: it was read to its end or to `end`)."""

    source: str
    frames: int
    outputs: dict[str, Path]
    sample_rate: float
    ended_early: str | None = None


def _until_broken_off(frames: Iterator[VideoFrame], broken: list[VideoEndedEarly]) -> Iterator[VideoFrame]:
    """The frames up to where the video breaks off, if it does; the break is put in `broken` (so that the frames
    before it, even those of an unfinished batch, are processed and written as usual)."""
    try:
        yield from frames
    except VideoEndedEarly as error:
        broken.append(error)


def _batches(frames: Iterator[VideoFrame], size: int) -> Iterator[list[VideoFrame]]:
    batch: list[VideoFrame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def predict_video(
    predictor: Predictor,
    source: str | Path,
    out_dir: str | Path,
    *,
    fps: float | None = None,
    stride: int | None = None,
    start: float | None = None,
    end: float | None = None,
    tracking: TrackingConfig | None = None,
    smoothing: SmoothingConfig | None = None,
    object_threshold: float | None = DEFAULT_OBJECT_THRESHOLD,
    annotate: bool = True,
    draw_relations: int = 8,
    name: str | None = None,
    progress: bool = True,
) -> VideoReport:
    """Predict temporal scene graphs of a video file, stream URL or camera index; see the module docstring.

    Why this is long: the documented arguments; the code (about 75 lines) is the set-up and the one
    decode-predict-track-write loop, whose `finally` writes out what was processed however the loop ends.

    Args:
        predictor: the model wrapper; `predictor.batch_size` frames go through one forward pass.
        source: what PyAV opens: a file, an rtsp:// / http:// URL, a camera index ("0").
        fps, stride, start, end: frame sampling (`egtr.video.decode.iter_frames`).
        object_threshold: objects with at least this score are kept (and tracked) even outside the top relations;
            None = only the objects of the top relations.
        annotate: also write the annotated MP4.
        draw_relations: relations listed (and drawn in the graph panel) per annotated frame.
        name: output file stem (default: the source's stem; "camera<N>" / "stream" otherwise).

    Returns:
        The report; its `ended_early` is set when the video breaks off (a truncated file, a decode error): the
        frames before the break are processed and written, and the message names the source and the last frame.

    Raises:
        VideoError: the source cannot be opened or decoded (before any output file is created).
    """
    from tqdm import tqdm

    check_sampling(fps, stride, start, end)
    source = str(source)
    info = video_info(source)  # fails here, before output files exist, on a bad source
    native_rate = float(info.frame_rate) if info.frame_rate else 25.0
    sample_rate = fps if fps is not None else native_rate / (stride or 1)
    stem = name or (Path(source).stem if Path(source).suffix else ("camera" + source if source.isdigit() else "stream"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    temporal = TemporalSceneGraphs(
        frame_rate=sample_rate,
        predicate_names=predictor.predicate_names,
        tracking=tracking or TrackingConfig(),
        smoothing=smoothing or SmoothingConfig(),
    )
    outputs = {"frames": out_dir / f"{stem}.frames.jsonl", "events": out_dir / f"{stem}.events.json"}
    records = JsonLinesWriter(outputs["frames"])
    video = MP4Writer(out_dir / f"{stem}.annotated.mp4", sample_rate) if annotate else None
    total = None
    if info.duration:
        window = min(end or info.duration, info.duration) - (start or 0.0)
        total = max(0, round(window * sample_rate))
    broken: list[VideoEndedEarly] = []
    frames = _until_broken_off(iter_frames(source, fps=fps, stride=stride, start=start, end=end), broken)
    try:
        with tqdm(total=total, unit="frame", disable=not progress, dynamic_ncols=True) as bar:
            for batch in _batches(frames, predictor.batch_size):
                prepared = [predictor.prepare(frame.image) for frame in batch]
                graphs = predictor.postprocess(predictor.forward(prepared), prepared, object_threshold=object_threshold)
                for frame, graph in zip(batch, graphs):
                    graph.image_path = f"{source}#t={frame.time:.3f}"
                    record = temporal.update(graph, frame.index, frame.time)
                    records.write(record)
                    if video is not None:
                        boxes, lines = temporal.drawing_inputs(record)
                        video.write(
                            render_frame(frame.image, boxes, lines, time=frame.time, max_relations=draw_relations)
                        )
                    bar.update(1)
    finally:
        # Also on an interrupt or an error: what was processed is written out complete.
        records.close()
        if video is not None and video.close() is not None:
            outputs["video"] = video.path
        events = temporal.events()
        ended_early = str(broken[0]) if broken else None
        write_json(
            outputs["events"],
            {
                "source": source,
                "sample_rate": sample_rate,
                "sampling": _sampling(fps, stride, start, end),
                "ended_early": ended_early,
                **events,
            },
        )
    return VideoReport(source, temporal.frames, outputs, sample_rate, ended_early)


def _sampling(fps: float | None, stride: int | None, start: float | None, end: float | None) -> dict[str, Any]:
    return {"fps": fps, "stride": stride, "start": start, "end": end}
