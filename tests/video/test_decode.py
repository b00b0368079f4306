"""Reading videos with PyAV: sampling, and one-line errors for bad input."""

from __future__ import annotations

import logging

import av
import numpy as np
import pytest
from tests.video.conftest import write_truncated_faststart_mp4

from egtr.video.decode import VideoEndedEarly, VideoError, is_video_source, iter_frames, video_info
from egtr.video.writers import MP4Writer


def write_clip(path, frames=20, rate=10, size=64):
    with MP4Writer(path, rate) as writer:
        for index in range(frames):
            image = np.zeros((size, size, 3), dtype=np.uint8)
            image[:, : 3 * index + 1] = 200  # a bar that grows, so frames differ
            writer.write(image)
    return path


def write_audio_only(path):
    container = av.open(str(path), "w")
    stream = container.add_stream("aac", rate=16000)
    for number in range(3):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, number * 1024
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def test_sampling_by_stride_fps_and_window(tmp_path):
    path = write_clip(tmp_path / "bars.mp4", frames=20, rate=10)
    info = video_info(path)
    assert (info.width, info.height, float(info.frame_rate), info.codec) == (64, 64, 10.0, "h264")
    assert [f.index for f in iter_frames(path)] == list(range(20))
    assert [f.index for f in iter_frames(path, stride=5)] == [0, 5, 10, 15]
    assert [f.index for f in iter_frames(path, fps=4)] == [0, 3, 5, 8, 10, 13, 15, 18]  # 0.25 s steps
    window = list(iter_frames(path, start=0.5, end=1.2))
    assert [f.index for f in window] == [5, 6, 7, 8, 9, 10, 11]
    assert window[0].time == pytest.approx(0.5) and window[0].image.shape == (64, 64, 3)
    assert window[0].image[:, :16].mean() > 150 and window[0].image[:, 20:].mean() < 40  # the bar of frame 5


def test_odd_frame_sizes_are_padded_for_yuv420(tmp_path):
    with MP4Writer(tmp_path / "odd.mp4", 5) as writer:
        writer.write(np.full((33, 47, 3), 128, dtype=np.uint8))
    assert (video_info(tmp_path / "odd.mp4").width, video_info(tmp_path / "odd.mp4").height) == (48, 34)
    assert not list(tmp_path.glob("*.partial*"))


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("missing.mp4", None, "no such file"),
        ("empty.mp4", lambda p: p.write_bytes(b""), "empty file"),
        ("corrupt.mp4", lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000)), "cannot open as a video"),
        ("sound.m4a", write_audio_only, "no video stream (the file holds audio)"),
    ],
)
def test_bad_input_is_one_line_naming_the_file(tmp_path, name, make, message):
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(VideoError) as caught:
        list(iter_frames(path))
    text = str(caught.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text


def test_unsupported_codec(tmp_path):
    good = write_clip(tmp_path / "good.mkv", frames=3)
    data = good.read_bytes()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    bad = tmp_path / "unknown_codec.mkv"
    bad.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_QQQQQ/ISO/XYZ"))  # a codec FFmpeg does not know
    with pytest.raises(VideoError, match=r"unknown_codec\.mkv: unsupported video codec"):
        list(iter_frames(bad))


def test_a_stream_cut_short_yields_what_it_has(tmp_path, caplog):
    path = write_clip(tmp_path / "cut.ts", frames=40)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        frames = list(iter_frames(path))
    assert 5 < len(frames) < 40
    assert [f.index for f in frames] == list(range(len(frames)))


def test_a_truncated_faststart_mp4_raises_after_the_frames_before_the_cut(tmp_path):
    """The index of a faststart MP4 promises 60 frames; the file stops a third of the way in. FFmpeg's frame threads
    do not raise at the cut: the frames before it are yielded, then `VideoEndedEarly` names the file and the frame."""
    path = write_truncated_faststart_mp4(tmp_path / "cut.mp4", frames=60)
    frames = []
    with pytest.raises(VideoEndedEarly) as caught:
        for frame in iter_frames(path):
            frames.append(frame.index)
    assert 5 < len(frames) < 60 and frames == list(range(len(frames)))
    assert caught.value.last_index == frames[-1]
    message = str(caught.value)
    assert message.startswith(f"{path}: the video breaks off after frame {frames[-1]} (") and "truncated" in message
    assert [frame.index for frame in iter_frames(path, stride=4, end=1.0)] == [0, 4, 8]  # before the cut: no error


def test_bad_sampling_requests():
    for options in ({"fps": 2, "stride": 2}, {"fps": 0}, {"stride": 0}, {"start": -1}, {"start": 3, "end": 2}):
        with pytest.raises(ValueError):
            next(iter_frames("whatever.mp4", **options))


def test_video_sources():
    assert is_video_source("clip.MP4") and is_video_source("rtsp://camera/1") and is_video_source("0")
    assert not is_video_source("photo.jpg") and not is_video_source("folder")
