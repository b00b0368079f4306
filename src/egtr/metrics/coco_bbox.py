"""COCOeval for boxes, vectorised with numpy and bit-identical to pycocotools (`COCOeval(..., "bbox")`).

pycocotools evaluates each (image, category) pair in a Python loop and greedily matches detections one by one; on
a VG-test-sized split (26,446 images, 100 detections each) that takes minutes. This module does the same
computation on flat arrays: the greedy matching is one numpy step per detection rank (at most `maxDets[-1]` = 100
steps, each over every (image, category) group at once, all IoU thresholds and area ranges together), and the
accumulation is one pass per category. Every floating-point operation is the one pycocotools performs, in the same
order (IoU as `bbIou` of `maskApi.c`, precision `tp / (fp + tp + eps)`, the same `np.mean` over the same values),
so the 12 statistics are equal bit for bit; `tests/metrics/test_detection_ap.py` checks it against pycocotools.

Reproduced on purpose (they are pycocotools' behaviour): detections are sorted by score with ties kept in result
order; each (image, category) keeps its best 100; a detection takes the best-IoU free ground truth (ties: the later
one), non-ignored ground truths before ignored ones; a detection matched to a ground truth with annotation id 0 is
counted as unmatched (pycocotools stores the matched id and tests it for non-zero); crowd ground truths are ignored,
use the detection's area as union and can be matched many times.

Not supported (pycocotools options we do not use): `useCats=0`, custom `iouThrs`/`recThrs`/`maxDets`/`areaRng`,
segmentation and keypoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# pycocotools `Params.setDetParams`.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETECTIONS = (1, 10, 100)
AREA_RANGES = ((0, 1e5**2), (0, 32**2), (32**2, 96**2), (96**2, 1e5**2))
AREA_LABELS = ("all", "small", "medium", "large")
# Detections per matching chunk (whole (image, category) groups): bounds the (T, A, chunk) working arrays.
MATCH_CHUNK = 65536


@dataclass
class BoxAnnotations:
    """Ground-truth boxes as arrays, in list order (what `COCO.dataset["annotations"]` holds, without the dicts).

    Attributes:
        ids, image_ids, category_ids: (G,) int64 annotation, image and category ids.
        boxes: (G, 4) float64 `[x, y, w, h]`.
        areas: (G,) float64 the annotations' `area` (used for the area ranges, as pycocotools does).
        crowd: (G,) bool `iscrowd`.
    """

    ids: np.ndarray
    image_ids: np.ndarray
    category_ids: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    crowd: np.ndarray

    @classmethod
    def from_coco(cls, annotations: list[dict[str, Any]]) -> BoxAnnotations:
        count = len(annotations)
        return cls(
            ids=np.fromiter((a["id"] for a in annotations), np.int64, count),
            image_ids=np.fromiter((a["image_id"] for a in annotations), np.int64, count),
            category_ids=np.fromiter((a["category_id"] for a in annotations), np.int64, count),
            boxes=np.asarray([a["bbox"] for a in annotations], dtype=np.float64).reshape(-1, 4),
            areas=np.fromiter((a["area"] for a in annotations), np.float64, count),
            # pycocotools: ignore = iscrowd (a dataset's own "ignore" flag is overwritten).
            crowd=np.fromiter((bool(a.get("iscrowd", 0)) for a in annotations), bool, count),
        )


def coco_bbox_stats(
    ground_truth: dict[str, Any], results: np.ndarray, image_ids: Sequence[int] | None = None
) -> np.ndarray:
    """The 12 `COCOeval.stats` of `COCOeval(gt, gt.loadRes(results), "bbox")` with `params.imgIds = image_ids`.

    Args:
        ground_truth: a COCO dataset dict (`images`, `annotations` with `id`, `image_id`, `category_id`, `bbox`
            `[x, y, w, h]`, `area`, optional `iscrowd`; `categories`).
        results: (D, 7) `[image_id, x, y, w, h, score, category_id]` rows, as given to `COCO.loadRes`.
        image_ids: the images to evaluate (default: every image of the ground truth).

    Returns:
        (12,) float64: AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl (-1 where undefined).
    """
    known_images = [image["id"] for image in ground_truth["images"]]
    return coco_bbox_stats_of_arrays(
        BoxAnnotations.from_coco(ground_truth["annotations"]),
        known_images,
        [category["id"] for category in ground_truth["categories"]],
        results,
        known_images if image_ids is None else image_ids,
    )


def coco_bbox_stats_of_arrays(
    annotations: BoxAnnotations,
    known_images: Sequence[int],
    category_ids: Sequence[int],
    results: np.ndarray,
    image_ids: Sequence[int],
) -> np.ndarray:
    """`coco_bbox_stats` of a ground truth given as arrays: the dataset's image ids and category ids, the images
    to evaluate."""
    precision, recall = coco_bbox_precision_recall(annotations, known_images, category_ids, results, image_ids)
    return summarize(precision, recall)


def coco_bbox_precision_recall(
    annotations: BoxAnnotations,
    known_images: Sequence[int],
    category_ids: Sequence[int],
    results: np.ndarray,
    image_ids: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """`COCOeval.eval["precision"]` (T, R, K, A, M) and `["recall"]` (T, K, A, M) of `coco_bbox_stats_of_arrays`."""
    images = np.unique(np.asarray(list(image_ids), dtype=np.int64))
    categories = np.unique(np.asarray(list(category_ids), dtype=np.int64))
    truths = _GroundTruths(annotations, images, categories)
    rows = np.asarray(results, dtype=np.float64).reshape(-1, 7)
    detections = _Detections(rows, images, categories, np.asarray(list(known_images), dtype=np.int64))
    matched_bits, ignored_bits = _match(truths, detections)
    return _accumulate(truths, detections, matched_bits, ignored_bits, len(categories))


def _positions(values: np.ndarray, sorted_unique: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each value in `sorted_unique` and whether it is there at all."""
    index = np.searchsorted(sorted_unique, values)
    clipped = np.minimum(index, max(len(sorted_unique) - 1, 0))
    found = (index < len(sorted_unique)) & (sorted_unique[clipped] == values) if len(sorted_unique) else index < 0
    return clipped, found


class _GroundTruths:
    """The annotations of the evaluated images and categories, sorted by (image, category) group, list order kept."""

    def __init__(self, annotations: BoxAnnotations, images: np.ndarray, categories: np.ndarray):
        image_index, image_found = _positions(annotations.image_ids, images)
        category_index, category_found = _positions(annotations.category_ids, categories)
        kept = np.flatnonzero(image_found & category_found)
        groups = image_index[kept] * len(categories) + category_index[kept]
        order = np.argsort(groups, kind="stable")
        kept = kept[order]
        self.group = groups[order]
        self.category = category_index[kept]
        self.id = annotations.ids[kept]
        self.area = annotations.areas[kept]
        self.crowd = annotations.crowd[kept]
        self.boxes = annotations.boxes[kept]

    def ignored(self, area_range: tuple[float, float]) -> np.ndarray:
        return self.crowd | (self.area < area_range[0]) | (self.area > area_range[1])


class _Detections:
    """The result rows of the evaluated images and categories, sorted by group then score (ties: row order), each
    group cut to its best `MAX_DETECTIONS[-1]`."""

    def __init__(self, rows: np.ndarray, images: np.ndarray, categories: np.ndarray, known_images: np.ndarray):
        image_ids = rows[:, 0].astype(np.int64)  # `int(row[0])` in loadNumpyAnnotations
        if len(rows) and not np.isin(image_ids, known_images).all():
            raise ValueError("Results do not correspond to current coco set")  # pycocotools' loadRes assertion
        image_index, image_found = _positions(image_ids, images)
        category_index, category_found = _positions(rows[:, 6].astype(np.int64), categories)
        kept = np.flatnonzero(image_found & category_found)
        groups = image_index[kept] * len(categories) + category_index[kept]
        scores = rows[kept, 5]
        order = np.lexsort((kept, -scores, groups))
        kept, groups = kept[order], groups[order]
        starts = np.searchsorted(groups, groups, side="left")
        rank = np.arange(len(kept)) - starts
        within = rank < MAX_DETECTIONS[-1]
        self.group, self.rank, kept = groups[within], rank[within], kept[within]
        self.category = category_index[kept]
        self.image = image_index[kept]
        self.score = rows[kept, 5]
        self.boxes = rows[kept, 1:5]
        self.area = self.boxes[:, 2] * self.boxes[:, 3]  # loadRes: bb[2] * bb[3]


def _box_iou(detections: np.ndarray, truths: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """`bbIou` of pycocotools' maskApi.c for paired rows ([x, y, w, h], float64), operation for operation."""
    width = np.fmin(detections[:, 2] + detections[:, 0], truths[:, 2] + truths[:, 0]) - np.fmax(
        detections[:, 0], truths[:, 0]
    )
    height = np.fmin(detections[:, 3] + detections[:, 1], truths[:, 3] + truths[:, 1]) - np.fmax(
        detections[:, 1], truths[:, 1]
    )
    intersection = width * height
    detection_area = detections[:, 2] * detections[:, 3]
    truth_area = truths[:, 2] * truths[:, 3]
    union = np.where(crowd, detection_area, detection_area + truth_area - intersection)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = intersection / union
    return np.where((width <= 0) | (height <= 0), 0.0, iou)


def _match(truths: _GroundTruths, detections: _Detections) -> tuple[np.ndarray, np.ndarray]:
    """pycocotools' `evaluateImg` greedy matching for every group, IoU threshold and area range.

    Groups are independent, so the detections are processed in chunks of whole groups (bounded memory).

    Returns:
        matched (D,) uint64: bit `t * A + a` set where detection d is matched to a ground truth whose id is
            non-zero (`dtMatches != 0`) at IoU threshold t and area range a;
        ignored (D,) uint64: the same bits for `dtIgnore`.
    """
    num_detections = len(detections.group)
    matched_bits = np.zeros(num_detections, dtype=np.uint64)
    ignored_bits = np.zeros(num_detections, dtype=np.uint64)
    truth_ignored = np.stack([truths.ignored(area) for area in AREA_RANGES])  # (A, G)
    start = 0
    while start < num_detections:
        stop = min(start + MATCH_CHUNK, num_detections)
        if stop < num_detections:  # end the chunk on a group boundary
            stop = int(np.searchsorted(detections.group, detections.group[stop], side="left"))
            if stop <= start:
                stop = int(np.searchsorted(detections.group, detections.group[start], side="right"))
        chunk = slice(start, stop)
        matched, ignored = _match_chunk(truths, truth_ignored, detections, chunk)
        bit = np.arange(len(IOU_THRESHOLDS))[:, None] * len(AREA_RANGES) + np.arange(len(AREA_RANGES))[None, :]
        weights = (np.uint64(1) << bit.astype(np.uint64))[:, :, None]  # (T, A, 1)
        matched_bits[chunk] = (matched.astype(np.uint64) * weights).sum(axis=(0, 1), dtype=np.uint64)
        ignored_bits[chunk] = (ignored.astype(np.uint64) * weights).sum(axis=(0, 1), dtype=np.uint64)
        start = stop
    return matched_bits, ignored_bits


def _match_chunk(
    truths: _GroundTruths, truth_ignored: np.ndarray, detections: _Detections, chunk: slice
) -> tuple[np.ndarray, np.ndarray]:
    """`_match` for the detections of `chunk` (whole groups): matched, ignored (T, A, chunk) bool."""
    num_thresholds, num_areas = len(IOU_THRESHOLDS), len(AREA_RANGES)
    groups, ranks = detections.group[chunk], detections.rank[chunk]
    num_detections = len(groups)
    # Candidate pairs: each detection with every ground truth of its group.
    group_start = np.searchsorted(truths.group, groups, side="left")
    group_count = np.searchsorted(truths.group, groups, side="right") - group_start
    pair_detection = np.repeat(np.arange(num_detections), group_count)
    pair_offset = np.arange(len(pair_detection)) - np.repeat(np.cumsum(group_count) - group_count, group_count)
    pair_truth = np.repeat(group_start, group_count) + pair_offset
    pair_iou = _box_iou(detections.boxes[chunk][pair_detection], truths.boxes[pair_truth], truths.crowd[pair_truth])
    thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[:, None]  # `iou = min([t, 1 - 1e-10])`
    taken = np.zeros((num_thresholds, num_areas, len(truths.group)), dtype=bool)
    match = np.full((num_thresholds, num_areas, num_detections), -1, dtype=np.int64)
    pair_rank = ranks[pair_detection]
    by_rank = np.argsort(pair_rank, kind="stable")
    rank_bounds = np.searchsorted(pair_rank[by_rank], np.arange(MAX_DETECTIONS[-1] + 1))
    # Detections of one rank belong to different groups, so they never compete: one step per rank.
    for rank in range(MAX_DETECTIONS[-1]):
        step = by_rank[rank_bounds[rank] : rank_bounds[rank + 1]]
        if len(step) == 0:
            break
        for area in range(num_areas):
            # The winner is the last valid pair in (detection, non-ignored first, IoU, list order) order: the loop
            # keeps the best IoU (`>=`, so a tie goes to the later ground truth) and stops at the ignored ones
            # once a non-ignored one matched.
            truth = pair_truth[step]
            regular = ~truth_ignored[area, truth]
            order = np.lexsort((truth, pair_iou[step], regular, pair_detection[step]))
            pairs, truth, detection = step[order], truth[order], pair_detection[step][order]
            valid = (~taken[:, area, truth] | truths.crowd[truth]) & (pair_iou[pairs] >= thresholds)  # (T, P)
            segment_starts = np.flatnonzero(np.r_[True, detection[1:] != detection[:-1]])
            position = np.where(valid, np.arange(len(pairs)), -1)
            best = np.maximum.reduceat(position, segment_starts, axis=1)  # (T, segments)
            threshold_index, segment = np.nonzero(best >= 0)
            winner = best[threshold_index, segment]
            match[threshold_index, area, detection[winner]] = truth[winner]
            taken[threshold_index, area, truth[winner]] = True
    found = match >= 0
    safe = np.where(found, match, 0)
    matched = found & (truths.id[safe] != 0)
    ignored = found & truth_ignored[np.arange(num_areas)[None, :, None], safe]
    area = detections.area[chunk]
    outside = np.stack([(area < low) | (area > high) for low, high in AREA_RANGES])
    ignored |= ~matched & outside[None]
    return matched, ignored


def _accumulate(
    truths: _GroundTruths,
    detections: _Detections,
    matched_bits: np.ndarray,
    ignored_bits: np.ndarray,
    num_categories: int,
) -> tuple[np.ndarray, np.ndarray]:
    """pycocotools' `accumulate`: precision (T, R, K, A, M) and recall (T, K, A, M), -1 where undefined."""
    num_thresholds, num_recalls = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    num_areas, num_max = len(AREA_RANGES), len(MAX_DETECTIONS)
    precision = -np.ones((num_thresholds, num_recalls, num_categories, num_areas, num_max))
    recall = -np.ones((num_thresholds, num_categories, num_areas, num_max))
    truth_ignored = np.stack([truths.ignored(area) for area in AREA_RANGES])
    positives = np.stack(
        [np.bincount(truths.category[~ignored_area], minlength=num_categories) for ignored_area in truth_ignored]
    )  # (A, K): `npig`
    # Per category, the detections in (image, rank) order, stably sorted by score: pycocotools concatenates the
    # images' lists and sorts with mergesort.
    order = np.lexsort((-detections.score, detections.category))
    bounds = np.searchsorted(detections.category[order], np.arange(num_categories + 1))
    matched_bits, ignored_bits, ranks = matched_bits[order], ignored_bits[order], detections.rank[order]
    threshold_bits = (np.arange(num_thresholds) * num_areas).astype(np.uint64)[:, None]
    # A detection ignored at every IoU threshold changes no count: leaving it out changes no precision sample
    # (the first column reaching a recall is a true positive, and an ignored column repeats the precision of the
    # column before it) and no recall. Outside the "all" area most detections are such.
    area_masks = [np.bitwise_or.reduce(np.uint64(1) << (threshold_bits[:, 0] + np.uint64(a))) for a in range(num_areas)]
    always_ignored = np.stack([(ignored_bits & mask) == mask for mask in area_masks])  # (A, D)
    for category in range(num_categories):
        members = slice(bounds[category], bounds[category + 1])
        for area in range(num_areas):
            num_positives = int(positives[area, category])
            if num_positives == 0:
                continue
            columns = np.flatnonzero(~always_ignored[area, members]) + bounds[category]
            shifts = threshold_bits + np.uint64(area)
            is_matched_all = ((matched_bits[columns][None, :] >> shifts) & np.uint64(1)).astype(bool)  # (T, n)
            is_ignored_all = ((ignored_bits[columns][None, :] >> shifts) & np.uint64(1)).astype(bool)
            for max_index, max_detections in enumerate(MAX_DETECTIONS):
                if max_detections >= MAX_DETECTIONS[-1]:  # every kept detection (groups are cut at the last)
                    is_matched, is_ignored = is_matched_all, is_ignored_all
                else:
                    chosen = ranks[columns] < max_detections
                    is_matched, is_ignored = is_matched_all[:, chosen], is_ignored_all[:, chosen]
                if is_matched.shape[1] == 0:
                    recall[:, category, area, max_index] = 0
                    precision[:, :, category, area, max_index] = 0
                    continue
                counted = ~is_ignored
                true_positive = is_matched & counted
                # Counts are exact in float64, so cumsum in float equals pycocotools' cumsum(...).astype(float).
                true_positives = np.cumsum(true_positive, axis=1, dtype=float)
                false_positives = np.cumsum(counted ^ true_positive, axis=1, dtype=float)
                recalls = true_positives / num_positives
                precisions = true_positives / (false_positives + true_positives + np.spacing(1))
                recall[:, category, area, max_index] = recalls[:, -1]
                # Precision envelope (running maximum from the right), then sampled at the recall thresholds.
                envelope = np.maximum.accumulate(precisions[:, ::-1], axis=1)[:, ::-1]
                count = recalls.shape[1]
                for threshold in range(num_thresholds):
                    index = np.searchsorted(recalls[threshold], RECALL_THRESHOLDS, side="left")
                    inside = index < count
                    sampled = np.zeros(num_recalls)
                    sampled[inside] = envelope[threshold, index[inside]]
                    precision[threshold, :, category, area, max_index] = sampled
    return precision, recall


def summarize(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """pycocotools' `summarize` for boxes: the 12 statistics from precision and recall, same expressions."""

    def one(average_precision: bool, iou: float | None = None, area: str = "all", max_detections: int = 100) -> float:
        area_index = [AREA_LABELS.index(area)]
        max_index = [MAX_DETECTIONS.index(max_detections)]
        values = precision if average_precision else recall
        if iou is not None:
            values = values[np.where(iou == IOU_THRESHOLDS)[0]]
        values = values[:, :, :, area_index, max_index] if average_precision else values[:, :, area_index, max_index]
        valid = values[values > -1]
        return -1.0 if len(valid) == 0 else float(np.mean(valid))

    return np.array(
        [
            one(True),
            one(True, iou=0.5),
            one(True, iou=0.75),
            one(True, area="small"),
            one(True, area="medium"),
            one(True, area="large"),
            one(False, max_detections=1),
            one(False, max_detections=10),
            one(False),
            one(False, area="small"),
            one(False, area="medium"),
            one(False, area="large"),
        ]
    )
