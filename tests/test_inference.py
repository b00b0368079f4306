"""Predictor: the Python inference API on a real photo with the reference weights (tiny official artifact)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import egtr
from egtr import EGTR
from egtr.errors import DataError
from egtr.images import load_image
from egtr.inference import Predictor
from egtr.inference.scene_graph import SceneGraph
from egtr.preprocessing import IMAGENET_MEAN, IMAGENET_STD, PREPROCESSOR_NAME, PreprocessorConfig

ASTRONAUT = Path(egtr.__file__).parent / "assets" / "astronaut.jpg"
COFFEE = Path(egtr.__file__).parent / "assets" / "coffee.jpg"
# Small input sizes keep the forward pass of the reference model well under a second on 2 CPU cores.
FAST = {"device": "cpu", "size": 160, "max_size": 240}


@pytest.fixture(scope="module")
def predictor(reference_dir) -> Predictor:
    return Predictor.from_pretrained(reference_dir / "artifact", top_k=15, **FAST)


def assert_well_formed(graph: SceneGraph, size_hw: tuple[int, int], top_k: int, sizes) -> None:
    """`sizes`: the fixture's `ReferenceSizes` (class and predicate counts)."""
    height, width = size_hw
    assert graph.image_size == size_hw
    assert 0 < len(graph.relations) <= top_k
    used = {index for r in graph.relations for index in (r.subject, r.object)}
    assert used == set(range(len(graph.objects)))  # only objects of kept relations, re-indexed densely
    scores = [r.score for r in graph.relations]
    assert scores == sorted(scores, reverse=True)
    for relation in graph.relations:
        assert relation.subject != relation.object
        assert (
            0 <= relation.predicate < sizes.num_rel_labels
            and relation.predicate_name == f"predicate_{relation.predicate}"
        )
        assert 0 < relation.score <= relation.predicate_score <= 1
    for item in graph.objects:
        x1, y1, x2, y2 = item.box
        assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
        assert 0 <= item.label < sizes.num_labels and item.label_name == f"class_{item.label}"
        assert 0 < item.score <= 1


def test_predictor_on_a_real_photo(predictor, reference_sizes):
    graph = predictor(ASTRONAUT)
    assert_well_formed(graph, (512, 512), top_k=15, sizes=reference_sizes)
    assert graph.image_path == str(ASTRONAUT)
    assert SceneGraph.from_json(graph.to_json()) == graph


def test_predictor_matches_the_paper_ranking(predictor):
    """The best triplet is max over i != j, p of rel[i,j,p] * conn[i,j] * s_i * s_j (reference §5)."""
    prepared = predictor.prepare(ASTRONAUT)
    output = predictor.forward([prepared])
    object_scores = output.logits[0].softmax(-1).max(-1).values  # (N,)
    relation = output.pred_rel[0] * output.pred_connectivity[0]  # (N, N, R)
    triplet = relation * (object_scores[:, None] * object_scores[None, :])[..., None]
    diagonal = torch.arange(triplet.shape[0])
    triplet[diagonal, diagonal] = 0
    best = torch.nonzero(triplet == triplet.max())[0].tolist()
    top = predictor.postprocess(output, [prepared])[0]
    first = top.relations[0]
    assert top.objects[first.subject].query == best[0]
    assert top.objects[first.object].query == best[1]
    assert first.predicate == best[2]
    assert first.score == pytest.approx(float(triplet.max()), rel=1e-5)


def test_predictor_accepts_paths_pil_arrays_and_tensors(predictor):
    from egtr.images import load_image

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


def test_prediction_options(predictor, reference_sizes):
    constrained = predictor(ASTRONAUT, top_k=20)
    pairs = [(r.subject, r.object) for r in constrained.relations]
    assert len(pairs) == len(set(pairs)) == 20

    free = predictor(ASTRONAUT, top_k=20, graph_constraint=False)
    assert free.relations[0].score == pytest.approx(constrained.relations[0].score)
    assert all(a.score >= b.score for a, b in zip(free.relations, constrained.relations))

    threshold = constrained.relations[5].score
    cut = predictor(ASTRONAUT, top_k=20, score_threshold=threshold)
    assert len(cut.relations) == 6

    with_objects = predictor(ASTRONAUT, top_k=1, object_threshold=0.0)
    assert len(with_objects.relations) == 1 and len(with_objects.objects) == reference_sizes.num_queries  # all kept

    with pytest.raises(TypeError, match="top_kk"):
        predictor(ASTRONAUT, top_kk=3)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_runs(reference_dir, reference_sizes, dtype):
    predictor = Predictor.from_pretrained(reference_dir / "artifact", dtype=dtype, top_k=10, **FAST)
    assert predictor.dtype == getattr(torch, dtype)
    assert_well_formed(predictor(COFFEE), (400, 600), top_k=10, sizes=reference_sizes)


# ---------------------------------------------------------------------------------------------- preprocessing
RECORDED = PreprocessorConfig(160, 240, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))


@pytest.fixture(scope="module")
def model_with_preprocessing(reference_dir, tmp_path_factory) -> Path:
    """The reference weights in our layout, with a `preprocessor_config.json` of 160 / 240 px."""
    directory = tmp_path_factory.mktemp("recorded")
    EGTR.from_pretrained(reference_dir / "artifact").save_pretrained(directory, preprocessor=RECORDED)
    return directory


def test_predictor_takes_the_preprocessing_of_the_model_directory(model_with_preprocessing):
    predictor = Predictor.from_pretrained(model_with_preprocessing, device="cpu")
    assert predictor.preprocessor == RECORDED
    prepared = predictor.prepare(COFFEE)  # 400 x 600 -> shorter side 160
    assert tuple(prepared.pixel_values.shape) == (3, 160, 240)
    resized = np.asarray(load_image(COFFEE).resize((240, 160), Image.BILINEAR), np.float32) / 255
    expected = (resized - np.array(RECORDED.image_mean)) / np.array(RECORDED.image_std)
    np.testing.assert_allclose(prepared.pixel_values.permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_explicit_sizes_win_over_the_model_directory(model_with_preprocessing):
    predictor = Predictor.from_pretrained(model_with_preprocessing, device="cpu", size=96)
    assert (predictor.preprocessor.shortest_edge, predictor.preprocessor.longest_edge) == (
        96,
        240,
    )  # the size not given still comes from the file
    assert tuple(predictor.prepare(COFFEE).pixel_values.shape) == (3, 96, 144)


def test_official_artifact_keeps_the_paper_preprocessing(reference_dir):
    predictor = Predictor.from_pretrained(reference_dir / "artifact", device="cpu")
    assert predictor.preprocessor == PreprocessorConfig(800, 1333, IMAGENET_MEAN, IMAGENET_STD)


def test_cli_predict_uses_the_recorded_size_unless_given(model_with_preprocessing, tmp_path, monkeypatch):
    from egtr.cli import main

    shapes = []
    original_prepare = Predictor.prepare

    def recording_prepare(self, image):
        prepared = original_prepare(self, image)
        shapes.append(tuple(prepared.pixel_values.shape))
        return prepared

    monkeypatch.setattr(Predictor, "prepare", recording_prepare)
    arguments = [
        "predict",
        str(COFFEE),
        "--model",
        str(model_with_preprocessing),
        "--out",
        str(tmp_path),
        "--device",
        "cpu",
        "--no-draw",
        "--no-progress",
    ]
    assert main(arguments) == 0
    assert main([*arguments, "--size", "96"]) == 0
    assert shapes == [(3, 160, 240), (3, 96, 144)]


def test_cli_predict_reports_a_malformed_preprocessor_config(model_with_preprocessing, tmp_path, capsys):
    from egtr.cli import main

    broken = tmp_path / "model"
    shutil.copytree(model_with_preprocessing, broken)
    values = json.loads((broken / PREPROCESSOR_NAME).read_text())
    values["size"] = {"shortest_edge": 160}
    (broken / PREPROCESSOR_NAME).write_text(json.dumps(values))
    code = main(["predict", str(COFFEE), "--model", str(broken), "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 2
    error = capsys.readouterr().err
    assert str(broken / PREPROCESSOR_NAME) in error and "field 'size'" in error


def test_unreadable_image_names_the_file(predictor, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg"):
        predictor(broken)
    with pytest.raises(DataError, match=r"missing\.png"):
        predictor(tmp_path / "missing.png")


def test_load_image_rejects_bad_arrays():
    assert load_image(np.zeros((4, 5), dtype=np.uint8)).size == (5, 4)
    assert load_image(np.zeros((4, 5, 4), dtype=np.uint8)).mode == "RGB"
    with pytest.raises(DataError, match=r"\(4, 5, 2\)"):
        load_image(np.zeros((4, 5, 2), dtype=np.uint8))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        load_image(np.full((4, 5, 3), 3.0))
    assert isinstance(load_image(Image.new("L", (3, 2))), Image.Image)


def test_bad_device_and_dtype(reference_dir):
    from egtr.runtime import resolve_device, resolve_dtype

    assert resolve_dtype("bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="int8"):
        resolve_dtype("int8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    assert resolve_device("auto").type in ("cpu", "cuda")


# ---------------------------------------------------------------------------------------------- many files / CLI
def test_expand_image_paths(tmp_path):
    from egtr.inference.files import expand_image_paths

    (tmp_path / "sub").mkdir()
    for name in ("b.jpg", "a.PNG", "notes.txt", "sub/c.jpeg"):
        (tmp_path / name).write_bytes(b"x")
    paths, unmatched = expand_image_paths([tmp_path, tmp_path / "notes.txt", str(tmp_path / "*.jpg"), "nothing/*.png"])
    # folder: image suffixes only, sorted; an explicit file is taken whatever its suffix; duplicates dropped
    assert paths == [tmp_path / "a.PNG", tmp_path / "b.jpg", tmp_path / "notes.txt"]
    assert unmatched == ["nothing/*.png"]
    recursive, _ = expand_image_paths([tmp_path], recursive=True)
    assert tmp_path / "sub" / "c.jpeg" in recursive


def test_output_names_are_unique():
    from egtr.inference.files import _unique_stems

    names = _unique_stems([Path("x/photo.jpg"), Path("y/photo.jpg"), Path("y/photo.png"), Path("z/other.jpg")])
    assert names[Path("z/other.jpg")] == "other"
    assert len(set(names.values())) == 4
    assert names[Path("x/photo.jpg")] == "x_photo_jpg"


def test_cli_predict_processes_a_folder_and_reports_the_corrupt_file(reference_dir, tmp_path, capsys):
    from egtr.cli import main

    images = tmp_path / "images"
    images.mkdir()
    (images / "astronaut.jpg").write_bytes(ASTRONAUT.read_bytes())
    (images / "coffee.jpg").write_bytes(COFFEE.read_bytes())
    (images / "corrupt.jpg").write_bytes(COFFEE.read_bytes()[:2000])  # truncated JPEG
    (images / "readme.txt").write_text("not an image, ignored in a folder")
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(images),
            "--model",
            str(reference_dir / "artifact"),
            "--out",
            str(out),
            "--size",
            "160",
            "--max-size",
            "240",
            "--top-k",
            "8",
            "--device",
            "cpu",
            "--batch-size",
            "2",
            "--format",
            "png",
            "svg",
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "2 of 3 images processed" in captured.out
    assert "corrupt.jpg" in captured.err and "truncated" in captured.err
    assert sorted(path.name for path in out.iterdir()) == [
        "astronaut.json",
        "astronaut.png",
        "astronaut.svg",
        "coffee.json",
        "coffee.png",
        "coffee.svg",
    ]
    graph = SceneGraph.from_json(out / "coffee.json")
    assert graph.image_size == (400, 600) and 0 < len(graph.relations) <= 8
    assert graph.image_path == str(images / "coffee.jpg")
    with Image.open(out / "astronaut.png") as drawing:
        assert drawing.width > drawing.height


def test_cli_predict_all_good_exits_zero(reference_dir, tmp_path, capsys):
    from egtr.cli import main

    code = main(
        [
            "predict",
            str(ASTRONAUT),
            "--model",
            str(reference_dir / "artifact"),
            "--out",
            str(tmp_path),
            "--size",
            "160",
            "--max-size",
            "240",
            "--device",
            "cpu",
            "--no-draw",
            "--no-graph-constraint",
            "--top-k",
            "40",
            "--no-progress",
        ]
    )
    assert code == 0
    graph = SceneGraph.from_json(tmp_path / "astronaut.json")
    pairs = [(r.subject, r.object) for r in graph.relations]
    assert len(graph.relations) == 40 and len(set(pairs)) < 40  # some pair carries several predicates
    assert not (tmp_path / "astronaut.png").exists()
    assert main(["predict", str(tmp_path / "none*.jpg"), "--model", "x", "--out", str(tmp_path)]) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when CUDA is missing")
def test_cli_predict_reports_a_missing_device(reference_dir, tmp_path, capsys):
    from egtr.cli import main

    arguments = [
        "predict",
        str(ASTRONAUT),
        "--model",
        str(reference_dir / "artifact"),
        "--out",
        str(tmp_path),
    ]
    assert main([*arguments, "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_decoding_ahead_keeps_order_and_reports_failures(tmp_path):
    """The thread pool that decodes ahead yields images in input order, with unreadable ones as errors."""
    from PIL import Image as PILImage

    from egtr.inference import batched
    from egtr.inference.files import _prepare_ahead

    class RecordingPredictor:
        def prepare(self, path):
            with PILImage.open(path) as image:
                return image.size

    paths = []
    for index in range(7):
        path = tmp_path / f"{index}.png"
        if index == 3:
            path.write_bytes(b"not an image")
        else:
            PILImage.new("RGB", (10 + index, 5)).save(path)
        paths.append(path)
    for workers in (0, 2):
        results = list(_prepare_ahead(RecordingPredictor(), paths, workers))
        assert [path for path, _ in results] == paths
        assert isinstance(results[3][1], Exception)
        assert [item for _, item in results if not isinstance(item, Exception)] == [
            (10 + i, 5) for i in range(7) if i != 3
        ]
    assert [len(chunk) for chunk in batched(iter(range(7)), 3)] == [3, 3, 1]
