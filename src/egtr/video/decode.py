"""Reading frames from video files, cameras and streams with PyAV (FFmpeg's libraries, bundled in the wheel).

`iter_frames` samples a video by time (`fps`) or by count (`stride`) inside an optional `[start, end)` window and
yields `VideoFrame`s (index of the decoded frame, presentation time in seconds, RGB array). Every failure to open or
decode is a `VideoError` whose one-line message names the source; a video that breaks off after some frames were
decoded (a truncated file, a decode error) raises `VideoEndedEarly` after the frames before the break were yielded,
so a caller keeps what it processed and knows that the video did not end there.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from egtr.errors import DataError

# Suffixes `egtr predict` routes to the video path (anything PyAV opens works through the Python API).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp")
STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


class VideoError(DataError):
    """A video that cannot be opened or decoded; the message names the source (the CLI prints it as one line and
    exits with 2)."""


class VideoEndedEarly(VideoError):
    """A video that breaks off after some frames: raised by `iter_frames` once the frames before the break have been
    yielded. `last_index` / `last_time` are those of the last decoded frame; the message names the source, that
    frame and the cause."""

    def __init__(self, message: str, last_index: int, last_time: float) -> None:
        super().__init__(message)
        self.last_index = last_index
        self.last_time = last_time


class _DamagedEnd(Exception):
    """Internal: the stream's last packet is cut short (the file ends inside it)."""


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame: `time` is its presentation time in seconds, `index` its frame number (time x the stream's
    frame rate when the container states one, else the count of decoded frames)."""

    index: int
    time: float
    image: np.ndarray  # (H, W, 3) uint8 RGB


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream (`frame_rate` and `duration` may be unknown)."""

    source: str
    width: int
    height: int
    frame_rate: Fraction | None
    duration: float | None
    codec: str


def is_video_source(item: str | Path) -> bool:
    """True for a path with a video suffix, a stream URL or a camera index ("0", "1", ...)."""
    text = str(item)
    return text.lower().startswith(STREAM_PREFIXES) or Path(text).suffix.lower() in VIDEO_SUFFIXES or _is_camera(text)


def _is_camera(text: str) -> bool:
    return text.isdigit() and not Path(text).exists()


def _open(source: str):  # -> av.container.InputContainer (PyAV has no public alias for the annotation)
    import av

    path: str = source
    container_format = None
    if _is_camera(source):
        # A camera index: the platform's capture device (only files are tested here).
        if sys.platform.startswith("linux"):
            path, container_format = f"/dev/video{source}", "v4l2"
        elif sys.platform == "darwin":
            container_format = "avfoundation"
        else:
            path, container_format = f"video={source}", "dshow"
    elif not source.lower().startswith(STREAM_PREFIXES):
        file = Path(source)
        if not file.is_file():
            raise VideoError(f"{source}: no such file")
        if file.stat().st_size == 0:
            raise VideoError(f"{source}: empty file, not a video")
    try:
        container = av.open(path, format=container_format, timeout=30.0)
    except av.FFmpegError as error:
        raise VideoError(f"{source}: cannot open as a video ({_reason(error)})") from error
    if not container.streams.video:
        kinds: list[str] = sorted({str(stream.type) for stream in container.streams}) or ["no streams"]
        container.close()
        raise VideoError(f"{source}: no video stream (the file holds {', '.join(kinds)})")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        container.close()
        raise VideoError(f"{source}: unsupported video codec (FFmpeg in PyAV has no decoder for it)")
    return container


def _decoded_frames(container: Any, stream: Any) -> Iterator[Any]:
    """The video stream's frames (PyAV `VideoFrame`s) in presentation order; `_DamagedEnd` after the last frame
    when the file ends inside a packet.

    Packets are demuxed here rather than by `container.decode`: with FFmpeg's frame threads (thread_type AUTO) the
    packet that a truncated file cuts short raises nothing, decoding just stops, and an MP4 whose index comes first
    (`movflags=faststart`) looked complete at 16 of 60 frames. The demuxer flags such a packet corrupt. A corrupt
    packet that more packets follow is a glitch, decoded as usual (FFmpeg conceals it); one followed only by the
    end of the stream is the cut: it is not decoded, the decoder is flushed (the frames before it come out), and
    the cut is raised.
    """
    damaged = None
    for packet in container.demux(stream):
        if damaged is not None and packet.size:  # the stream goes on after the damaged packet
            yield from stream.decode(damaged)
            damaged = None
        if packet.is_corrupt and packet.size:
            damaged = packet
            continue
        yield from stream.decode(packet)  # the last packet (size 0) flushes the decoder
    if damaged is not None:
        raise _DamagedEnd("the file ends in the middle of a frame's data (truncated)")


def _reason(error: Exception) -> str:
    text = getattr(error, "strerror", None) or str(error)
    return " ".join(str(text).split())


def video_info(source: str | Path) -> VideoInfo:
    """Open `source`, read its first video stream's properties and close it again."""
    container = _open(str(source))
    try:
        return _info(str(source), container)
    finally:
        container.close()


def _info(source: str, container) -> VideoInfo:
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.base_rate or stream.guessed_rate
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000  # AV_TIME_BASE
    return VideoInfo(
        source=source,
        width=int(stream.codec_context.width),
        height=int(stream.codec_context.height),
        frame_rate=Fraction(rate) if rate else None,
        duration=duration,
        codec=str(stream.codec_context.name),
    )


def check_sampling(fps: float | None, stride: int | None, start: float | None, end: float | None) -> None:
    """Raise ValueError for a sampling request that cannot be met (before anything is opened)."""
    if fps is not None and stride is not None:
        raise ValueError("give fps or stride, not both")
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if stride is not None and stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if start is not None and start < 0:
        raise ValueError(f"start must be >= 0 seconds, got {start}")
    if start is not None and end is not None and end <= start:
        raise ValueError(f"end ({end} s) must be after start ({start} s)")


def iter_frames(
    source: str | Path,
    *,
    fps: float | None = None,
    stride: int | None = None,
    start: float | None = None,
    end: float | None = None,
) -> Iterator[VideoFrame]:
    """Decode `source` and yield the sampled frames in order.

    Args:
        source: a video file, a stream URL (rtsp://, http://, ...) or a camera index ("0").
        fps: keep about this many frames per second of video time (the first frame at or after each
            1/fps step); None keeps every frame (subject to `stride`).
        stride: keep every `stride`-th decoded frame of the window; not together with `fps`.
        start, end: the window in seconds of presentation time, `[start, end)`; None = from the beginning / to
            the end. `start` seeks to the key frame before it, so decoding does not run through the skipped part.

    Raises:
        VideoError: the source cannot be opened, has no video stream, or its first frame cannot be decoded.
        VideoEndedEarly: the video breaks off (truncated, undecodable) after some frames; raised after the frames
            decoded before the break were yielded.
    """
    import av

    check_sampling(fps, stride, start, end)
    source = str(source)
    container = _open(source)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads inside FFmpeg
        # Times count from the stream's first timestamp (MPEG-TS, for one, starts at an arbitrary offset).
        offset = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        if start:
            target = int((start + offset) / stream.time_base)
            container.seek(target, stream=stream, backward=True, any_frame=False)
        next_time = start or 0.0
        rate = float(stream.average_rate) if stream.average_rate else None
        decoded = 0  # decoded frames inside the window (for stride)
        count, index, time = -1, -1, 0.0
        frames = _decoded_frames(container, stream)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                return
            except (av.FFmpegError, _DamagedEnd) as error:
                if count < 0:
                    raise VideoError(f"{source}: cannot decode the video stream ({_reason(error)})") from error
                raise VideoEndedEarly(
                    f"{source}: the video breaks off after frame {index} ({time:.3f} s): {_reason(error)}; "
                    f"the {count + 1} frames before are kept",
                    index,
                    time,
                ) from error
            count += 1
            time = float(frame.time) - offset if frame.time is not None else count / (rate or 25.0)
            index = round(time * rate) if rate else count
            if start is not None and time < start - 1e-6:
                continue
            if end is not None and time >= end - 1e-9:
                return
            decoded += 1
            if stride is not None and (decoded - 1) % stride:
                continue
            if fps is not None:
                if time < next_time - 1e-6:
                    continue
                # The next sample is one step after this one's slot (not after `time`), so the rate does not drift.
                steps = int((time - next_time) * fps + 1e-9) + 1
                next_time += steps / fps
            yield VideoFrame(index=index, time=time, image=frame.to_ndarray(format="rgb24"))
    finally:
        container.close()
