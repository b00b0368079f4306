"""Fixtures of the video tests: a generated clip with known truth, and simulated noisy per-frame scene graphs."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("av")
pytest.importorskip("trackers")

from egtr.inference.scene_graph import SceneGraph  # noqa: E402
from egtr.video.synthetic_clip import ClipTruth, make_moving_clip, simulated_detections  # noqa: E402


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> tuple[Path, ClipTruth]:
    path = tmp_path_factory.mktemp("clip") / "moving.mp4"
    return path, make_moving_clip(path, image_size=160, num_frames=80, fps=10, seed=1)


@pytest.fixture(scope="session")
def noisy_graphs(clip) -> list[SceneGraph]:
    return list(simulated_detections(clip[1], seed=0))
