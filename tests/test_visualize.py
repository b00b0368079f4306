"""Scene graph drawings: 0, 1 and 30 objects, PNG and SVG, and the label layout stays free of overlaps."""

from __future__ import annotations

import xml.dom.minidom

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("matplotlib")

from egtr.inference.scene_graph import SceneGraph, SceneObject, SceneRelation
from egtr.inference.visualize import _layout, draw_scene_graph, object_colours, text_colour

NAMES = ["person", "helmet", "flag", "shirt", "hand", "arm", "face", "hair"]
PREDICATES = ["wearing", "has", "on", "holding", "near"]


def random_scene_graph(num_objects: int, num_relations: int, seed: int = 0, size_hw=(300, 400)) -> SceneGraph:
    rng = np.random.default_rng(seed)
    height, width = size_hw
    objects = []
    for index in range(num_objects):
        x1, y1 = rng.uniform(0, width * 0.8), rng.uniform(0, height * 0.8)
        x2, y2 = (
            min(x1 + rng.uniform(10, width * 0.4), width),
            min(y1 + rng.uniform(10, height * 0.4), height),
        )
        label = int(rng.integers(len(NAMES)))
        objects.append(SceneObject((x1, y1, x2, y2), label, NAMES[label], float(rng.uniform(0.2, 1.0)), index))
    relations = []
    for rank in range(num_relations if num_objects > 1 else 0):
        subject, obj = rng.choice(num_objects, 2, replace=False)
        predicate = int(rng.integers(len(PREDICATES)))
        relations.append(SceneRelation(int(subject), int(obj), predicate, PREDICATES[predicate], 1 - rank / 100, 0.5))
    return SceneGraph(objects, relations, size_hw, None)


@pytest.mark.parametrize("num_objects, num_relations", [(0, 0), (1, 0), (30, 45)])
@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_draw_writes_png_and_svg(tmp_path, num_objects, num_relations, suffix):
    graph = random_scene_graph(num_objects, num_relations)
    image = np.random.default_rng(1).integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    path = tmp_path / f"graph{suffix}"
    figure = graph.draw(path, image=image)
    assert path.stat().st_size > 1000
    if suffix == ".png":
        with Image.open(path) as written:
            # side by side: much wider than tall, at the requested dpi
            assert written.width > 1.5 * written.height
    else:
        document = xml.dom.minidom.parse(str(path))  # well-formed XML
        assert document.documentElement.tagName == "svg"
        # matplotlib writes text as glyph paths, each preceded by a comment holding the string
        svg_text = path.read_text()
        assert all(f"<!-- {index} {item.label_name} -->" in svg_text for index, item in enumerate(graph.objects))
    # one axes for the image, one for the graph
    assert len(figure.axes) == 2


def test_draw_without_image_uses_blank_canvas(tmp_path):
    graph = random_scene_graph(3, 2)
    figure = draw_scene_graph(graph, image=None, path=tmp_path / "blank.png")
    assert (tmp_path / "blank.png").is_file()
    image_axes = figure.axes[0]
    assert image_axes.get_images()[0].get_array().shape[2] == 3


def test_draw_limits_relations_and_says_so():
    graph = random_scene_graph(10, 30)
    figure = draw_scene_graph(graph, max_relations=5)
    assert "top 5 shown" in figure._suptitle.get_text()
    graph_axes = figure.axes[1]
    assert len(graph_axes.patches) == 5  # one arrow per drawn relation


def test_box_and_node_share_colour():
    graph = random_scene_graph(4, 3)
    figure = draw_scene_graph(graph, max_relations=None)
    image_axes, graph_axes = figure.axes
    box_colours = {tuple(np.round(patch.get_edgecolor()[:3], 4)) for patch in image_axes.patches}
    node_colours = {
        tuple(np.round(text.get_bbox_patch().get_facecolor()[:3], 4))
        for text in graph_axes.texts
        if text.get_text().split(" ")[0].isdigit()
    }
    assert len(box_colours) == 4
    assert node_colours == box_colours


def test_layout_of_30_objects_has_no_overlapping_labels():
    graph = random_scene_graph(30, 60, seed=3)
    half_sizes = np.tile([0.06, 0.018], (30, 1))  # typical label size in axes units
    positions = _layout(graph, graph.relations, half_sizes)
    assert positions.shape == (30, 2)
    assert (positions - half_sizes >= -1e-9).all() and (positions + half_sizes <= 1 + 1e-9).all()
    for first in range(30):
        for second in range(first + 1, 30):
            gap = np.abs(positions[first] - positions[second]) - half_sizes[first] - half_sizes[second]
            assert (gap > -1e-6).any(), f"labels {first} and {second} overlap"


def test_colours_are_distinct_and_text_readable():
    colours = object_colours(40)
    assert len({tuple(np.round(colour, 3)) for colour in colours}) == 40
    assert text_colour((1.0, 1.0, 0.9)) == "black"
    assert text_colour((0.1, 0.1, 0.4)) == "white"


def test_objects_outside_the_drawn_relations_sit_in_a_bottom_row():
    graph = random_scene_graph(12, 0)
    relations = [SceneRelation(0, 1, 0, "on", 0.9, 0.9), SceneRelation(2, 1, 1, "has", 0.8, 0.8)]
    half_sizes = np.tile([0.05, 0.02], (12, 1))
    positions = _layout(graph, relations, half_sizes)
    linked, unlinked = positions[:3], positions[3:]
    assert unlinked[:, 1].max() + 0.02 <= linked[:, 1].min() - 0.02  # below every linked label, no overlap
    assert len({round(y, 6) for y in unlinked[:, 1]}) <= 2  # in one or two rows
