"""Fixtures of the video tests: a generated clip with known truth, and simulated noisy per-frame scene graphs."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("av")
pytest.importorskip("trackers")

from egtr.inference.scene_graph import SceneGraph
from egtr.video.synthetic_clip import ClipTruth, make_moving_clip, simulated_detections


def write_truncated_faststart_mp4(path: Path, frames: int = 60, keep: float = 1 / 3) -> Path:
    """An H.264 MP4 of `frames` noise frames at 10 fps whose index (moov) comes first (`movflags=faststart`), cut to
    the first `keep` of its bytes: it opens, and its index promises every frame, but the data stops part way."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(frames):  # noise: every frame is large, so the cut falls inside the frame data
            image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # the index first
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> tuple[Path, ClipTruth]:
    path = tmp_path_factory.mktemp("clip") / "moving.mp4"
    return path, make_moving_clip(path, image_size=160, num_frames=80, fps=10, seed=1)


@pytest.fixture(scope="session")
def noisy_graphs(clip) -> list[SceneGraph]:
    return list(simulated_detections(clip[1], seed=0))
