"""Relations between boxes you already have: PredCls (boxes and labels given) and SGCls (boxes given).

EGTR reads its relation graph from the decoder's object queries: `pred_rel[i, j]` is the relation of query i to
query j. Given boxes therefore get relations by being assigned to queries (docs/evaluation.md, "Given boxes"):

1. assignment, per image: a one-to-one Hungarian matching of the given boxes to the model's queries, with the
   training matcher's costs (`egtr.losses.matcher.HungarianMatcher`, Deformable DETR's: 5 x L1 of the normalised
   cxcywh boxes + 2 x (-GIoU), plus 2 x the focal class cost of the given label when labels are given);
2. scores: the relation and connectivity scores between the assigned queries, ranked like every other EGTR output
   (`egtr.inference.postprocess.postprocess_scene_graphs`), without the self pairs;
3. objects: exactly the given boxes, in their order. PredCls: the given labels, score 1 (they are given, so they do
   not weigh the ranking); SGCls: the label and softmax score the assigned query predicts.

`assignment="iou"` is the alternative that docs/evaluation.md compares: Hungarian matching maximising the IoU of
the boxes alone.

Defined behaviour of the input: zero boxes give an empty graph; more boxes than queries, non-finite or degenerate
boxes (x2 <= x1 or y2 <= y1), boxes wholly outside the image and labels out of range raise `GivenBoxesError`
(a `ValueError`) naming the box; boxes partly outside the image are used as given.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from egtr.box_ops import box_cxcywh_to_xyxy, box_iou, box_xyxy_to_cxcywh
from egtr.errors import EgtrError
from egtr.inference.postprocess import ScenePrediction, postprocess_scene_graphs, scene_graph_of_prediction
from egtr.inference.scene_graph import SceneGraph
from egtr.losses.matcher import HungarianMatcher
from egtr.metrics.core import SceneGroundTruth

if TYPE_CHECKING:
    from egtr.inference.options import PredictionOptions
    from egtr.inference.runtimes import ModelOutputs

ASSIGNMENTS = ("hungarian", "iou")
TASKS = ("sgdet", "sgcls", "predcls")
# Recorded in the settings of a given-box evaluation.
GIVEN_BOXES_PROTOCOL = {
    "assignment": "hungarian: 5 L1 + 2 (-GIoU) (+ 2 focal class cost with labels), the training matcher's costs",
    "objects": "the given boxes; predcls: the given labels, score 1; sgcls: the assigned query's softmax label",
    "self_pairs": "removed",
}


class GivenBoxesError(EgtrError, ValueError):
    """Given boxes or labels that cannot be used (the message names the image and the box)."""


@dataclass
class GivenObjects:
    """The objects given for one image: (M, 4) float32 xyxy pixel boxes and, for PredCls, (M,) int64 labels."""

    boxes: np.ndarray
    labels: np.ndarray | None = None

    @property
    def task(self) -> str:
        return "sgcls" if self.labels is None else "predcls"


def class_index(
    label: object, class_names: Sequence[str] | int, where: str, error: type[EgtrError] = GivenBoxesError
) -> int:
    """One given label as a class index: an index in range, or a class name of the model (accepted by the Python API
    and the `--boxes` file alike). `class_names` may be just the class count where names are unknown."""
    count = class_names if isinstance(class_names, int) else len(class_names)
    if isinstance(label, str):
        names = [] if isinstance(class_names, int) else list(class_names)
        if label not in names:
            raise error(f"{where}: {label!r} is not a class name of the model")
        return names.index(label)
    if not isinstance(label, (int, np.integer)) or isinstance(label, bool):
        raise error(f"{where}: {label!r} is neither a class index nor a class name")
    if not 0 <= int(label) < count:
        raise error(f"{where}: class index {label} is not in 0..{count - 1}")
    return int(label)


def check_given_objects(
    boxes: np.ndarray | Sequence[Sequence[float]] | torch.Tensor,
    labels: np.ndarray | Sequence[int | str] | torch.Tensor | None,
    image_size_hw: tuple[int, int],
    num_classes: int,
    source: str = "image",
    num_queries: int | None = None,
    class_names: Sequence[str] | None = None,
) -> GivenObjects:
    """Validate the boxes (and labels) given for one image; see the module docstring for what is refused.

    Args:
        boxes: (M, 4) xyxy pixels.
        labels: (M,) class indices or class names (PredCls), or None (SGCls).
        image_size_hw: the image's (height, width).
        num_classes: C, the range of the labels.
        source: the image's name in error messages.
        num_queries: the model's N, when known: more boxes than queries is refused here already.
        class_names: the model's class names, for labels given by name.
    """
    array = np.asarray(boxes.detach().cpu() if isinstance(boxes, torch.Tensor) else boxes, dtype=np.float64)
    if array.size == 0:
        array = array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise GivenBoxesError(f"{source}: boxes must be (M, 4) [x1, y1, x2, y2] pixels, got shape {array.shape}")
    if num_queries is not None and len(array) > num_queries:
        raise GivenBoxesError(
            f"{source}: {len(array)} boxes given but the model has only {num_queries} object queries (one per box)"
        )
    height, width = image_size_hw
    for index, (x1, y1, x2, y2) in enumerate(array.tolist()):
        box = f"{source}: box {index} [{x1:g}, {y1:g}, {x2:g}, {y2:g}]"
        if not np.isfinite([x1, y1, x2, y2]).all():
            raise GivenBoxesError(f"{box} is not finite")
        if x2 <= x1 or y2 <= y1:
            raise GivenBoxesError(f"{box} is degenerate (needs x2 > x1 and y2 > y1)")
        if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
            raise GivenBoxesError(f"{box} lies outside the {width}x{height} image")
    checked_labels = None
    if labels is not None:
        given = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels, dtype=object)
        given = given.reshape(-1)
        if len(given) != len(array):
            raise GivenBoxesError(f"{source}: {len(given)} labels for {len(array)} boxes")
        names: Sequence[str] | int = num_classes if class_names is None else class_names
        indices = [class_index(label, names, f"{source}: box {index} label") for index, label in enumerate(given)]
        checked_labels = np.asarray(indices, dtype=np.int64)
    return GivenObjects(array.astype(np.float32), checked_labels)


def assign_queries(
    logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    given: GivenObjects,
    image_size_hw: tuple[int, int],
    matcher: HungarianMatcher | None = None,
    assignment: str = "hungarian",
) -> np.ndarray:
    """The query assigned to each given box, one-to-one.

    Args:
        logits: (N, C) class logits of one image.
        pred_boxes: (N, 4) normalised cxcywh boxes of one image.
        given: the checked boxes (and labels).
        image_size_hw: the pixel frame of the given boxes.
        matcher: the costs for `assignment="hungarian"` (default: the training matcher's, `LossConfig` weights).
        assignment: "hungarian" (matcher costs) or "iou" (maximum total IoU).

    Returns:
        (M,) int64 query indices, in the order of the given boxes.
    """
    if assignment not in ASSIGNMENTS:
        raise ValueError(f"assignment must be one of {ASSIGNMENTS}, got {assignment!r}")
    num_queries, num_given = pred_boxes.shape[0], len(given.boxes)
    if num_given > num_queries:
        raise GivenBoxesError(f"{num_given} boxes given but the model has only {num_queries} object queries")
    if num_given == 0:
        return np.zeros(0, dtype=np.int64)
    height, width = image_size_hw
    scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=pred_boxes.device)
    boxes_xyxy = torch.as_tensor(given.boxes, dtype=torch.float32, device=pred_boxes.device) / scale
    if assignment == "iou":
        predicted_xyxy = box_cxcywh_to_xyxy(pred_boxes.float())
        cost = -box_iou(predicted_xyxy, boxes_xyxy)[0].cpu().numpy()
        queries, targets = linear_sum_assignment(cost)
    else:
        matcher = matcher or HungarianMatcher()
        if given.labels is None:
            # No labels: the box costs alone (the class term has weight 0).
            matcher = HungarianMatcher(0.0, matcher.bbox_cost, matcher.giou_cost, 0.0)
            labels = torch.zeros(num_given, dtype=torch.int64)
        else:
            labels = torch.as_tensor(given.labels)
        target = {"class_labels": labels, "boxes": box_xyxy_to_cxcywh(boxes_xyxy)}
        indices, _ = matcher(logits[None], pred_boxes[None], [target])
        queries, targets = indices[0][0].numpy(), indices[0][1].numpy()
    assigned = np.empty(num_given, dtype=np.int64)
    assigned[targets] = queries
    return assigned


def postprocess_given_boxes(
    logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    pred_rel: torch.Tensor,
    pred_connectivity: torch.Tensor | None,
    image_sizes_hw: torch.Tensor,
    given: Sequence[GivenObjects],
    top_k: int = 100,
    graph_constraint: bool = True,
    matcher: HungarianMatcher | None = None,
    assignment: str = "hungarian",
) -> tuple[list[ScenePrediction], list[np.ndarray]]:
    """Ranked relations between the given objects of each image of a batch of EGTR outputs.

    Args:
        logits, pred_boxes, pred_rel, pred_connectivity, image_sizes_hw: as `postprocess_scene_graphs`.
        given: per image, the checked objects (`check_given_objects`).
        top_k, graph_constraint: as `postprocess_scene_graphs`.
        matcher, assignment: as `assign_queries`.

    Returns:
        Per image, a `ScenePrediction` whose objects are the given ones (boxes as given; labels and scores as the
        module docstring says) and whose relations index them, and the (M,) assigned queries.
    """
    if len(given) != logits.shape[0]:
        raise ValueError(f"{len(given)} sets of given boxes for a batch of {logits.shape[0]} images")
    predictions, assigned_queries = [], []
    for image, objects in enumerate(given):
        height, width = (int(v) for v in image_sizes_hw[image].tolist())
        size_hw = (height, width)
        queries = assign_queries(logits[image], pred_boxes[image], objects, size_hw, matcher, assignment)
        assigned_queries.append(queries)
        if len(queries) == 0:
            predictions.append(_empty_prediction(pred_rel.shape[-1], graph_constraint))
            continue
        index = torch.as_tensor(queries, device=logits.device)
        object_scores = object_labels = None
        if objects.labels is not None:
            object_labels = torch.as_tensor(objects.labels, device=logits.device)[None]
            object_scores = torch.ones(1, len(queries), device=logits.device)
        connectivity = None if pred_connectivity is None else pred_connectivity[image][index][:, index][None]
        # Every pair is ranked (top_k x M x M at most); the zero-scored self pairs are then dropped.
        num_pairs = len(queries) * len(queries) * (1 if graph_constraint else pred_rel.shape[-1])
        (prediction,) = postprocess_scene_graphs(
            logits[image][index][None],
            pred_boxes[image][index][None],
            pred_rel[image][index][:, index][None],
            connectivity,
            image_sizes_hw[image : image + 1],
            top_k=min(top_k, num_pairs),
            graph_constraint=graph_constraint,
            object_scores=object_scores,
            object_labels=object_labels,
        )
        keep = prediction.relations[:, 0] != prediction.relations[:, 1]
        predictions.append(
            ScenePrediction(
                boxes=objects.boxes.copy(),
                labels=prediction.labels,
                scores=prediction.scores,
                relations=prediction.relations[keep],
                relation_scores=prediction.relation_scores[keep],
                predicate_scores=prediction.predicate_scores[keep],
                pair_predicate_scores=None
                if prediction.pair_predicate_scores is None
                else prediction.pair_predicate_scores[keep],
            )
        )
    return predictions, assigned_queries


def _empty_prediction(num_predicates: int, graph_constraint: bool) -> ScenePrediction:
    return ScenePrediction(
        boxes=np.zeros((0, 4), np.float32),
        labels=np.zeros(0, np.int64),
        scores=np.zeros(0, np.float32),
        relations=np.zeros((0, 3), np.int64),
        relation_scores=np.zeros(0, np.float32),
        predicate_scores=np.zeros(0, np.float32),
        pair_predicate_scores=np.zeros((0, num_predicates), np.float32) if graph_constraint else None,
    )


def given_box_scene_graphs(
    outputs: ModelOutputs,
    image_sizes_hw: Sequence[tuple[int, int]],
    given: Sequence[GivenObjects],
    options: PredictionOptions,
    class_names: Sequence[str],
    predicate_names: Sequence[str],
    image_paths: Sequence[str | None] | None = None,
) -> list[SceneGraph]:
    """Post-processing for given boxes: one `SceneGraph` per image over exactly the given objects, in their order
    (`SceneObject.query` = the assigned query); relations filtered by `top_k` / `score_threshold`."""
    image_sizes = torch.as_tensor(image_sizes_hw, dtype=torch.float32, device=outputs.logits.device).view(-1, 2)
    predictions, assigned = postprocess_given_boxes(
        outputs.logits.float(),
        outputs.pred_boxes.float(),
        outputs.pred_rel.float(),
        outputs.pred_connectivity.float(),
        image_sizes,
        given,
        top_k=options.top_k,
        graph_constraint=options.graph_constraint,
    )
    paths = list(image_paths) if image_paths is not None else [None] * len(predictions)
    graphs = []
    for prediction, queries, size_hw, path in zip(predictions, assigned, image_sizes_hw, paths):
        # every given object, in the given order
        graph = scene_graph_of_prediction(
            prediction, size_hw, path, options, class_names, predicate_names, object_threshold=-math.inf
        )
        # The given boxes exactly (scene_graph_from_arrays clips to the image) and the assigned queries.
        graph.objects = [
            dataclasses.replace(
                scene_object, box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])), query=int(query)
            )
            for scene_object, box, query in zip(graph.objects, prediction.boxes.tolist(), queries)
        ]
        graphs.append(graph)
    return graphs


def given_objects_of_ground_truths(
    ground_truths: Sequence[SceneGroundTruth],
    image_sizes_hw: Sequence[tuple[int, int]],
    task: str,
    num_classes: int,
    num_queries: int,
) -> list[GivenObjects]:
    """The objects an evaluation gives the model: the ground-truth boxes (SGCls) and labels (PredCls)."""
    if task not in ("sgcls", "predcls"):
        raise ValueError(f"given-box tasks are sgcls and predcls, got {task!r}")
    return [
        check_given_objects(
            truth.boxes,
            truth.labels if task == "predcls" else None,
            size_hw,
            num_classes,
            source=f"image {truth.image_id if truth.image_id is not None else index}",
            num_queries=num_queries,
        )
        for index, (truth, size_hw) in enumerate(zip(ground_truths, image_sizes_hw))
    ]
