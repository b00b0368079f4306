"""Post-processing of EGTR outputs into ranked scene graphs and detections (reference §5).

One module turns raw model outputs into per-image predictions; metrics, inference and the CLI all use it.

Scene graphs (`postprocess_scene_graphs`), as `train_egtr.py::evaluate_batch` of the original code does:

1. object score and label = max of the **softmax** over the C focal-trained logits (quirk Q2, kept: it sets the
   triplet ranking of the released checkpoints);
2. relation score `rel[i, j, p] = clamp(pred_rel, 0, 1) * clamp(pred_connectivity, 0, 1)`;
3. pair score `s_i * s_j`, with the diagonal (self pairs) set to 0;
4. graph constraint: rank the pairs by `max_p rel[i, j, p] * (s_i * s_j)` and give each kept pair its argmax
   predicate; no graph constraint: rank all (i, j, p) by `rel[i, j, p] * (s_i * s_j)`;
5. boxes from normalised cxcywh to absolute xyxy pixels of the original image.

Open Images candidates (`postprocess_open_images`): all N*N ordered pairs **including i = j** (quirk Q3, kept),
the top-2 predicates of each pair, the top-100 triplets by `(s_sub * s_obj) * rel`, and only scores > 1e-5
(`lib/evaluation/oi_eval.py::eval_rel_results`, from PySGG).

Detections for COCO AP (`postprocess_detections`): sigmoid over the N x C logits, the top-100 (query, class)
entries, the query's box (`DeformableDetrFeatureExtractor.post_process`); this differs from the softmax used for
scene graphs on purpose (reference §5.8).

Ties: the original ranks with numpy's non-stable quicksort (quirk Q14, "may fix"). Here every ranking is
deterministic: equal scores keep their flat index order (lower index first). This changes nothing unless two
scores are exactly equal.

The products are computed in float32 in the same order as the original, so the ranked sets are identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from egtr.box_ops import scale_boxes_to_pixels
from egtr.metrics.core import DetectionPrediction, ScenePrediction

if TYPE_CHECKING:
    from egtr.inference.options import PredictionOptions
    from egtr.inference.runtimes import ModelOutputs
    from egtr.inference.scene_graph import SceneGraph


def rank_top_k(scores: torch.Tensor, k: int) -> np.ndarray:
    """Indices of the k largest entries of each row, best first, ties broken by lower index.

    `torch.topk` does the heavy lifting on the scores' device; the tie order is then fixed on the CPU, with a
    full-row fallback only for rows where the k-th value is tied with an entry left out.

    Args:
        scores: (B, M) float tensor.
        k: number of entries to keep; clipped to M.

    Returns:
        (B, min(k, M)) int64 numpy array of column indices.
    """
    num_rows, num_columns = scores.shape
    if torch.isnan(scores).any():
        raise ValueError("the scores to rank contain NaN (diverged model outputs?)")
    k = min(k, num_columns)
    if k == 0:
        return np.zeros((num_rows, 0), dtype=np.int64)
    values, indices = torch.topk(scores, k, dim=1, largest=True, sorted=True)
    kth_value = values[:, -1:]
    ties_outside = (scores == kth_value).sum(1) != (values == kth_value).sum(1)  # (B,)
    values_np = values.cpu().numpy()
    indices_np = indices.cpu().numpy().astype(np.int64)
    ranked = np.empty_like(indices_np)
    for row in range(num_rows):
        row_values, row_indices = values_np[row], indices_np[row]
        if bool(ties_outside[row]):
            # The k-th value also occurs outside the top-k chosen by torch: pick the lowest indices among equals.
            full_row = scores[row].cpu().numpy()
            threshold = row_values[-1]
            above = np.flatnonzero(full_row > threshold)
            equal = np.flatnonzero(full_row == threshold)[: k - above.size]
            row_indices = np.concatenate([above, equal])
            row_values = full_row[row_indices]
        # lexsort: last key is primary -> by decreasing value, then increasing index.
        ranked[row] = row_indices[np.lexsort((row_indices, -row_values))]
    return ranked


def _object_scores_and_labels(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax max over the C class logits (quirk Q2): (B, N, C) -> scores (B, N), labels (B, N)."""
    probabilities = logits.float().softmax(-1)
    scores = probabilities.max(-1).values
    labels = probabilities.argmax(-1)  # first index among equal maxima
    return scores, labels


def _relation_scores(pred_rel: torch.Tensor, pred_connectivity: torch.Tensor | None) -> torch.Tensor:
    """clamp(pred_rel) * clamp(pred_connectivity), broadcast over predicates: (B, N, N, R)."""
    relation = pred_rel.float().clamp(0.0, 1.0)
    if pred_connectivity is not None:
        relation = relation * pred_connectivity.float().clamp(0.0, 1.0)
    return relation


def _check_batch(logits: torch.Tensor, pred_boxes: torch.Tensor, image_sizes_hw: torch.Tensor) -> None:
    if logits.dim() != 3 or pred_boxes.shape[:2] != logits.shape[:2] or pred_boxes.shape[-1] != 4:
        raise ValueError(
            f"expected logits (B, N, C) and pred_boxes (B, N, 4), got {tuple(logits.shape)} and "
            f"{tuple(pred_boxes.shape)}"
        )
    if tuple(image_sizes_hw.shape) != (logits.shape[0], 2):
        raise ValueError(f"image_sizes_hw must be (B, 2) [height, width], got {tuple(image_sizes_hw.shape)}")


def postprocess_scene_graphs(
    logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    pred_rel: torch.Tensor,
    pred_connectivity: torch.Tensor | None,
    image_sizes_hw: torch.Tensor,
    top_k: int = 100,
    graph_constraint: bool = True,
    remove_self_pairs: bool = True,
    object_scores: torch.Tensor | None = None,
    object_labels: torch.Tensor | None = None,
) -> list[ScenePrediction]:
    """Rank the triplets of a batch of EGTR outputs (reference §5.1-5.6).

    Why this is long: the documented tensor shapes; the code (about 70 lines) follows reference §5.1-5.6 step by step.

    Args:
        logits: (B, N, C) class logits.
        pred_boxes: (B, N, 4) normalised cxcywh boxes.
        pred_rel: (B, N, N, R) relation probabilities, [b, subject, object, predicate].
        pred_connectivity: (B, N, N, 1) connectivity probabilities, or None to rank by `pred_rel` alone.
        image_sizes_hw: (B, 2) original [height, width] that boxes are scaled to.
        top_k: number of triplets kept per image (100 in the paper).
        graph_constraint: True: one predicate (the argmax) per subject/object pair; False: any (pair, predicate).
        remove_self_pairs: zero the i = j pairs (the original VG evaluation does).
        object_scores, object_labels: (B, N) scores and labels that replace the softmax ones (given objects,
            `egtr.inference.given_boxes`); both or neither.

    Returns:
        One `ScenePrediction` per image, triplets ranked best first.
    """
    _check_batch(logits, pred_boxes, image_sizes_hw)
    batch_size, num_queries, _ = logits.shape
    if (object_scores is None) != (object_labels is None):
        raise ValueError("give both object_scores and object_labels, or neither")
    if object_scores is None or object_labels is None:
        object_scores, object_labels = _object_scores_and_labels(logits)
    object_scores = object_scores.float()
    relation = _relation_scores(pred_rel, pred_connectivity)  # (B, N, N, R)
    num_predicates = relation.shape[-1]
    pair_object_scores = object_scores[:, :, None] * object_scores[:, None, :]  # (B, N, N) = s_i * s_j
    if remove_self_pairs:
        diagonal = torch.arange(num_queries, device=logits.device)
        pair_object_scores[:, diagonal, diagonal] = 0.0

    if graph_constraint:
        best_scores = relation.max(-1).values  # (B, N, N)
        triplet_scores = (best_scores * pair_object_scores).reshape(batch_size, num_queries * num_queries)
    else:
        triplet_scores = (relation * pair_object_scores[..., None]).reshape(batch_size, -1)  # (B, N*N*R)
    ranked = rank_top_k(triplet_scores, top_k)  # (B, K) flat indices

    # Gather the kept entries on the scores' device; only (B, K) or (B, K, R) values travel to the host.
    ranked_device = torch.from_numpy(ranked).to(triplet_scores.device)
    selected_triplet_scores = triplet_scores.gather(1, ranked_device).cpu().numpy()  # (B, K)
    if graph_constraint:
        pair_rows = relation.reshape(batch_size, num_queries * num_queries, num_predicates)
        index = ranked_device[..., None].expand(-1, -1, num_predicates)
        selected_relation = pair_rows.gather(1, index).cpu().numpy()  # (B, K, R)
    else:
        selected_relation = relation.reshape(batch_size, -1).gather(1, ranked_device).cpu().numpy()  # (B, K)
    boxes = scale_boxes_to_pixels(pred_boxes.float(), image_sizes_hw).cpu().numpy()
    object_scores_np = object_scores.cpu().numpy()
    object_labels_np = object_labels.cpu().numpy().astype(np.int64)
    predictions = []
    for image in range(batch_size):
        flat = ranked[image]
        if graph_constraint:
            subjects, objects = np.divmod(flat, num_queries)
            pair_predicate_scores = selected_relation[image]  # (K, R)
            # np.argmax: the first index among equal maxima, as upstream.
            predicates = pair_predicate_scores.argmax(1)
            predicate_scores = pair_predicate_scores.max(1)
        else:
            pairs, predicates = np.divmod(flat, num_predicates)
            subjects, objects = np.divmod(pairs, num_queries)
            pair_predicate_scores = None
            predicate_scores = selected_relation[image]
        predictions.append(
            ScenePrediction(
                boxes=boxes[image],
                labels=object_labels_np[image],
                scores=object_scores_np[image],
                relations=np.stack([subjects, objects, predicates], axis=1).astype(np.int64),
                relation_scores=selected_triplet_scores[image],
                predicate_scores=predicate_scores.astype(np.float32),
                pair_predicate_scores=pair_predicate_scores,
            )
        )
    return predictions


def select_open_images_candidates(
    pair_indices: torch.Tensor,
    pair_predicate_scores: torch.Tensor,
    object_scores: torch.Tensor,
    top_k: int = 100,
    predicates_per_pair: int = 2,
    min_score: float = 1e-5,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The Open Images V6 triplet candidates of `eval_rel_results` (PySGG), batched.

    Each pair keeps its `predicates_per_pair` best predicates; the triplet score is
    `(s_subject * s_object) * rel`; the `top_k` best triplets with a score > `min_score` are kept.

    Args:
        pair_indices: (B, P, 2) [subject, object] object indices of the scored pairs.
        pair_predicate_scores: (B, P, R) predicate scores of each pair.
        object_scores: (B, N) object scores.
        top_k: triplets kept per image.
        predicates_per_pair: predicates kept per pair (2 in the original).
        min_score: triplets with a score <= this are dropped (compared in float32, like numpy does upstream).

    Returns:
        Per image: relations (K, 3) int64 [subject, object, predicate], triplet scores (K,) float32, predicate
        scores (K,) float32, ranked best first.
    """
    batch_size, _, num_predicates = pair_predicate_scores.shape
    scores = pair_predicate_scores.float()
    # Top predicates per pair by repeated argmax: the first index wins among equal scores (a stable sort).
    kept_predicates, kept_scores = [], []
    remaining = scores.clone()
    for _ in range(min(predicates_per_pair, num_predicates)):
        best = remaining.argmax(-1, keepdim=True)  # (B, P, 1)
        kept_predicates.append(best)
        kept_scores.append(scores.gather(-1, best))
        remaining.scatter_(-1, best, float("-inf"))
    top_predicates = torch.cat(kept_predicates, -1)  # (B, P, k)
    top_predicate_scores = torch.cat(kept_scores, -1)  # (B, P, k)
    subject_scores = object_scores.float().gather(1, pair_indices[..., 0])  # (B, P)
    object_pair_scores = object_scores.float().gather(1, pair_indices[..., 1])
    triplet_scores = (subject_scores * object_pair_scores)[..., None] * top_predicate_scores  # (B, P, k)
    flat_scores = triplet_scores.reshape(batch_size, -1)
    ranked = rank_top_k(flat_scores, top_k)  # (B, K) indices into P*k

    # Gather the kept entries on the device; only (B, K) values travel to the host.
    ranked_device = torch.from_numpy(ranked).to(flat_scores.device)
    kept_scores_np = flat_scores.gather(1, ranked_device).cpu().numpy()  # (B, K)
    kept_predicates_np = top_predicates.reshape(batch_size, -1).gather(1, ranked_device).cpu().numpy()
    kept_predicate_scores_np = top_predicate_scores.reshape(batch_size, -1).gather(1, ranked_device).cpu().numpy()
    pair_rows = (ranked_device // top_predicates.shape[-1])[..., None].expand(-1, -1, 2)
    kept_pairs_np = pair_indices.gather(1, pair_rows).cpu().numpy()  # (B, K, 2)
    threshold = np.float32(min_score)
    candidates = []
    for image in range(batch_size):
        keep = kept_scores_np[image] > threshold
        relations = np.column_stack([kept_pairs_np[image][keep], kept_predicates_np[image][keep]]).astype(np.int64)
        candidates.append(
            (relations.reshape(-1, 3), kept_scores_np[image][keep], kept_predicate_scores_np[image][keep])
        )
    return candidates


def postprocess_open_images(
    logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    pred_rel: torch.Tensor,
    pred_connectivity: torch.Tensor | None,
    image_sizes_hw: torch.Tensor,
    top_k: int = 100,
    predicates_per_pair: int = 2,
    min_score: float = 1e-5,
    include_self_pairs: bool = True,
) -> list[ScenePrediction]:
    """Open Images V6 candidates from EGTR outputs (reference §5.7 and §6.2).

    Args:
        logits, pred_boxes, pred_rel, pred_connectivity, image_sizes_hw: as `postprocess_scene_graphs`.
        top_k: triplets kept per image.
        predicates_per_pair: predicates kept per pair.
        min_score: triplets with a score <= this are dropped.
        include_self_pairs: keep the i = j pairs (quirk Q3: the original does; needed for identical numbers).

    Returns:
        One `ScenePrediction` per image (no `pair_predicate_scores`).
    """
    _check_batch(logits, pred_boxes, image_sizes_hw)
    batch_size, num_queries, _ = logits.shape
    object_scores, object_labels = _object_scores_and_labels(logits)
    relation = _relation_scores(pred_rel, pred_connectivity)
    queries = torch.arange(num_queries, device=logits.device)
    pair_indices = torch.cartesian_prod(queries, queries)  # (N*N, 2), subject-major like the original
    if not include_self_pairs:
        pair_indices = pair_indices[pair_indices[:, 0] != pair_indices[:, 1]]
    pair_scores = relation[:, pair_indices[:, 0], pair_indices[:, 1]]  # (B, P, R)
    candidates = select_open_images_candidates(
        pair_indices.expand(batch_size, -1, -1),
        pair_scores,
        object_scores,
        top_k,
        predicates_per_pair,
        min_score,
    )
    boxes = scale_boxes_to_pixels(pred_boxes.float(), image_sizes_hw).cpu().numpy()
    scores_np = object_scores.cpu().numpy()
    labels_np = object_labels.cpu().numpy().astype(np.int64)
    return [
        ScenePrediction(boxes[b], labels_np[b], scores_np[b], relations, triplet_scores, predicate_scores)
        for b, (relations, triplet_scores, predicate_scores) in enumerate(candidates)
    ]


def postprocess_detections(
    logits: torch.Tensor, pred_boxes: torch.Tensor, image_sizes_hw: torch.Tensor, top_k: int = 100
) -> list[DetectionPrediction]:
    """Detections for COCO AP: sigmoid top-k over (query, class) (reference §5.8, HF `post_process`).

    Args:
        logits: (B, N, C) class logits.
        pred_boxes: (B, N, 4) normalised cxcywh boxes.
        image_sizes_hw: (B, 2) original [height, width].
        top_k: detections per image (100).

    Returns:
        One `DetectionPrediction` per image, best first; a query can appear with several classes.
    """
    _check_batch(logits, pred_boxes, image_sizes_hw)
    batch_size, _, num_classes = logits.shape
    probabilities = logits.float().sigmoid().reshape(batch_size, -1)  # (B, N*C)
    ranked = rank_top_k(probabilities, top_k)
    boxes = scale_boxes_to_pixels(pred_boxes.float(), image_sizes_hw).cpu().numpy()
    probabilities_np = probabilities.cpu().numpy()
    detections = []
    for image in range(batch_size):
        queries, labels = np.divmod(ranked[image], num_classes)
        detections.append(
            DetectionPrediction(boxes[image, queries], labels.astype(np.int64), probabilities_np[image, ranked[image]])
        )
    return detections


def scene_graphs_from_outputs(
    outputs: ModelOutputs,
    image_sizes_hw: Sequence[tuple[int, int]],
    options: PredictionOptions,
    class_names: Sequence[str],
    predicate_names: Sequence[str],
    image_paths: Sequence[str | None] | None = None,
) -> list[SceneGraph]:
    """Rank a batch of model outputs (`postprocess_scene_graphs`) and select, re-index and name one `SceneGraph`
    per image (`scene_graph_from_arrays`): inference's third part, a pure function of the outputs."""
    image_sizes = torch.as_tensor(image_sizes_hw, dtype=torch.float32, device=outputs.logits.device)
    predictions = postprocess_scene_graphs(
        outputs.logits.float(),
        outputs.pred_boxes.float(),
        outputs.pred_rel.float(),
        outputs.pred_connectivity.float(),
        image_sizes.view(-1, 2),
        top_k=options.top_k,
        graph_constraint=options.graph_constraint,
    )
    paths = list(image_paths) if image_paths is not None else [None] * len(predictions)
    return [
        scene_graph_of_prediction(prediction, size_hw, path, options, class_names, predicate_names)
        for prediction, size_hw, path in zip(predictions, image_sizes_hw, paths)
    ]


def scene_graph_of_prediction(
    prediction: ScenePrediction,
    image_size_hw: tuple[int, int],
    image_path: str | None,
    options: PredictionOptions,
    class_names: Sequence[str],
    predicate_names: Sequence[str],
    object_threshold: float | None = None,
) -> SceneGraph:
    """One ranked prediction as a `SceneGraph` under `options` (`object_threshold` overrides the options' own)."""
    from egtr.inference.scene_graph import scene_graph_from_arrays

    return scene_graph_from_arrays(
        prediction.boxes,
        prediction.labels,
        prediction.scores,
        prediction.relations,
        prediction.relation_scores,
        prediction.predicate_scores,
        class_names=class_names,
        predicate_names=predicate_names,
        image_size=(int(image_size_hw[0]), int(image_size_hw[1])),
        top_k=options.top_k,
        score_threshold=options.score_threshold,
        object_threshold=options.object_threshold if object_threshold is None else object_threshold,
        image_path=image_path,
    )
