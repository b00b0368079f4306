"""SceneGraph: JSON round trip, validation, networkx view and selection from ranked predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from egtr.inference.scene_graph import SceneGraph, SceneObject, SceneRelation, scene_graph_from_arrays


def small_graph() -> SceneGraph:
    objects = [
        SceneObject((10.0, 20.0, 110.0, 220.0), 0, "person", 0.9, 4),
        SceneObject((30.5, 40.0, 60.0, 80.25), 3, "hat", 0.7, 9),
        SceneObject((0.0, 150.0, 200.0, 240.0), 5, "street", 0.4, 11),
    ]
    relations = [
        SceneRelation(0, 1, 2, "wearing", 0.5, 0.8),
        SceneRelation(0, 2, 1, "on", 0.2, 0.55),
        SceneRelation(0, 1, 0, "has", 0.1, 0.3),  # a second predicate on the same pair (no graph constraint)
    ]
    return SceneGraph(objects, relations, (240, 320), "street.jpg")


def test_json_round_trip(tmp_path):
    graph = small_graph()
    text = graph.to_json(tmp_path / "graph.json")
    assert SceneGraph.from_json(text) == graph
    assert SceneGraph.from_json(tmp_path / "graph.json") == graph
    assert SceneGraph.from_json(str(tmp_path / "graph.json")) == graph
    values = json.loads(text)
    assert values["image_size"] == {"height": 240, "width": 320}
    assert values["objects"][1]["box"] == [30.5, 40.0, 60.0, 80.25]
    assert values["relations"][0] == {
        "subject": 0,
        "object": 1,
        "predicate": 2,
        "predicate_name": "wearing",
        "score": 0.5,
        "predicate_score": 0.8,
    }


def test_from_json_names_the_problem(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"objects": []}')
    with pytest.raises(ValueError, match=r"broken\.json.*image_size"):
        SceneGraph.from_json(broken)
    with pytest.raises(ValueError, match="not valid JSON"):
        SceneGraph.from_json("{not json")


def test_relation_indices_are_checked():
    with pytest.raises(ValueError, match="relation 0: object index 3 is out of range for 2 objects"):
        SceneGraph(small_graph().objects[:2], [SceneRelation(0, 3, 0, "on", 0.1, 0.1)], (10, 10))


def test_triplets_and_networkx():
    graph = small_graph()
    assert graph.triplets() == [
        ("person", "wearing", "hat"),
        ("person", "on", "street"),
        ("person", "has", "hat"),
    ]
    nx_graph = graph.to_networkx()
    assert nx_graph.number_of_nodes() == 3
    assert nx_graph.number_of_edges() == 3
    assert nx_graph.nodes[1]["label_name"] == "hat"
    assert sorted(data["predicate_name"] for _, _, data in nx_graph.edges(0, data=True)) == [
        "has",
        "on",
        "wearing",
    ]
    assert [data["rank"] for data in nx_graph.get_edge_data(0, 1).values()] == [0, 2]


def test_scene_graph_from_arrays_selects_and_reindexes():
    num_queries = 6
    boxes = np.arange(num_queries * 4, dtype=np.float32).reshape(num_queries, 4)
    labels = np.array([0, 1, 2, 0, 1, 2])
    scores = np.array([0.9, 0.1, 0.8, 0.95, 0.3, 0.2], dtype=np.float32)
    relations = np.array([[5, 2, 1], [2, 0, 0], [0, 5, 1], [1, 4, 0]])
    relation_scores = np.array([0.6, 0.4, 0.3, 0.01])
    predicate_scores = np.array([0.9, 0.8, 0.7, 0.6])
    common = {"class_names": ["a", "b", "c"], "predicate_names": ["on", "has"], "image_size": (50, 60)}

    graph = scene_graph_from_arrays(
        boxes, labels, scores, relations, relation_scores, predicate_scores, top_k=2, **common
    )
    # top-2 relations use queries 5, 2, 0 -> objects in query order 0, 2, 5
    assert [item.query for item in graph.objects] == [0, 2, 5]
    assert [(r.subject, r.object, r.predicate_name) for r in graph.relations] == [(2, 1, "has"), (1, 0, "on")]
    assert graph.objects[2].box == tuple(boxes[5].tolist()) and graph.objects[2].label_name == "c"

    graph = scene_graph_from_arrays(
        boxes,
        labels,
        scores,
        relations,
        relation_scores,
        predicate_scores,
        score_threshold=0.35,
        object_threshold=0.9,
        **common,
    )
    assert len(graph.relations) == 2
    assert [item.query for item in graph.objects] == [0, 2, 3, 5]  # query 3 kept for its own score

    empty = scene_graph_from_arrays(
        boxes, labels, scores, relations, relation_scores, predicate_scores, score_threshold=0.99, **common
    )
    assert empty.objects == [] and empty.relations == []
