"""SceneGraph <-> supervision.Detections."""

from __future__ import annotations

import numpy as np
import supervision as sv

from egtr.inference.scene_graph import SceneGraph, SceneObject, SceneRelation


def graph():
    objects = [
        SceneObject((1.0, 2.0, 30.0, 40.0), 3, "cup", 0.9, query=7),
        SceneObject((50.0, 5.0, 90.0, 60.0), 1, "table", 0.8, query=2),
        SceneObject((10.0, 60.0, 20.0, 70.0), 0, "man", 0.6, query=4),
    ]
    relations = [SceneRelation(0, 1, 2, "on", 0.5, 0.7), SceneRelation(2, 0, 0, "holding", 0.3, 0.6)]
    return SceneGraph(objects, relations, image_size=(100, 120), image_path="frame.png")


def test_round_trip_keeps_everything():
    original = graph()
    detections = original.to_detections()
    assert isinstance(detections, sv.Detections) and len(detections) == 3
    np.testing.assert_allclose(detections.xyxy[1], [50, 5, 90, 60])
    assert detections.class_id.tolist() == [3, 1, 0] and list(detections.data["class_name"]) == ["cup", "table", "man"]
    back = SceneGraph.from_detections(detections)
    assert back.to_dict() == original.to_dict()


def test_reordered_or_filtered_rows_keep_their_relations():
    detections = graph().to_detections()
    reordered = detections[np.array([2, 0])]  # drop the table, swap the others (as a tracker may)
    back = SceneGraph.from_detections(reordered)
    assert [item.label_name for item in back.objects] == ["man", "cup"]
    assert [(r.subject, r.object, r.predicate_name) for r in back.relations] == [(0, 1, "holding")]


def test_detections_from_elsewhere():
    detections = sv.Detections(xyxy=np.array([[0, 0, 5, 5.0]]), class_id=np.array([1]))
    back = SceneGraph.from_detections(detections, class_names=["a", "b"], image_size=(10, 10))
    assert back.objects[0].label_name == "b" and back.objects[0].score == 1.0 and back.relations == []
    assert back.image_size == (10, 10)
