"""SceneGraph (serialisation, networkx view, selection from ranked predictions) and the Predictor."""

from __future__ import annotations

import json

import numpy as np
import pytest

from egtr.inference import SceneGraph, SceneObject, SceneRelation, scene_graph_from_arrays


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
        "subject": 0, "object": 1, "predicate": 2, "predicate_name": "wearing", "score": 0.5, "predicate_score": 0.8
    }  # fmt: skip


def test_from_json_names_the_problem(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"objects": []}')
    with pytest.raises(ValueError, match="broken.json.*image_size"):
        SceneGraph.from_json(broken)
    with pytest.raises(ValueError, match="not valid JSON"):
        SceneGraph.from_json("{not json")


def test_relation_indices_are_checked():
    with pytest.raises(ValueError, match="relation 0: object index 3 is out of range for 2 objects"):
        SceneGraph(small_graph().objects[:2], [SceneRelation(0, 3, 0, "on", 0.1, 0.1)], (10, 10))


def test_triplets_and_networkx():
    graph = small_graph()
    assert graph.triplets() == [("person", "wearing", "hat"), ("person", "on", "street"), ("person", "has", "hat")]
    nx_graph = graph.to_networkx()
    assert nx_graph.number_of_nodes() == 3
    assert nx_graph.number_of_edges() == 3
    assert nx_graph.nodes[1]["label_name"] == "hat"
    assert sorted(data["predicate_name"] for _, _, data in nx_graph.edges(0, data=True)) == ["has", "on", "wearing"]
    assert [data["rank"] for data in nx_graph.get_edge_data(0, 1).values()] == [0, 2]


def test_scene_graph_from_arrays_selects_and_reindexes():
    num_queries = 6
    boxes = np.arange(num_queries * 4, dtype=np.float32).reshape(num_queries, 4)
    labels = np.array([0, 1, 2, 0, 1, 2])
    scores = np.array([0.9, 0.1, 0.8, 0.95, 0.3, 0.2], dtype=np.float32)
    relations = np.array([[5, 2, 1], [2, 0, 0], [0, 5, 1], [1, 4, 0]])
    relation_scores = np.array([0.6, 0.4, 0.3, 0.01])
    predicate_scores = np.array([0.9, 0.8, 0.7, 0.6])
    common = dict(class_names=["a", "b", "c"], predicate_names=["on", "has"], image_size=(50, 60))

    graph = scene_graph_from_arrays(boxes, labels, scores, relations, relation_scores, predicate_scores,
                                    top_k=2, **common)  # fmt: skip
    # top-2 relations use queries 5, 2, 0 -> objects in query order 0, 2, 5
    assert [item.query for item in graph.objects] == [0, 2, 5]
    assert [(r.subject, r.object, r.predicate_name) for r in graph.relations] == [(2, 1, "has"), (1, 0, "on")]
    assert graph.objects[2].box == tuple(boxes[5].tolist()) and graph.objects[2].label_name == "c"

    graph = scene_graph_from_arrays(boxes, labels, scores, relations, relation_scores, predicate_scores,
                                    score_threshold=0.35, object_threshold=0.9, **common)  # fmt: skip
    assert len(graph.relations) == 2
    assert [item.query for item in graph.objects] == [0, 2, 3, 5]  # query 3 kept for its own score

    empty = scene_graph_from_arrays(boxes, labels, scores, relations, relation_scores, predicate_scores,
                                    score_threshold=0.99, **common)  # fmt: skip
    assert empty.objects == [] and empty.relations == []


# ---------------------------------------------------------------------------------------------- Predictor
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from PIL import Image  # noqa: E402

import egtr  # noqa: E402
from egtr.data.errors import DataError  # noqa: E402
from egtr.inference import Predictor, to_pil_image  # noqa: E402

ASTRONAUT = Path(egtr.__file__).parent / "assets" / "astronaut.jpg"
COFFEE = Path(egtr.__file__).parent / "assets" / "coffee.jpg"
# Small input sizes keep the forward pass of the reference model well under a second on 2 CPU cores.
FAST = dict(device="cpu", image_size=160, max_size=240)


@pytest.fixture(scope="module")
def predictor(reference_dir) -> Predictor:
    return Predictor.from_pretrained(reference_dir / "artifact", top_k=15, **FAST)


def assert_well_formed(graph: SceneGraph, size_hw: tuple[int, int], top_k: int) -> None:
    height, width = size_hw
    assert graph.image_size == size_hw
    assert 0 < len(graph.relations) <= top_k
    used = {index for r in graph.relations for index in (r.subject, r.object)}
    assert used == set(range(len(graph.objects)))  # only objects of kept relations, re-indexed densely
    scores = [r.score for r in graph.relations]
    assert scores == sorted(scores, reverse=True)
    for relation in graph.relations:
        assert relation.subject != relation.object
        assert 0 <= relation.predicate < 7 and relation.predicate_name == f"predicate_{relation.predicate}"
        assert 0 < relation.score <= relation.predicate_score <= 1
    for item in graph.objects:
        x1, y1, x2, y2 = item.box
        assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
        assert 0 <= item.label < 12 and item.label_name == f"class_{item.label}"
        assert 0 < item.score <= 1


def test_predictor_on_a_real_photo(predictor):
    graph = predictor(ASTRONAUT)
    assert_well_formed(graph, (512, 512), top_k=15)
    assert graph.image_path == str(ASTRONAUT)
    assert SceneGraph.from_json(graph.to_json()) == graph


def test_predictor_matches_the_paper_ranking(predictor):
    """The best triplet is max over i != j, p of rel[i,j,p] * conn[i,j] * s_i * s_j (reference §5)."""
    prepared = predictor.prepare(ASTRONAUT)
    output = predictor.forward([prepared])
    object_scores = output.logits[0].softmax(-1).max(-1).values  # (N,)
    relation = output.pred_rel[0] * output.pred_connectivity[0]  # (N, N, R)
    triplet = relation * (object_scores[:, None] * object_scores[None, :])[..., None]
    triplet[torch.arange(30), torch.arange(30)] = 0
    best = torch.nonzero(triplet == triplet.max())[0].tolist()
    top = predictor.postprocess(output, [prepared])[0]
    first = top.relations[0]
    assert top.objects[first.subject].query == best[0]
    assert top.objects[first.object].query == best[1]
    assert first.predicate == best[2]
    assert first.score == pytest.approx(float(triplet.max()), rel=1e-5)


def test_predictor_accepts_paths_pil_arrays_and_tensors(predictor):
    from egtr.data.images import load_image

    picture = load_image(ASTRONAUT)
    array = np.asarray(picture)
    expected = predictor(ASTRONAUT).triplets()
    assert predictor(picture).triplets() == expected
    assert predictor(array).triplets() == expected
    assert predictor(array.astype(np.float32) / 255).triplets() == expected
    assert predictor(torch.from_numpy(array.copy()).permute(2, 0, 1)).triplets() == expected
    assert predictor(picture).image_path is None


def test_predictor_batches_lists(reference_dir):
    single = Predictor.from_pretrained(reference_dir / "artifact", **FAST)
    batched = Predictor.from_pretrained(reference_dir / "artifact", batch_size=2, **FAST)
    images = [ASTRONAUT, ASTRONAUT, COFFEE]
    one_by_one = single(images)
    together = batched(images)
    assert [graph.image_path for graph in together] == [str(path) for path in images]
    assert together[2].image_size == (400, 600)
    # Same-size images in one padded batch give the same graph as one at a time.
    assert together[0].triplets() == together[1].triplets() == one_by_one[0].triplets()
    assert [r.score for r in together[0].relations] == pytest.approx([r.score for r in one_by_one[0].relations], rel=1e-4)


def test_prediction_options(predictor):
    constrained = predictor(ASTRONAUT, top_k=30)
    pairs = [(r.subject, r.object) for r in constrained.relations]
    assert len(pairs) == len(set(pairs)) == 30

    free = predictor(ASTRONAUT, top_k=30, graph_constraint=False)
    assert free.relations[0].score == pytest.approx(constrained.relations[0].score)
    assert all(a.score >= b.score for a, b in zip(free.relations, constrained.relations))

    threshold = constrained.relations[5].score
    cut = predictor(ASTRONAUT, top_k=30, score_threshold=threshold)
    assert len(cut.relations) == 6

    with_objects = predictor(ASTRONAUT, top_k=1, object_threshold=0.0)
    assert len(with_objects.relations) == 1 and len(with_objects.objects) == 30  # every query kept

    with pytest.raises(TypeError, match="top_kk"):
        predictor(ASTRONAUT, top_kk=3)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_runs(reference_dir, dtype):
    predictor = Predictor.from_pretrained(reference_dir / "artifact", dtype=dtype, top_k=10, **FAST)
    assert predictor.dtype == getattr(torch, dtype)
    assert_well_formed(predictor(COFFEE), (400, 600), top_k=10)


def test_unreadable_image_names_the_file(predictor, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        predictor(broken)
    with pytest.raises(DataError, match="missing.png"):
        predictor(tmp_path / "missing.png")


def test_to_pil_image_rejects_bad_arrays():
    assert to_pil_image(np.zeros((4, 5), dtype=np.uint8)).size == (5, 4)
    assert to_pil_image(np.zeros((4, 5, 4), dtype=np.uint8)).mode == "RGB"
    with pytest.raises(ValueError, match=r"\(4, 5, 2\)"):
        to_pil_image(np.zeros((4, 5, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_pil_image(np.full((4, 5, 3), 3.0))
    assert isinstance(to_pil_image(Image.new("L", (3, 2))), Image.Image)


def test_bad_device_and_dtype(reference_dir):
    from egtr.inference import resolve_device, resolve_dtype

    assert resolve_dtype("bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="int8"):
        resolve_dtype("int8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    assert resolve_device("auto").type in ("cpu", "cuda")
