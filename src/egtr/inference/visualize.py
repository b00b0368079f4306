"""Scene graph drawings: the image with labelled boxes, side by side with the graph.

Object i has the same colour and the same "i label" tag in both panels, so a node can be found in the picture at a
glance. Graph nodes start at their box centres (the graph keeps the picture's rough geometry), are spread by a
Fruchterman-Reingold force layout confined to the panel and then pushed apart until no two labels overlap; objects
outside the drawn relations sit in rows at the bottom; edge labels slide along their arrows to avoid each other.
This keeps 30+ objects readable. Needs matplotlib (the `viz` extra). Uses matplotlib's object API (no pyplot), so
drawing many images in a loop neither leaks figures nor touches a GUI backend.
"""

from __future__ import annotations

import colorsys
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from egtr.images import ImageSource, describe_source, load_image

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.backend_bases import RendererBase
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    from matplotlib.text import Text

    from egtr.inference.scene_graph import SceneGraph, SceneRelation

logger = logging.getLogger(__name__)

Colour = tuple[float, float, float]  # RGB in [0, 1]

# tab10 first (most distinct), then the lighter tab20 shades; beyond 20 objects golden-ratio hues.
_BASE_COLOURS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
]
_MAX_IMAGE_SIDE = 1024  # the picture is downsampled to this before embedding (keeps SVGs small)


def object_colours(count: int) -> list[Colour]:
    """`count` distinct RGB colours in [0, 1]; the first 20 are the matplotlib tab20 palette."""
    colours = [
        (int(code[1:3], 16) / 255, int(code[3:5], 16) / 255, int(code[5:7], 16) / 255) for code in _BASE_COLOURS[:count]
    ]
    golden_ratio = 0.618033988749895
    for index in range(len(colours), count):
        hue = (index * golden_ratio) % 1.0
        value = 0.95 if index % 2 else 0.7  # alternate brightness so neighbouring hues still differ
        colours.append(colorsys.hsv_to_rgb(hue, 0.75, value))
    return colours


def text_colour(background: Colour) -> str:
    """Black or white, whichever reads better on `background` (relative luminance, ITU-R BT.709)."""
    red, green, blue = background[:3]
    return "black" if 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.5 else "white"


def draw_scene_graph(
    scene_graph: SceneGraph,
    image: ImageSource | None = None,
    path: str | Path | None = None,
    *,
    max_relations: int | None = 40,
    show_scores: bool = False,
    title: str | None = None,
    panel_height: float = 7.0,
    dpi: int = 120,
) -> Figure:
    """Draw `scene_graph` as image-with-boxes | graph.

    Args:
        scene_graph: the graph to draw (boxes in pixels of the original image).
        image: path, PIL image or (H, W, 3) / (H, W) array of the original image; None = a grey canvas of
            `scene_graph.image_size`.
        path: save the figure here; the suffix picks the format (.png, .svg, .pdf, ...).
        max_relations: draw only the top relations (the graph becomes unreadable beyond ~50 edges); None = all.
        show_scores: append the object score to box labels and the triplet score to edge labels.
        title: figure title; default: the image name and the counts.
        panel_height: height of the figure in inches; the widths follow the image aspect ratio.
        dpi: resolution of raster output.

    Returns:
        The matplotlib `Figure` (not registered with pyplot; it is freed when no longer referenced).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    picture = _load_picture(image, scene_graph.image_size)
    height, width = scene_graph.image_size if all(scene_graph.image_size) else picture.shape[:2]
    aspect = width / max(height, 1)
    image_width = panel_height * min(max(aspect, 0.5), 2.5)
    graph_width = panel_height * 1.15
    figure = Figure(figsize=(image_width + graph_width, panel_height + 0.5), dpi=dpi)
    canvas = FigureCanvasAgg(figure)  # gives the figure a renderer, needed to measure text before layout
    grid = figure.add_gridspec(1, 2, width_ratios=[image_width, graph_width], wspace=0.03)
    image_axes = figure.add_subplot(grid[0, 0])
    graph_axes = figure.add_subplot(grid[0, 1])

    relations = scene_graph.relations if max_relations is None else scene_graph.relations[:max_relations]
    colours = object_colours(len(scene_graph.objects))
    tags = [f"{index} {item.label_name}" for index, item in enumerate(scene_graph.objects)]

    _draw_image_panel(image_axes, canvas, picture, scene_graph, colours, tags, show_scores, (height, width))
    _draw_graph_panel(graph_axes, canvas, scene_graph, relations, colours, tags, show_scores)

    if title is None:
        # describe_source: a file name that is not valid UTF-8 must not break the text renderer.
        name = describe_source(Path(scene_graph.image_path).name) if scene_graph.image_path else "scene graph"
        shown = f" (top {len(relations)} shown)" if len(relations) < len(scene_graph.relations) else ""
        counts = f"{_plural(len(scene_graph.objects), 'object')}, {_plural(len(scene_graph.relations), 'relation')}"
        title = f"{name}: {counts}{shown}"
    figure.suptitle(title, fontsize=12)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=dpi, facecolor="white")
        logger.debug("wrote %s", path)
    return figure


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# ---------------------------------------------------------------------------------------------- image panel
def _load_picture(image: ImageSource | None, image_size: tuple[int, int]) -> np.ndarray:
    """(h, w, 3) uint8 array of `image` (converted as everywhere else, `egtr.images.load_image`), downsampled to at
    most `_MAX_IMAGE_SIDE` pixels per side; None gives a grey canvas of `image_size`."""
    if image is None:
        height, width = image_size if all(image_size) else (480, 640)
        scale = min(1.0, _MAX_IMAGE_SIDE / max(height, width))
        return np.full((max(1, round(height * scale)), max(1, round(width * scale)), 3), 200, dtype=np.uint8)
    picture = load_image(image, max_pixels=None)
    if max(picture.size) > _MAX_IMAGE_SIDE:
        picture = picture.copy()
        picture.thumbnail((_MAX_IMAGE_SIDE, _MAX_IMAGE_SIDE))
    return np.asarray(picture)


def _draw_image_panel(
    axes: Axes,
    canvas: FigureCanvasAgg,
    picture: np.ndarray,
    scene_graph: SceneGraph,
    colours: list[Colour],
    tags: list[str],
    show_scores: bool,
    size_hw: tuple[int, int],
) -> None:
    height, width = size_hw
    # extent in original pixels, so that boxes need no rescaling even if the picture was downsampled
    axes.imshow(picture, extent=(0, width, height, 0), interpolation="antialiased")
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    axes.set_axis_off()
    line_width = 2.0 if len(scene_graph.objects) <= 15 else 1.3
    font_size = 8 if len(scene_graph.objects) <= 15 else 6.5
    renderer = canvas.get_renderer()
    placed: list[np.ndarray] = []  # display-space rectangles (x0, y0, x1, y1) of the labels drawn so far
    # Draw large boxes first so that the labels of small boxes stay on top.
    order = sorted(range(len(scene_graph.objects)), key=lambda i: -_area(scene_graph.objects[i].box))
    for index in order:
        item = scene_graph.objects[index]
        x1, y1, x2, y2 = item.box
        colour = colours[index]
        axes.add_patch(_rectangle(x1, y1, x2 - x1, y2 - y1, colour, line_width))
        tag = f"{tags[index]} {item.score:.2f}" if show_scores else tags[index]
        label = axes.text(
            max(x1, 0),
            y1,
            tag,
            fontsize=font_size,
            color=text_colour(colour),
            va="bottom",
            ha="left",
            bbox={"facecolor": colour, "edgecolor": "none", "pad": 1.2, "alpha": 0.9},
            clip_on=True,
        )
        # Candidates: above the box's top-left corner, then inside it, stepping down one label height at a time,
        # so that labels of boxes with (almost) the same corner do not hide each other.
        label_height = _display_extent(label, renderer)[3] - _display_extent(label, renderer)[1]
        step = abs(
            axes.transData.inverted().transform((0, 0))[1] - axes.transData.inverted().transform((0, label_height))[1]
        )
        candidates: list[tuple[float, Literal["bottom", "top"]]] = [(y1, "bottom")] if y1 - step >= 0 else []
        candidates += [
            (max(y1, 0) + offset * step, "top") for offset in range(4) if max(y1, 0) + (offset + 1) * step <= y2
        ]
        candidates = candidates or [(max(y1, 0), "top")]
        for y, alignment in candidates:
            label.set_y(y)
            label.set_verticalalignment(alignment)
            if not _collides(_display_extent(label, renderer), placed):
                break
        else:
            label.set_y(candidates[0][0])
            label.set_verticalalignment(candidates[0][1])
        placed.append(_display_extent(label, renderer))


def _display_extent(text: Text, renderer: RendererBase) -> np.ndarray:
    """(x0, y0, x1, y1) in display pixels of a text including its background box."""
    text.update_bbox_position_size(renderer)
    patch = text.get_bbox_patch()
    extent = patch.get_window_extent(renderer) if patch is not None else text.get_window_extent(renderer)
    return np.array([extent.x0, extent.y0, extent.x1, extent.y1])


def _overlap_area(rectangle: np.ndarray, placed: list[np.ndarray], gap: float = 1.0) -> float:
    """Total area (display pixels) by which `rectangle`, grown by `gap`, overlaps the `placed` rectangles."""
    if not placed:
        return 0.0
    others = np.asarray(placed)
    width = np.minimum(rectangle[2] + gap, others[:, 2]) - np.maximum(rectangle[0] - gap, others[:, 0])
    height = np.minimum(rectangle[3] + gap, others[:, 3]) - np.maximum(rectangle[1] - gap, others[:, 1])
    return float((np.clip(width, 0, None) * np.clip(height, 0, None)).sum())


def _collides(rectangle: np.ndarray, placed: list[np.ndarray], gap: float = 1.0) -> bool:
    return any(
        rectangle[0] < other[2] + gap
        and other[0] < rectangle[2] + gap
        and rectangle[1] < other[3] + gap
        and other[1] < rectangle[3] + gap
        for other in placed
    )


def _rectangle(x: float, y: float, width: float, height: float, colour: Colour, line_width: float) -> Rectangle:
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), width, height, fill=False, edgecolor=colour, linewidth=line_width)


def _area(box: tuple[float, float, float, float]) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


# ---------------------------------------------------------------------------------------------- graph panel
def _draw_graph_panel(
    axes: Axes,
    canvas: FigureCanvasAgg,
    scene_graph: SceneGraph,
    relations: list[SceneRelation],
    colours: list[Colour],
    tags: list[str],
    show_scores: bool,
) -> None:
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_axis_off()
    if not scene_graph.objects:
        axes.text(0.5, 0.5, "no objects", ha="center", va="center", fontsize=14, color="grey")
        return
    if not relations:
        axes.text(0.5, 0.97, "no relations", ha="center", va="top", fontsize=11, color="grey")

    count = len(scene_graph.objects)
    font_size = 9 if count <= 15 else 7.5 if count <= 30 else 6.5
    # Create the node labels first (at the origin) to measure their size in axes units.
    nodes = [
        axes.text(
            0,
            0,
            tags[index],
            fontsize=font_size,
            ha="center",
            va="center",
            color=text_colour(colours[index]),
            bbox={"boxstyle": "round,pad=0.3", "facecolor": colours[index], "edgecolor": "none"},
            zorder=3,
        )
        for index in range(count)
    ]
    renderer = canvas.get_renderer()
    to_axes = axes.transAxes.inverted()
    half_sizes = []
    for node in nodes:
        # The rounded label box (text + pad) is what must not overlap; its size is known once positioned.
        left, bottom, right, top = _display_extent(node, renderer)
        (x0, y0), (x1, y1) = to_axes.transform([(left, bottom), (right, top)])
        half_sizes.append(((x1 - x0) / 2, (y1 - y0) / 2))
    half_sizes_array = np.asarray(half_sizes)
    positions = _layout(scene_graph, relations, half_sizes_array)
    for node, (x, y) in zip(nodes, positions):
        node.set_position((x, y))
    placed = [_display_extent(node, renderer) for node in nodes]  # edge labels must avoid these
    _draw_edges(axes, renderer, relations, positions, half_sizes_array, colours, placed, font_size, show_scores)


def _draw_edges(
    axes: Axes,
    renderer: RendererBase,
    relations: list[SceneRelation],
    positions: np.ndarray,
    half_sizes: np.ndarray,
    colours: list[Colour],
    placed: list[np.ndarray],
    font_size: float,
    show_scores: bool,
) -> None:
    """One arc per relation with its predicate label; several edges between the same two nodes get different
    curvatures. `placed` (display extents of the node labels) grows by each edge label."""
    edge_counts: dict[tuple[int, int], int] = {}
    edge_font = max(font_size - 1.5, 5.5)
    for relation in relations:
        pair = (min(relation.subject, relation.object), max(relation.subject, relation.object))
        repeat = edge_counts.get(pair, 0)
        edge_counts[pair] = repeat + 1
        start = positions[relation.subject]
        end = positions[relation.object]
        # Reverse edges bend to the other side automatically (arc3 is relative to the direction).
        curvature = 0.12 + 0.25 * repeat
        if relation.subject == relation.object:
            continue  # self-relations are excluded by the post-processing; nothing sensible to draw
        start_point = _clip_to_box(end, start, half_sizes[relation.subject])
        end_point = _clip_to_box(start, end, half_sizes[relation.object])
        colour = colours[relation.subject]
        _arrow(axes, start_point, end_point, curvature, colour)
        label = f"{relation.predicate_name} {relation.score:.2f}" if show_scores else relation.predicate_name
        text = axes.text(
            0,
            0,
            label,
            fontsize=edge_font,
            ha="center",
            va="center",
            color="#222222",
            zorder=2,
            transform=axes.transAxes,
            bbox={
                "boxstyle": "round,pad=0.15",
                "facecolor": "white",
                "edgecolor": colour,
                "linewidth": 0.8,
                "alpha": 0.85,
            },
        )
        _place_edge_label(text, start_point, end_point, curvature, renderer, placed)
        placed.append(_display_extent(text, renderer))


def _place_edge_label(
    text: Text,
    start_point: np.ndarray,
    end_point: np.ndarray,
    curvature: float,
    renderer: RendererBase,
    placed: list[np.ndarray],
) -> None:
    """Slide the label along its own arc to the first spot that hides no node and no other edge label (`placed`);
    if every spot is taken, use the one with the least overlap."""
    least_overlap, best_fraction = math.inf, 0.5
    for fraction in (0.5, 0.4, 0.6, 0.3, 0.7, 0.22, 0.78):
        text.set_position(tuple(_arc_point(start_point, end_point, curvature, fraction)))
        overlap = _overlap_area(_display_extent(text, renderer), placed)
        if overlap < least_overlap:
            least_overlap, best_fraction = overlap, fraction
        if overlap == 0:
            break
    text.set_position(tuple(_arc_point(start_point, end_point, curvature, best_fraction)))


def _layout(scene_graph: SceneGraph, relations: list[SceneRelation], half_sizes: np.ndarray) -> np.ndarray:
    """(n, 2) node centres in [0, 1] axes units.

    Objects with an edge: box centres -> bounded force layout -> stretched to the panel -> overlap removal. Objects
    without one (e.g. only in relations beyond `max_relations`) sit in rows along the bottom, so that they neither
    crowd the graph nor get thrown into the corners by the repulsion.
    """
    count = len(scene_graph.objects)
    height, width = scene_graph.image_size if all(scene_graph.image_size) else (1, 1)
    boxes = np.array([item.box for item in scene_graph.objects], dtype=np.float64).reshape(count, 4)
    box_centres = np.stack(
        [(boxes[:, 0] + boxes[:, 2]) / 2 / width, 1 - (boxes[:, 1] + boxes[:, 3]) / 2 / height], axis=1
    )  # (n, 2), y up as in the axes
    # Duplicate detections have (almost) the same centre; a tiny deterministic jitter separates them.
    start = np.clip(box_centres, 0, 1) + np.random.default_rng(0).uniform(-0.01, 0.01, size=(count, 2))
    edges = np.array([(r.subject, r.object) for r in relations if r.subject != r.object], dtype=np.int64)
    edges = edges.reshape(-1, 2)
    linked = np.zeros(count, dtype=bool)
    linked[edges.reshape(-1)] = True
    positions = np.zeros((count, 2))

    isolated = np.flatnonzero(~linked)
    band = 0.0  # height of the rows of unlinked objects at the bottom
    if len(isolated):
        positions[isolated], band = _rows(half_sizes[isolated])
        if not linked.any():
            positions[isolated, 1] += (1 - band) / 2  # nothing else to draw: centre the rows vertically
    linked_indices = np.flatnonzero(linked)
    if len(linked_indices):
        # Lay out in a unit square whose y axis is then squeezed into [band, 1]; label heights are scaled up by
        # the same factor so that the result is still free of overlaps.
        squeeze = 1.0 - band
        local_half_sizes = half_sizes[linked_indices] / np.array([1.0, squeeze])
        new_index = np.full(count, -1)
        new_index[linked_indices] = np.arange(len(linked_indices))
        local_start = start[linked_indices]
        local_start[:, 1] = np.clip((local_start[:, 1] - band) / squeeze, 0, 1)
        local = _force_layout(local_start, new_index[edges], local_half_sizes)
        local = _remove_overlaps(_fill_panel(local, local_half_sizes), local_half_sizes)
        positions[linked_indices, 0] = local[:, 0]
        positions[linked_indices, 1] = band + local[:, 1] * squeeze
    return positions


def _rows(half_sizes: np.ndarray, gap: float = 0.012) -> tuple[np.ndarray, float]:
    """Centres of labels set left to right in rows from the bottom up; returns (centres (m, 2), band height)."""
    row_height = 2 * half_sizes[:, 1].max() + gap
    centres = np.zeros((len(half_sizes), 2))
    x, row = gap, 0
    for index, (half_width, _) in enumerate(half_sizes):
        if x + 2 * half_width > 1 and x > gap:
            x, row = gap, row + 1
        centres[index] = (x + half_width, gap + row * row_height + row_height / 2)
        x += 2 * half_width + gap
    return centres, min(gap + (row + 1) * row_height + gap, 0.6)


def _fill_panel(positions: np.ndarray, half_sizes: np.ndarray, margin: float = 0.06) -> np.ndarray:
    """Stretch each axis (never shrink) so that the labels span the panel: small graphs get room for edge labels."""
    stretched = positions.copy()
    for axis in range(2):
        low_centre, high_centre = positions[:, axis].min(), positions[:, axis].max()
        if high_centre - low_centre < 1e-6:
            continue
        # centres may range over [margin + largest half size, 1 - margin - largest half size]
        room_low = margin + half_sizes[:, axis].max()
        room_high = 1 - room_low
        if room_high - room_low > high_centre - low_centre:
            scale = (room_high - room_low) / (high_centre - low_centre)
            stretched[:, axis] = room_low + (positions[:, axis] - low_centre) * scale
    return stretched


def _force_layout(start: np.ndarray, edges: np.ndarray, half_sizes: np.ndarray, iterations: int = 150) -> np.ndarray:
    """Fruchterman-Reingold layout confined to the unit square (Fruchterman & Reingold, 1991).

    Unlike `networkx.spring_layout` the frame is fixed, so isolated nodes cannot fly off and squeeze the connected
    part into a corner when the result is scaled to the panel. A weak pull towards the start (the box centre) keeps
    the picture's geometry where the edges allow it.
    """
    count = len(start)
    positions = start.copy()
    ideal_distance = 0.9 / math.sqrt(count)  # k of the paper for an area of ~0.8
    temperature = 0.1
    for _ in range(iterations):
        delta = positions[:, None, :] - positions[None, :, :]  # (n, n, 2), i minus j
        distance = np.maximum(np.linalg.norm(delta, axis=-1), 1e-3)  # (n, n)
        repulsion = (ideal_distance**2 / distance**2)[..., None] * delta  # k^2 / d along the unit vector
        repulsion[np.arange(count), np.arange(count)] = 0
        displacement = repulsion.sum(1)  # (n, 2)
        if len(edges):
            edge_delta = positions[edges[:, 0]] - positions[edges[:, 1]]  # (E, 2)
            edge_distance = np.maximum(np.linalg.norm(edge_delta, axis=-1, keepdims=True), 1e-3)
            attraction = edge_delta * edge_distance / ideal_distance  # d^2 / k along the unit vector
            np.add.at(displacement, edges[:, 0], -attraction)
            np.add.at(displacement, edges[:, 1], attraction)
        displacement += 0.1 * (start - positions)
        length = np.maximum(np.linalg.norm(displacement, axis=-1, keepdims=True), 1e-9)
        positions = positions + displacement / length * np.minimum(length, temperature)
        positions = np.clip(positions, half_sizes, 1 - half_sizes)
        temperature = max(temperature * 0.97, 0.003)
    return positions


def _remove_overlaps(positions: np.ndarray, half_sizes: np.ndarray, iterations: int = 300) -> np.ndarray:
    """Push overlapping label boxes apart along the axis of least overlap until none overlap (or give up)."""
    positions = positions.copy()
    count = len(positions)
    gap = 0.006
    for _ in range(iterations):
        moved = False
        for first in range(count):
            for second in range(first + 1, count):
                delta = positions[second] - positions[first]
                overlap = half_sizes[first] + half_sizes[second] + gap - np.abs(delta)
                if (overlap > 0).all():
                    axis = int(np.argmin(overlap))
                    direction = 1.0 if delta[axis] >= 0 else -1.0
                    if delta[axis] == 0:
                        direction = 1.0 if first % 2 else -1.0
                    positions[first, axis] -= direction * overlap[axis] / 2
                    positions[second, axis] += direction * overlap[axis] / 2
                    moved = True
        # keep everything on the canvas while pushing (overlaps are then resolved inside it)
        positions = np.clip(positions, half_sizes, 1 - half_sizes)
        if not moved:
            break
    return positions


def _clip_to_box(outside: np.ndarray, centre: np.ndarray, half_size: np.ndarray) -> np.ndarray:
    """Where the segment centre -> outside leaves the axis-aligned box of `half_size` around `centre`."""
    direction = np.asarray(outside, dtype=np.float64) - centre
    with np.errstate(divide="ignore"):
        scales = np.where(np.abs(direction) > 1e-12, half_size / np.abs(direction), np.inf)
    scale = min(float(scales.min()), 1.0)
    return centre + direction * scale


def _arc_point(start: np.ndarray, end: np.ndarray, curvature: float, fraction: float) -> np.ndarray:
    """Point at parameter `fraction` of matplotlib's `arc3,rad=curvature` quadratic Bezier from start to end
    (control point = midpoint + curvature x the segment rotated by -90 degrees). Computed in axes units, which is
    close enough because the graph panel is nearly square."""
    middle = (start + end) / 2
    delta = end - start
    control = middle + curvature * np.array([delta[1], -delta[0]])
    return (1 - fraction) ** 2 * start + 2 * (1 - fraction) * fraction * control + fraction**2 * end


def _arrow(axes: Axes, start: np.ndarray, end: np.ndarray, curvature: float, colour: Colour) -> None:
    from matplotlib.patches import FancyArrowPatch

    axes.add_patch(
        FancyArrowPatch(
            tuple(start),
            tuple(end),
            transform=axes.transAxes,
            arrowstyle="-|>",
            mutation_scale=10,
            connectionstyle=f"arc3,rad={curvature}",
            color=colour,
            linewidth=1.2,
            shrinkA=0,
            shrinkB=0,
            zorder=1,
            alpha=0.9,
            clip_on=False,
        )
    )
