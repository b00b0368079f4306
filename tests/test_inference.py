"""Predictor: the Python inference API on a real photo with the reference weights (tiny official artifact)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import egtr
from egtr.data.errors import DataError
from egtr.inference import Predictor, SceneGraph, to_pil_image

ASTRONAUT = Path(egtr.__file__).parent / "assets" / "astronaut.jpg"
COFFEE = Path(egtr.__file__).parent / "assets" / "coffee.jpg"
# Small input sizes keep the forward pass of the reference model well under a second on 2 CPU cores.
FAST = {"device": "cpu", "image_size": 160, "max_size": 240}


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
    assert [r.score for r in together[0].relations] == pytest.approx(
        [r.score for r in one_by_one[0].relations], rel=1e-4
    )


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
