"""A video of the synthetic world (`egtr.data.synthetic`) in which objects move: true tracks and relations known.

A scene of the synthetic world is split into rigid groups (objects joined by a contact relation: a shape inside a
frame, on a shelf, or touching another shape), each group drifts with its own constant velocity, bouncing off the
image border and off other groups (a group that would overlap another reverses instead), so no two groups ever
overlap. Every frame is drawn with the world's renderer and the same colours, so a model trained on the world
recognises the objects; the relations of each frame are the world's rules (`relation_between`) applied to the
frame's boxes. Relations between groups ("left of", "above") therefore appear and end as the groups move, and
`truth_intervals` gives the frames in which each holds.

    >>> clip = make_moving_clip("clip.mp4", num_frames=120, seed=3)   # also writes clip.truth.json
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from egtr.data.synthetic import (
    CLASS_NAMES,
    INSIDE,
    ON,
    PREDICATE_NAMES,
    TOUCHING,
    SceneObject,
    draw_scene,
    generate_scene,
    scene_relations,
)
from egtr.fileio import read_json, write_json
from egtr.inference.scene_graph import SceneGraph, SceneRelation
from egtr.inference.scene_graph import SceneObject as DetectedObject
from egtr.video.writers import MP4Writer

CONTACT_PREDICATES = (INSIDE, ON, TOUCHING)


@dataclass
class ClipTruth:
    """The true content of a generated clip.

    Attributes:
        fps: frame rate of the file.
        classes: class name of each true track (track id = index).
        boxes: (frames, tracks, 4) pixel boxes x1, y1, x2, y2 per frame.
        relations: per frame, the set of true (subject track, object track, predicate) triplets.
    """

    fps: float
    image_size: int
    classes: list[str]
    boxes: np.ndarray
    relations: list[set[tuple[int, int, int]]]

    @property
    def num_frames(self) -> int:
        return len(self.relations)

    def to_dict(self) -> dict:
        return {
            "fps": self.fps,
            "image_size": self.image_size,
            "class_names": list(CLASS_NAMES),
            "predicate_names": list(PREDICATE_NAMES),
            "tracks": [{"track_id": index, "label_name": name} for index, name in enumerate(self.classes)],
            "frames": [
                {
                    "frame_index": frame,
                    "time": frame / self.fps,
                    "boxes": self.boxes[frame].tolist(),
                    "relations": sorted(list(triplet) for triplet in self.relations[frame]),
                }
                for frame in range(self.num_frames)
            ],
        }

    @classmethod
    def from_json(cls, path: str | Path) -> ClipTruth:
        values = read_json(path)
        frames = values["frames"]
        return cls(
            fps=float(values["fps"]),
            image_size=int(values["image_size"]),
            classes=[track["label_name"] for track in values["tracks"]],
            boxes=np.asarray([frame["boxes"] for frame in frames], dtype=np.float64),
            relations=[{(int(s), int(o), int(p)) for s, o, p in frame["relations"]} for frame in frames],
        )


def _contact_groups(objects: list[SceneObject], margin: int) -> list[list[int]]:
    """Objects joined by a contact relation move together (union-find over contact pairs)."""
    parent = list(range(len(objects)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    for subject, obj, predicate in scene_relations(objects, margin):
        if predicate in CONTACT_PREDICATES:
            parent[root(subject)] = root(obj)
    groups: dict[int, list[int]] = {}
    for index in range(len(objects)):
        groups.setdefault(root(index), []).append(index)
    return list(groups.values())


def _group_box(objects: list[SceneObject], group: list[int]) -> tuple[int, int, int, int]:
    return (
        min(objects[i].x1 for i in group),
        min(objects[i].y1 for i in group),
        max(objects[i].x2 for i in group),
        max(objects[i].y2 for i in group),
    )


def _boxes_intersect(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    # `gap` keeps groups a little apart so that no accidental contact relation between groups arises.
    return min(a[2], b[2]) - max(a[0], b[0]) > -gap and min(a[3], b[3]) - max(a[1], b[1]) > -gap


def simulate(
    image_size: int = 256, num_frames: int = 120, seed: int = 0, max_speed: int = 2, min_groups: int = 3
) -> tuple[list[list[SceneObject]], list[list[int]]]:
    """Object positions in every frame (list per frame, same object order) and the rigid groups."""
    margin = max(4, image_size // 32)
    rng = np.random.default_rng([seed, 7919])
    while True:
        objects = generate_scene(rng, image_size, margin)
        groups = _contact_groups(objects, margin)
        if len(groups) >= min_groups:
            break
    velocities = []
    for _ in groups:
        while True:
            velocity = rng.integers(-max_speed, max_speed + 1, size=2)
            if velocity.any():
                velocities.append(velocity)
                break
    frames = [objects]
    for _ in range(num_frames - 1):
        current = frames[-1]
        moved = list(current)
        boxes = [_group_box(current, group) for group in groups]
        for number, group in enumerate(groups):
            dx, dy = (int(v) for v in velocities[number])
            x1, y1, x2, y2 = boxes[number]
            if x1 + dx < 1 or x2 + dx > image_size - 1:
                velocities[number][0] *= -1
                dx = -dx
            if y1 + dy < 1 or y2 + dy > image_size - 1:
                velocities[number][1] *= -1
                dy = -dy
            proposal = (x1 + dx, y1 + dy, x2 + dx, y2 + dy)
            others = [boxes[other] for other in range(len(groups)) if other != number]
            if any(_boxes_intersect(proposal, other, margin) for other in others):
                velocities[number] *= -1  # bounce off the other group; stay this frame
                continue
            boxes[number] = proposal
            for index in group:
                moved[index] = current[index].shifted(dx, dy)
        frames.append(moved)
    return frames, groups


def make_moving_clip(
    path: str | Path,
    *,
    image_size: int = 256,
    num_frames: int = 120,
    fps: float = 10.0,
    seed: int = 0,
    max_speed: int = 2,
) -> ClipTruth:
    """Write an MP4 clip of moving synthetic objects to `path` and its truth to `<path stem>.truth.json`.

    Args:
        image_size: square frame side in pixels (objects are 14-28 % of it, as in the world).
        num_frames: frames in the clip.
        fps: frame rate written into the file.
        seed: the clip's seed (scene and velocities).
        max_speed: largest velocity component in pixels per frame.
    """
    margin = max(4, image_size // 32)
    frames, _ = simulate(image_size, num_frames, seed, max_speed)
    classes = [obj.kind for obj in frames[0]]
    boxes = np.asarray([[[o.x1, o.y1, o.x2, o.y2] for o in objects] for objects in frames], dtype=np.float64)
    relations = [set(scene_relations(objects, margin)) for objects in frames]
    truth = ClipTruth(fps=fps, image_size=image_size, classes=classes, boxes=boxes, relations=relations)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with MP4Writer(path, fps, quality=12) as writer:
        for objects in frames:
            # The same generator state for every frame: background and colour jitter stay the same over the clip.
            writer.write(np.asarray(draw_scene(objects, image_size, np.random.default_rng([seed, 104729]))))
    write_json(path.with_name(f"{path.stem}.truth.json"), truth.to_dict())
    return truth


def truth_intervals(relations: list[set[tuple[int, int, int]]]) -> dict[tuple[int, int, int], list[tuple[int, int]]]:
    """Per triplet, the inclusive (first frame, last frame) runs in which it holds."""
    intervals: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
    for frame, triplets in enumerate(relations):
        for triplet in triplets:
            runs = intervals.setdefault(triplet, [])
            if runs and runs[-1][1] == frame - 1:
                runs[-1] = (runs[-1][0], frame)
            else:
                runs.append((frame, frame))
    return intervals


def simulated_detections(
    truth: ClipTruth,
    seed: int = 0,
    *,
    miss_rate: float = 0.05,
    wrong_class_rate: float = 0.2,
    relation_miss_rate: float = 0.3,
    spurious_rate: float = 0.03,
    box_noise: float = 1.5,
) -> Iterator[SceneGraph]:
    """What an imperfect per-frame detector might say about each frame of a clip (for tests and benchmarks),
    one frame at a time.

    Boxes jittered by `box_noise` pixels (Gaussian), each object missed with `miss_rate`, given a wrong class
    with `wrong_class_rate`, object scores uniform in [0.6, 0.95]; each true relation missing with
    `relation_miss_rate` (else predicate score uniform in [0.55, 0.95]); every other ordered pair gets a random
    predicate with `spurious_rate` (score in [0.5, 0.7]); objects in random order. Frames are independent, as a
    per-frame model's errors are.
    """
    rng = np.random.default_rng([seed, 31337])
    for frame in range(truth.num_frames):
        objects: list[DetectedObject] = []
        index_of: dict[int, int] = {}
        for track, name in enumerate(truth.classes):
            if rng.random() < miss_rate:
                continue
            label = CLASS_NAMES.index(name)
            if rng.random() < wrong_class_rate:
                label = int(rng.choice([other for other in range(len(CLASS_NAMES)) if other != label]))
            box = truth.boxes[frame, track] + rng.normal(0, box_noise, size=4)
            index_of[track] = len(objects)
            score = float(rng.uniform(0.6, 0.95))
            objects.append(DetectedObject(tuple(float(v) for v in box), label, CLASS_NAMES[label], score))  # type: ignore[arg-type]
        relations = []
        for subject, obj, predicate in sorted(truth.relations[frame]):
            if subject in index_of and obj in index_of and rng.random() >= relation_miss_rate:
                relations.append((index_of[subject], index_of[obj], predicate, float(rng.uniform(0.55, 0.95))))
        for subject in index_of.values():
            for obj in index_of.values():
                if subject != obj and rng.random() < spurious_rate:
                    predicate = int(rng.integers(len(PREDICATE_NAMES)))
                    relations.append((subject, obj, predicate, float(rng.uniform(0.5, 0.7))))
        # A detector lists its objects in no particular order: shuffle them (and re-point the relations).
        order = rng.permutation(len(objects))
        position = {int(old): new for new, old in enumerate(order)}
        yield SceneGraph(
            [objects[int(old)] for old in order],
            [
                SceneRelation(position[s], position[o], p, PREDICATE_NAMES[p], score, score)
                for s, o, p, score in relations
            ],
            (truth.image_size, truth.image_size),
        )
