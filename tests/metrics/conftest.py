"""Fixtures of the evaluator tests: the reference ground truth, model outputs and bulk evaluator inputs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from egtr.inference.postprocess import ScenePrediction, select_open_images_candidates
from egtr.metrics import SceneGroundTruth

REFERENCE = Path(__file__).parents[1] / "fixtures" / "reference"


@pytest.fixture(scope="session")
def vg_ground_truth_json() -> dict:
    return json.loads((REFERENCE / "eval_vg_gt.json").read_text())


@pytest.fixture(scope="session")
def vg_reference() -> dict:
    return json.loads((REFERENCE / "eval_vg.json").read_text())


@pytest.fixture
def vg_ground_truths(vg_ground_truth_json) -> list[SceneGroundTruth]:
    return [
        SceneGroundTruth(
            np.asarray(image["gt_boxes_xyxy"], dtype=np.float32),
            np.asarray(image["gt_classes"], dtype=np.int64),
            np.asarray(image["gt_relations"], dtype=np.int64).reshape(-1, 3),
            image_id=index + 1,  # the ids of the fixture's COCO json
        )
        for index, image in enumerate(vg_ground_truth_json["images"])
    ]


@pytest.fixture(scope="session")
def model_outputs() -> dict[str, torch.Tensor]:
    outputs = np.load(REFERENCE / "outputs.npz")
    return {k: torch.from_numpy(outputs[k]) for k in ("logits", "pred_boxes", "pred_rel", "pred_connectivity")}


@pytest.fixture(scope="session")
def image_sizes_hw(vg_ground_truth_json) -> torch.Tensor:
    return torch.tensor([image["orig_size_hw"] for image in vg_ground_truth_json["images"]])


@pytest.fixture(scope="session")
def bulk_reference() -> dict:
    return json.loads((REFERENCE / "eval_bulk.json").read_text())


@pytest.fixture(scope="session")
def bulk() -> dict:
    """The bulk evaluator inputs as per-image ground truths and the three kinds of predictions."""
    data = dict(np.load(REFERENCE / "eval_bulk_inputs.npz"))
    gt_objects, gt_relations, predicted_objects = (
        data["gt_obj_offsets"],
        data["gt_rel_offsets"],
        data["pred_obj_offsets"],
    )
    num_images = len(data["image_hw"])
    ground_truths, constrained, unconstrained, object_scores = [], [], [], []
    for i in range(num_images):
        ground_truths.append(
            SceneGroundTruth(
                data["gt_boxes"][gt_objects[i] : gt_objects[i + 1]],
                data["gt_classes"][gt_objects[i] : gt_objects[i + 1]],
                data["gt_relations"][gt_relations[i] : gt_relations[i + 1]],
            )
        )
        objects = slice(predicted_objects[i], predicted_objects[i + 1])
        boxes, labels, scores = (
            data["pred_boxes"][objects],
            data["pred_classes"][objects],
            data["obj_scores"][objects],
        )
        pair_scores = data["pair_rel_scores"][i]
        constrained.append(
            ScenePrediction(
                boxes,
                labels,
                scores,
                np.column_stack([data["pred_pairs"][i], pair_scores.argmax(1)]),
                pair_scores.max(1) * scores[data["pred_pairs"][i][:, 0]] * scores[data["pred_pairs"][i][:, 1]],
                pair_scores.max(1),
                pair_scores,
            )
        )
        unconstrained.append(
            ScenePrediction(
                boxes,
                labels,
                scores,
                data["multi_triplets"][i],
                data["multi_scores"][i],
                data["multi_scores"][i],
            )
        )
        object_scores.append(torch.from_numpy(scores))
    candidates = select_open_images_candidates(
        torch.from_numpy(data["pred_pairs"]),
        torch.from_numpy(data["pair_rel_scores"]),
        torch.nn.utils.rnn.pad_sequence(object_scores, batch_first=True),
    )
    open_images = [
        ScenePrediction(p.boxes, p.labels, p.scores, relations, triplet_scores, predicate_scores)
        for p, (relations, triplet_scores, predicate_scores) in zip(constrained, candidates)
    ]
    return {
        "ground_truths": ground_truths,
        "graph_constraint": constrained,
        "no_graph_constraint": unconstrained,
        "open_images": open_images,
        "num_classes": int(data["num_labels"]),
        "num_predicates": int(data["num_rel_labels"]),
    }
