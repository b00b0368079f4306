"""Temporal scene graphs against a clip's truth: identity consistency and relation-interval accuracy.

Inputs are the frame records of `TemporalSceneGraphs` / `egtr predict clip.mp4` (the `.frames.jsonl` lines) and the
`ClipTruth` of `egtr.video.synthetic_clip`. In each sampled frame the tracked objects are matched one-to-one to the
true objects by IoU >= 0.5 (Hungarian).

Identity (`track_metrics`): IDF1 / IDP / IDR (the global one-to-one assignment of true to predicted ids that
maximises correctly identified detections; computed by `trackers.eval.identity`, a port of TrackEval), the fraction
of true track-frames carrying their track's most frequent id ("stable"), identity switches, and how often the
track's voted class / the frame's own class is the true one.

Relations (`relation_metrics`): the records' per-frame relations are run through a `RelationSmoother` (so one
prediction run is scored with and without smoothing), predicted tracks are mapped to the true track they match most
often, and the relations that hold are compared per frame (precision / recall / F1 over (frame, triplet)); the
intervals of each triplet are compared with the true ones (an interval counts as found when a predicted interval of
the same triplet overlaps it with temporal IoU >= 0.5); and `changes` counts how often relations appear or end, the
flicker measure (the truth's own count is `true_changes`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from egtr.inference.scene_graph import SceneGraph
from egtr.video.pipeline import relation_observations
from egtr.video.synthetic_clip import ClipTruth, truth_intervals
from egtr.video.temporal import RelationSmoother, SmoothingConfig

IOU_THRESHOLD = 0.5
TEMPORAL_IOU_THRESHOLD = 0.5


def box_iou_matrix(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(len(first), len(second)) IoU of xyxy boxes."""
    first = np.asarray(first, dtype=np.float64).reshape(-1, 4)
    second = np.asarray(second, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(first[:, None, :2], second[None, :, :2])
    bottom_right = np.minimum(first[:, None, 2:], second[None, :, 2:])
    intersection = np.clip(bottom_right - top_left, 0, None).prod(-1)
    area_first = (first[:, 2:] - first[:, :2]).clip(0).prod(-1)
    area_second = (second[:, 2:] - second[:, :2]).clip(0).prod(-1)
    union = area_first[:, None] + area_second[None, :] - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1e-12), 0.0)


def _tracked(record: dict[str, Any]) -> tuple[np.ndarray, list[int], list[dict[str, Any]]]:
    objects = [item for item in record["objects"] if item.get("track_id") is not None]
    boxes = np.asarray([item["box"] for item in objects], dtype=np.float64).reshape(-1, 4)
    return boxes, [int(item["track_id"]) for item in objects], objects


def frame_matches(truth: ClipTruth, record: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """True track -> the tracked object (record dict) matched to it in this frame (IoU >= 0.5, one-to-one)."""
    boxes, _, objects = _tracked(record)
    iou = box_iou_matrix(truth.boxes[record["frame_index"]], boxes)
    if iou.size == 0:
        return {}
    rows, columns = linear_sum_assignment(-iou)
    return {int(r): objects[c] for r, c in zip(rows, columns) if iou[r, c] >= IOU_THRESHOLD}


def track_metrics(truth: ClipTruth, records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Identity consistency of the records' track ids (see the module docstring)."""
    from trackers.eval.identity import compute_identity_metrics

    gt_ids, tracker_ids, similarities = [], [], []
    assigned: dict[int, list[int]] = {track: [] for track in range(len(truth.classes))}
    voted_right = own_right = matched = 0
    for record in records:
        boxes, ids, _ = _tracked(record)
        frame_truth = truth.boxes[record["frame_index"]]
        gt_ids.append(np.arange(len(frame_truth)))
        tracker_ids.append(np.asarray(ids, dtype=np.int64))
        similarities.append(box_iou_matrix(frame_truth, boxes))
        for true_track, item in frame_matches(truth, record).items():
            assigned[true_track].append(int(item["track_id"]))
            matched += 1
            voted_right += item.get("track_label_name") == truth.classes[true_track]
            own_right += item["label_name"] == truth.classes[true_track]
    identity = compute_identity_metrics(gt_ids, tracker_ids, similarities, threshold=IOU_THRESHOLD)
    track_frames = len(records) * len(truth.classes)
    stable = sum(Counter(ids).most_common(1)[0][1] for ids in assigned.values() if ids)
    switches = sum(sum(a != b for a, b in pairwise(ids)) for ids in assigned.values())
    return {
        "idf1": float(identity["IDF1"]),
        "idp": float(identity["IDP"]),
        "idr": float(identity["IDR"]),
        "stable_fraction": stable / max(1, track_frames),
        "detected_fraction": matched / max(1, track_frames),
        "id_switches": int(switches),
        "distinct_ids": len({track for ids in assigned.values() for track in ids}),
        "true_tracks": len(truth.classes),
        "track_class_accuracy": voted_right / max(1, matched),
        "frame_class_accuracy": own_right / max(1, matched),
    }


def _track_mapping(truth: ClipTruth, records: Sequence[dict[str, Any]]) -> dict[int, int]:
    """Predicted track -> the true track it is matched to most often."""
    counts: dict[int, Counter] = {}
    for record in records:
        for true_track, item in frame_matches(truth, record).items():
            counts.setdefault(int(item["track_id"]), Counter())[true_track] += 1
    return {track: counter.most_common(1)[0][0] for track, counter in counts.items()}


def _changes(frames: Sequence[set]) -> int:
    previous: set = set()
    count = 0
    for current in frames:
        count += len(current ^ previous)
        previous = current
    return count


def _interval_hits(found: dict, reference: dict) -> tuple[int, int]:
    """(intervals of `reference` overlapped by an interval of `found` of the same triplet with tIoU >= 0.5, total)."""
    hits = total = 0
    for key, runs in reference.items():
        for start, end in runs:
            total += 1
            for other_start, other_end in found.get(key, []):
                overlap = min(end, other_end) - max(start, other_start) + 1
                union = max(end, other_end) - min(start, other_start) + 1
                if overlap > 0 and overlap / union >= TEMPORAL_IOU_THRESHOLD:
                    hits += 1
                    break
    return hits, total


def relation_metrics(
    truth: ClipTruth, records: Sequence[dict[str, Any]], smoothing: SmoothingConfig
) -> dict[str, float]:
    """Relation accuracy of the records' per-frame relations after `smoothing` (see the module docstring)."""
    mapping = _track_mapping(truth, records)
    times = [record["time"] for record in records]
    interval = float(np.median(np.diff(times))) if len(times) > 1 else 1.0 / truth.fps
    smoother = RelationSmoother(interval, smoothing)
    predicted: list[set] = []
    true: list[set] = []
    for record in records:
        graph = SceneGraph.from_dict(record)
        track_ids = [item.get("track_id") for item in record["objects"]]
        smoother.update(record["frame_index"], record["time"], relation_observations(graph, track_ids))
        holds = set()
        for subject, obj, predicate in smoother.active():
            if subject in mapping and obj in mapping and mapping[subject] != mapping[obj]:
                holds.add((mapping[subject], mapping[obj], predicate))
        predicted.append(holds)
        true.append(truth.relations[record["frame_index"]])
    tp = sum(len(p & t) for p, t in zip(predicted, true))
    fp = sum(len(p - t) for p, t in zip(predicted, true))
    fn = sum(len(t - p) for p, t in zip(predicted, true))
    precision = tp / max(1, tp + fp)
    recall = tp / max(1, tp + fn)
    predicted_runs, true_runs = truth_intervals(predicted), truth_intervals(true)
    found, true_total = _interval_hits(predicted_runs, true_runs)
    correct, predicted_total = _interval_hits(true_runs, predicted_runs)
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / max(1e-12, precision + recall),
        "interval_recall": found / max(1, true_total),
        "interval_precision": correct / max(1, predicted_total),
        "intervals": predicted_total,
        "true_intervals": true_total,
        "changes": _changes(predicted),
        "true_changes": _changes(true),
    }
