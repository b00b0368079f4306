"""Temporal scene graphs of videos and streams (the `video` extra: PyAV, supervision, trackers).

    >>> from egtr import Predictor
    >>> from egtr.video import predict_video
    >>> report = predict_video(Predictor.from_pretrained("model"), "clip.mp4", "out/", fps=5)

See docs/video.md. Pieces: `decode` (PyAV frames), `tracking` (ByteTrack on `SceneGraph.to_detections()`, the
supervision.Detections of a graph, + class vote per track), `temporal` (EMA + hysteresis per relation),
`annotate` / `writers` (annotated MP4, JSONL), `pipeline` (all of it over a video), `synthetic_clip` and `evaluate`
(a clip with known truth and the metrics against it).
"""

from egtr.video.decode import VideoEndedEarly, VideoError, VideoFrame, iter_frames, video_info
from egtr.video.pipeline import TemporalSceneGraphs, VideoReport, predict_video
from egtr.video.temporal import RelationSmoother, SmoothingConfig
from egtr.video.tracking import SceneGraphTracker, TrackingConfig

__all__ = [
    "RelationSmoother",
    "SceneGraphTracker",
    "SmoothingConfig",
    "TemporalSceneGraphs",
    "TrackingConfig",
    "VideoEndedEarly",
    "VideoError",
    "VideoFrame",
    "VideoReport",
    "iter_frames",
    "predict_video",
    "video_info",
]
