"""JSON Schemas of the files and answers egtr produces (package data; also in docs/)."""

from __future__ import annotations

import json
from importlib import resources

from egtr.fileio import JsonObject

SCENE_GRAPH_SCHEMA = "scene-graph-v1.schema.json"


def scene_graph_schema() -> JsonObject:
    """The JSON Schema of `SceneGraph.to_dict()`: `egtr predict`'s JSON files and `egtr serve`'s answers."""
    return json.loads(resources.files(__package__).joinpath(SCENE_GRAPH_SCHEMA).read_text(encoding="utf-8"))
