"""Fixtures of the video tests: a generated clip with known truth, and noisy per-frame scene graphs of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("trackers")

from egtr.data.synthetic import CLASS_NAMES, PREDICATE_NAMES  # noqa: E402
from egtr.scene_graph import SceneGraph, SceneObject, SceneRelation  # noqa: E402
from egtr.video.synthetic_clip import ClipTruth, make_moving_clip  # noqa: E402


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> tuple[Path, ClipTruth]:
    path = tmp_path_factory.mktemp("clip") / "moving.mp4"
    return path, make_moving_clip(path, image_size=160, num_frames=80, fps=10, seed=1)


@pytest.fixture(scope="session")
def noisy_graphs(clip) -> list[SceneGraph]:
    return make_noisy_graphs(clip[1], seed=0)


def make_noisy_graphs(truth: ClipTruth, seed: int = 0) -> list[SceneGraph]:
    """What an imperfect detector might say about each frame: jittered boxes, a missed object now and then, a
    wrong class in one frame of five, true relations missing in 30 % of frames and a few spurious ones."""
    rng = np.random.default_rng(seed)
    graphs = []
    for frame in range(truth.num_frames):
        objects, index_of = [], {}
        for track, name in enumerate(truth.classes):
            if rng.random() < 0.05:
                continue
            label = CLASS_NAMES.index(name)
            if rng.random() < 0.2:
                label = int(rng.choice([i for i in range(len(CLASS_NAMES)) if i != label]))
            box = truth.boxes[frame, track] + rng.normal(0, 1.5, size=4)
            index_of[track] = len(objects)
            objects.append(SceneObject(tuple(box), label, CLASS_NAMES[label], float(rng.uniform(0.6, 0.95))))
        relations = []
        for subject, obj, predicate in sorted(truth.relations[frame]):
            if subject in index_of and obj in index_of and rng.random() < 0.7:
                relations.append((index_of[subject], index_of[obj], predicate, rng.uniform(0.55, 0.95)))
        for subject in index_of.values():
            for obj in index_of.values():
                if subject != obj and rng.random() < 0.03:
                    relations.append((subject, obj, int(rng.integers(len(PREDICATE_NAMES))), rng.uniform(0.5, 0.7)))
        scene_relations = [
            SceneRelation(s, o, p, PREDICATE_NAMES[p], float(score), float(score)) for s, o, p, score in relations
        ]
        graphs.append(SceneGraph(objects, scene_relations, (truth.image_size, truth.image_size)))
    return graphs
