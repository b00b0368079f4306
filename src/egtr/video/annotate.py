"""Drawing one annotated video frame: boxes with track ids, the top relations as text, a small live graph panel.

Pure PIL, so a frame costs a few milliseconds: the frame (scaled up when small, so that text stays legible) on the
left; on the right a panel with the graph of the relations that hold now (one node per track at its box centre,
scaled into the panel, so the graph keeps the picture's layout; an arrow subject -> object labelled with the
predicate) and below it the top relations with their smoothed scores. Colours follow the track id.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MIN_FRAME_SIDE = 480  # frames with a smaller shorter side are scaled up by an integer factor
PANEL_WIDTH = 360
BACKGROUND = (250, 250, 250)


@dataclass(frozen=True)
class TrackBox:
    """A tracked object to draw: pixel box in the original frame, track id, class name, score."""

    box: tuple[float, float, float, float]
    track_id: int
    label_name: str
    score: float


@dataclass(frozen=True)
class RelationLine:
    """A relation that holds: subject and object track ids, predicate name, smoothed score."""

    subject: int
    object: int
    predicate_name: str
    score: float


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A saturated colour per track id (golden-ratio hue steps, so neighbouring ids differ)."""
    hue = (track_id * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.8)
    return int(red * 255), int(green * 255), int(blue * 255)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def render_frame(
    image: np.ndarray,
    boxes: Sequence[TrackBox],
    relations: Sequence[RelationLine],
    *,
    time: float,
    max_relations: int = 8,
) -> np.ndarray:
    """The annotated frame as an (H', W' + panel, 3) uint8 array (see the module docstring)."""
    height, width = image.shape[:2]
    scale = max(1, math.ceil(MIN_FRAME_SIDE / max(1, min(height, width))))
    picture = Image.fromarray(image)
    if scale > 1:
        picture = picture.resize((width * scale, height * scale), Image.Resampling.NEAREST)
    canvas = Image.new("RGB", (picture.width + PANEL_WIDTH, max(picture.height, PANEL_WIDTH + 160)), BACKGROUND)
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    font = _font(max(12, min(20, picture.height // 32)))
    names = {item.track_id: item.label_name for item in boxes}
    for item in boxes:
        colour = track_colour(item.track_id)
        x1, y1, x2, y2 = (value * scale for value in item.box)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=max(2, scale + 1))
        text = f"#{item.track_id} {item.label_name}"
        left, top, right, bottom = draw.textbbox((x1, y1), text, font=font)
        label_top = y1 - (bottom - top) - 4 if y1 - (bottom - top) - 4 >= 0 else y1
        draw.rectangle([x1, label_top, x1 + right - left + 4, label_top + bottom - top + 4], fill=colour)
        draw.text((x1 + 2, label_top + 2 - (top - y1)), text, fill=(255, 255, 255), font=font)
    draw.text(
        (6, picture.height - 22),
        f"t = {time:.2f} s",
        fill=(255, 255, 255),
        font=font,
        stroke_width=2,
        stroke_fill=(0, 0, 0),
    )
    shown = list(relations)[:max_relations]
    _draw_graph(draw, boxes, shown, origin=(picture.width, 0), side=PANEL_WIDTH, frame_size=(height, width), font=font)
    text_top = PANEL_WIDTH + 8
    draw.text((picture.width + 10, text_top), "relations now (smoothed score)", fill=(40, 40, 40), font=font)
    line_height = font.size + 6 if hasattr(font, "size") else 18
    for number, relation in enumerate(shown):
        line = (
            f"#{relation.subject} {names.get(relation.subject, '?')} {relation.predicate_name} "
            f"#{relation.object} {names.get(relation.object, '?')}  {relation.score:.2f}"
        )
        y = text_top + (number + 1) * line_height
        if y + line_height > canvas.height:
            break
        draw.text((picture.width + 10, y), line, fill=track_colour(relation.subject), font=font)
    return np.asarray(canvas)


def _overlap(first: tuple[float, float, float, float], second: tuple[float, float, float, float]) -> bool:
    return first[0] < second[2] and second[0] < first[2] and first[1] < second[3] and second[1] < first[3]


def _spread(
    positions: dict[int, tuple[float, float]], distance: float, bounds: tuple[float, float, float, float]
) -> dict[int, tuple[float, float]]:
    """Push nodes closer than `distance` apart (a few relaxation steps), staying inside `bounds`."""
    points = {key: np.asarray(value, dtype=np.float64) for key, value in positions.items()}
    keys = sorted(points)
    for _ in range(20):
        moved = False
        for number, first in enumerate(keys):
            for second in keys[number + 1 :]:
                offset = points[second] - points[first]
                gap = float(np.hypot(*offset))
                if gap >= distance:
                    continue
                direction = offset / gap if gap > 1e-6 else np.array([1.0, 0.0])
                push = (distance - gap) / 2 * direction
                points[first] -= push
                points[second] += push
                moved = True
        for key in keys:
            points[key] = np.clip(points[key], bounds[:2], bounds[2:])
        if not moved:
            break
    return {key: (float(point[0]), float(point[1])) for key, point in points.items()}


def _draw_graph(
    draw: ImageDraw.ImageDraw,
    boxes: Sequence[TrackBox],
    relations: Sequence[RelationLine],
    *,
    origin: tuple[int, int],
    side: int,
    frame_size: tuple[int, int],
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
) -> None:
    left, top = origin
    draw.rectangle([left + 4, top + 4, left + side - 4, top + side - 4], outline=(200, 200, 200), width=1)
    height, width = frame_size
    related = {relation.subject for relation in relations} | {relation.object for relation in relations}
    radius = 14
    inner = side - 2 * (radius + 10)
    positions = {}
    for item in boxes:
        if item.track_id not in related:
            continue
        centre_x = (item.box[0] + item.box[2]) / 2 / max(1, width)
        centre_y = (item.box[1] + item.box[3]) / 2 / max(1, height)
        positions[item.track_id] = (left + radius + 10 + centre_x * inner, top + radius + 10 + centre_y * inner)
    positions = _spread(
        positions, 4.5 * radius, (left + radius, top + radius, left + side - radius, top + side - radius)
    )
    placed: list[tuple[float, float, float, float]] = []
    for relation in relations:
        if relation.subject not in positions or relation.object not in positions:
            continue
        (x1, y1), (x2, y2) = positions[relation.subject], positions[relation.object]
        length = math.hypot(x2 - x1, y2 - y1) or 1.0
        ux, uy = (x2 - x1) / length, (y2 - y1) / length
        start, end = (x1 + ux * radius, y1 + uy * radius), (x2 - ux * radius, y2 - uy * radius)
        colour = track_colour(relation.subject)
        draw.line([start, end], fill=colour, width=2)
        tip = 9
        draw.polygon(
            [
                end,
                (end[0] - ux * tip - uy * tip / 2, end[1] - uy * tip + ux * tip / 2),
                (end[0] - ux * tip + uy * tip / 2, end[1] - uy * tip - ux * tip / 2),
            ],
            fill=colour,
        )
        # The label goes to the first spot along the arrow where it covers no earlier label.
        for fraction in (0.5, 0.35, 0.65, 0.2, 0.8):
            spot = (start[0] + (end[0] - start[0]) * fraction, start[1] + (end[1] - start[1]) * fraction)
            box = draw.textbbox(spot, relation.predicate_name, font=font, anchor="mm")
            if not any(_overlap(box, other) for other in placed):
                break
        placed.append(box)
        draw.text(
            spot,
            relation.predicate_name,
            fill=(30, 30, 30),
            font=font,
            anchor="mm",
            stroke_width=3,
            stroke_fill=BACKGROUND,
        )
    for track_id, (x, y) in positions.items():
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=track_colour(track_id))
        draw.text((x, y), str(track_id), fill=(255, 255, 255), font=font, anchor="mm")
