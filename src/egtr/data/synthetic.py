"""A synthetic scene world: coloured shapes with relations that are visible in the pixels.

Every image holds 2-6 large, flat-coloured objects of 8 kinds on a plain background. Relations are a pure function of
the drawn boxes (`relation_between`), and scenes in which any pair would be close to a decision threshold are
re-drawn, so every annotated relation is unambiguous and every visible relation is annotated. The world is written
in the Visual Genome (RelTR) layout, so it is read, validated and trained on by exactly the same code as real data.

Generation is deterministic: image k of a dataset only depends on (seed, k), and pixels are written as PNG.

Predicates (subject first; at most one predicate per ordered pair, first match wins):
    inside      the subject's box lies inside a frame's box (with a margin)
    on          the subject's bottom edge rests on a shelf's top edge, within the shelf's width
    touching    the subject's right edge touches the object's left edge, rows overlapping
    left of     a clear gap separates the subject (left) from the object, rows overlapping
    above       a clear gap separates the subject (top) from the object, columns overlapping
    larger than same kind of shape, the subject's area at least twice the object's
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from egtr.fileio import write_json

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
CLASS_NAMES = (*SHAPES, "frame", "shelf")
CLASS_COLOURS = {
    "circle": (214, 39, 40),
    "square": (44, 160, 44),
    "triangle": (31, 119, 180),
    "diamond": (230, 190, 20),
    "cross": (148, 103, 189),
    "ring": (255, 127, 14),
    "frame": (70, 70, 70),
    "shelf": (140, 86, 45),
}
PREDICATE_NAMES = ("inside", "on", "touching", "left of", "above", "larger than")
INSIDE, ON, TOUCHING, LEFT_OF, ABOVE, LARGER_THAN = range(len(PREDICATE_NAMES))


@dataclass
class SceneObject:
    """One drawn object: its kind and its integer pixel box [x1, x2) x [y1, y2)."""

    kind: str
    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def area(self) -> int:
        return (self.x2 - self.x1) * (self.y2 - self.y1)

    def shifted(self, dx: int, dy: int) -> SceneObject:
        return SceneObject(self.kind, self.x1 + dx, self.y1 + dy, self.x2 + dx, self.y2 + dy)


def _overlaps(a: SceneObject, b: SceneObject) -> tuple[int, int]:
    """Overlap lengths along x and y (negative = gap)."""
    return min(a.x2, b.x2) - max(a.x1, b.x1), min(a.y2, b.y2) - max(a.y1, b.y1)


def _is_inside(inner: SceneObject, frame: SceneObject, margin: int) -> bool:
    return (
        frame.kind == "frame"
        and inner.kind in SHAPES
        and inner.x1 - frame.x1 >= margin
        and frame.x2 - inner.x2 >= margin
        and inner.y1 - frame.y1 >= margin
        and frame.y2 - inner.y2 >= margin
    )


def relation_between(subject: SceneObject, obj: SceneObject, margin: int) -> int | None:
    """The predicate of the ordered pair (subject, object), or None (see the module docstring for the rules)."""
    overlap_x, overlap_y = _overlaps(subject, obj)
    if _is_inside(subject, obj, margin):
        return INSIDE
    if (
        obj.kind == "shelf"
        and subject.kind in SHAPES
        and subject.y2 == obj.y1
        and obj.x1 <= subject.x1
        and subject.x2 <= obj.x2
    ):
        return ON
    if subject.kind in SHAPES and obj.kind in SHAPES and subject.x2 == obj.x1 and overlap_y >= margin:
        return TOUCHING
    if obj.x1 - subject.x2 >= margin and overlap_y >= margin:
        return LEFT_OF
    if obj.y1 - subject.y2 >= margin and overlap_x >= margin:
        return ABOVE
    if subject.kind == obj.kind and subject.kind in SHAPES and subject.area >= 2 * obj.area:
        return LARGER_THAN
    return None


def _pair_is_clear(a: SceneObject, b: SceneObject, margin: int) -> bool:
    """True if no rule of `relation_between` is close to its threshold for this pair (in either order)."""
    overlap_x, overlap_y = _overlaps(a, b)
    if overlap_x > 0 and overlap_y > 0:  # boxes intersect: only a shape inside a frame is allowed
        return _is_inside(a, b, margin) or _is_inside(b, a, margin)
    if overlap_x == 0 and overlap_y >= margin:  # side contact: only between two shapes
        return a.kind in SHAPES and b.kind in SHAPES
    if overlap_y == 0 and overlap_x > 0:  # vertical contact: only a shape standing on a shelf
        upper, lower = (a, b) if a.y2 == b.y1 else (b, a)
        return upper.kind in SHAPES and lower.kind == "shelf" and lower.x1 <= upper.x1 and upper.x2 <= lower.x2
    if -margin < overlap_x < margin or -margin < overlap_y < margin:
        return False
    if a.kind == b.kind and a.kind in SHAPES:  # sizes of same-kind shapes: clearly equal or clearly different
        ratio = max(a.area, b.area) / min(a.area, b.area)
        return ratio <= 1.44 or ratio >= 2.25
    return True


def _random_shape(rng: np.random.Generator, image_size: int, max_side: int | None = None) -> SceneObject:
    low, high = int(0.14 * image_size), int(0.28 * image_size)
    if max_side is not None:
        high = min(high, max_side)
        low = min(low, high)
    side = int(rng.integers(low, high + 1))
    return SceneObject(str(rng.choice(SHAPES)), 0, 0, side, side)


def _make_group(rng: np.random.Generator, image_size: int, margin: int) -> list[SceneObject]:
    """A group of objects in local coordinates: a free shape, a touching pair, a shelf or a frame."""
    choice = rng.random()
    if choice < 0.2:  # a frame with one shape inside
        frame_side = int(rng.integers(int(0.38 * image_size), int(0.55 * image_size) + 1))
        border = max(2, image_size // 64)
        inner = _random_shape(rng, image_size, max_side=frame_side - 2 * (margin + border))
        room = frame_side - 2 * (margin + border) - inner.x2
        dx, dy = (margin + border + int(rng.integers(0, room + 1)) for _ in range(2))
        return [SceneObject("frame", 0, 0, frame_side, frame_side), inner.shifted(dx, dy)]
    if choice < 0.45:  # a shelf with one or two shapes standing on it
        width = int(rng.integers(int(0.45 * image_size), int(0.75 * image_size) + 1))
        thickness = max(4, image_size // 24)
        first, second = _random_shape(rng, image_size), _random_shape(rng, image_size)
        top = max(first.y2, second.y2)
        shelf = SceneObject("shelf", 0, top, width, top + thickness)
        first = first.shifted(int(rng.integers(0, width // 3)), top - first.y2)
        gap = 0 if rng.random() < 0.3 else int(rng.integers(margin, 2 * margin + 1))
        second = second.shifted(first.x2 + gap, top - second.y2)
        return [shelf, first, second] if second.x2 <= width else [shelf, first]
    if choice < 0.65:  # two shapes touching side by side, bottoms aligned
        first, second = _random_shape(rng, image_size), _random_shape(rng, image_size)
        top = max(first.y2, second.y2)
        return [first.shifted(0, top - first.y2), second.shifted(first.x2, top - second.y2)]
    return [_random_shape(rng, image_size)]


def generate_scene(rng: np.random.Generator, image_size: int, margin: int) -> list[SceneObject]:
    """Place groups at random until 2-6 objects are placed; every pair passes `_pair_is_clear`."""
    while True:
        target_count = int(rng.integers(2, 7))
        objects: list[SceneObject] = []
        for _ in range(12):
            group = _make_group(rng, image_size, margin)
            if len(objects) + len(group) > target_count:
                continue
            width = max(obj.x2 for obj in group)
            height = max(obj.y2 for obj in group)
            if width > image_size - 2 or height > image_size - 2:
                continue
            for _ in range(20):
                dx = int(rng.integers(1, image_size - width))
                dy = int(rng.integers(1, image_size - height))
                placed = [obj.shifted(dx, dy) for obj in group]
                if all(_pair_is_clear(new, old, margin) for new in placed for old in objects):
                    objects.extend(placed)
                    break
            if len(objects) >= target_count:
                break
        if len(objects) >= 2:
            return objects


def draw_scene(objects: list[SceneObject], image_size: int, rng: np.random.Generator) -> Image.Image:
    """Render objects (frames and shelves first, so shapes inside/on them stay visible)."""
    background = tuple(int(value) for value in rng.integers(225, 250, size=3))
    image = Image.new("RGB", (image_size, image_size), background)
    draw = ImageDraw.Draw(image)
    order = sorted(range(len(objects)), key=lambda index: objects[index].kind in SHAPES)
    for index in order:
        obj = objects[index]
        colour = tuple(int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in CLASS_COLOURS[obj.kind])
        x1, y1, x2, y2 = obj.x1, obj.y1, obj.x2 - 1, obj.y2 - 1  # PIL coordinates are inclusive
        width, height = obj.x2 - obj.x1, obj.y2 - obj.y1
        if obj.kind == "circle":
            draw.ellipse([x1, y1, x2, y2], fill=colour)
        elif obj.kind == "ring":
            draw.ellipse([x1, y1, x2, y2], outline=colour, width=max(3, width // 6))
        elif obj.kind in ("square", "shelf"):
            draw.rectangle([x1, y1, x2, y2], fill=colour)
        elif obj.kind == "triangle":
            draw.polygon([(x1, y2), (x2, y2), ((x1 + x2) / 2, y1)], fill=colour)
        elif obj.kind == "diamond":
            draw.polygon(
                [((x1 + x2) / 2, y1), (x2, (y1 + y2) / 2), ((x1 + x2) / 2, y2), (x1, (y1 + y2) / 2)], fill=colour
            )
        elif obj.kind == "cross":
            draw.rectangle([x1, y1 + height // 3, x2, y2 - height // 3], fill=colour)
            draw.rectangle([x1 + width // 3, y1, x2 - width // 3, y2], fill=colour)
        elif obj.kind == "frame":
            draw.rectangle([x1, y1, x2, y2], outline=colour, width=max(2, image_size // 64))
    return image


def scene_relations(objects: list[SceneObject], margin: int) -> list[tuple[int, int, int]]:
    """All (subject, object, predicate) triplets of a scene, 0-based."""
    triplets = []
    for subject_index, subject in enumerate(objects):
        for object_index, obj in enumerate(objects):
            if subject_index != object_index:
                predicate = relation_between(subject, obj, margin)
                if predicate is not None:
                    triplets.append((subject_index, object_index, predicate))
    return triplets


def generate_synthetic_dataset(
    root: str | Path,
    num_train: int = 800,
    num_val: int = 100,
    num_test: int = 100,
    image_size: int = 192,
    seed: int = 0,
) -> Path:
    """Write a synthetic scene world in the Visual Genome (RelTR) layout.

    Args:
        root: output folder (created; existing annotation files are overwritten).
        num_train, num_val, num_test: images per split (each at least 1).
        image_size: square image side in pixels (>= 64).
        seed: the world's seed; image ids run 1..N over train, val, test and image k depends only on (seed, k).

    Returns:
        The dataset folder, readable by `VisualGenomeDataset` / `DataConfig(kind="vg")`.
    """
    if image_size < 64:
        raise ValueError(f"image_size must be at least 64, got {image_size}")
    counts = {"train": num_train, "val": num_val, "test": num_test}
    if min(counts.values()) < 1:
        raise ValueError(f"every split needs at least one image, got {counts}")
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    margin = max(4, image_size // 32)
    categories = [{"supercategory": "shape", "id": index + 1, "name": name} for index, name in enumerate(CLASS_NAMES)]
    relations_json: dict[str, object] = {"rel_categories": ["__background__", *PREDICATE_NAMES]}
    image_id = 0
    annotation_id = 0
    for split, count in counts.items():
        images, annotations, split_relations = [], [], {}
        for _ in range(count):
            image_id += 1
            rng = np.random.default_rng([seed, image_id])
            objects = generate_scene(rng, image_size, margin)
            file_name = f"{image_id:06d}.png"
            draw_scene(objects, image_size, rng).save(root / "images" / file_name)
            images.append({"file_name": file_name, "height": image_size, "width": image_size, "id": image_id})
            for obj in objects:
                annotation_id += 1
                width, height = obj.x2 - obj.x1, obj.y2 - obj.y1
                annotations.append(
                    {
                        "bbox": [obj.x1, obj.y1, width, height],
                        "category_id": CLASS_NAMES.index(obj.kind) + 1,
                        "area": width * height,
                        "iscrowd": 0,
                        "image_id": image_id,
                        "id": annotation_id,
                    }
                )
            # rel.json stores 1-based predicates, like RelTR.
            split_relations[str(image_id)] = [[s, o, p + 1] for s, o, p in scene_relations(objects, margin)]
        coco = {"images": images, "annotations": annotations, "categories": categories}
        write_json(root / f"{split}.json", coco, indent=None)
        relations_json[split] = split_relations
    write_json(root / "rel.json", relations_json, indent=None)
    meta = {
        "generator": "egtr.data.synthetic",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "image_size": image_size,
        "margin": margin,
        **{f"num_{split}": count for split, count in counts.items()},
    }
    write_json(root / "synthetic.json", meta)
    logger.info("synthetic world with %d images written to %s", image_id, root)
    return root
