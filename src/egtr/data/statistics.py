"""Triplet frequency statistics of the training split and the frequency-bias tables built from them.

`count_triplets` reproduces the original `vg_get_statistics` / `oi_get_statistics` (reference §7.1, §7.2): a
(C+1, C+1, R) int64 count tensor F with F[class_subject, class_object, predicate] += 1 for every training relation,
counted on the raw annotations (no box filtering, no overlap filter: quirk Q7, kept). Row and column C stay zero.

`frequency_bias_tables` turns F into the model's non-trainable `triplet_dist` and `rel_dist` (reference §2.6,
Zellers et al., "Neural Motifs", CVPR 2018, for the frequency bias itself).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

CACHE_FOLDER = "egtr_cache"
CACHE_VERSION = 1


def count_triplets(dataset_or_targets: Any, num_labels: int, num_rel_labels: int) -> torch.Tensor:
    """Count (subject class, object class, predicate) triplets.

    Args:
        dataset_or_targets: a `SceneGraphDataset` (its raw annotations are used, no image is decoded) or an
            iterable of target dicts with `class_labels` (n,) and `relations` (M, 3), 0-based.
        num_labels: number of object classes C.
        num_rel_labels: number of predicates R.

    Returns:
        F: (C+1, C+1, R) int64 tensor.
    """
    if hasattr(dataset_or_targets, "annotation_targets"):
        targets: Iterable[Mapping[str, Any]] = dataset_or_targets.annotation_targets()
    else:
        targets = dataset_or_targets
    counts = np.zeros((num_labels + 1, num_labels + 1, num_rel_labels), dtype=np.int64)
    for target in targets:
        labels = np.asarray(target["class_labels"], dtype=np.int64).reshape(-1)
        relations = np.asarray(target["relations"], dtype=np.int64).reshape(-1, 3)
        if len(relations) == 0:
            continue
        np.add.at(counts, (labels[relations[:, 0]], labels[relations[:, 1]], relations[:, 2]), 1)
    return torch.from_numpy(counts)


def frequency_bias_tables(
    counts: torch.Tensor | np.ndarray, eps: float = 1e-12, intended: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frequency-bias tables of the model from triplet counts.

    Default (original formula, quirk Q1, keep): `triplet_dist = log(F + eps / (F.sum(-1, keepdims) + eps))`,
    computed in float64, cast to float32, then the log in float32, exactly like the original, so T ~= log(count),
    unseen triplets of a seen class pair ~= -27.6 - log(sum), unseen class pairs 0.
    `intended=True` gives the formula the code meant: `log((F + eps) / (F.sum(-1, keepdims) + eps))`, a
    log-probability over predicates (opt-in for new training only; released checkpoints use the default).

    Args:
        counts: F (C+1, C+1, R) integer counts.
        eps: the small constant of the original (1e-12).
        intended: use the intended formula instead of the original one.

    Returns:
        triplet_dist (C+1, C+1, R) float32 and rel_dist (R,) float32 = F.sum((0, 1)) / (F.sum() + eps).
    """
    counts_np = counts.cpu().numpy() if isinstance(counts, torch.Tensor) else np.asarray(counts)
    counts_np = counts_np.astype(np.int64)
    if counts_np.ndim != 3 or counts_np.shape[0] != counts_np.shape[1]:
        raise ValueError(f"counts must have shape (C+1, C+1, R), got {counts_np.shape}")
    pair_totals = counts_np.sum(2, keepdims=True)
    rel_dist = torch.tensor(counts_np.sum((0, 1)) / (counts_np.sum() + eps), dtype=torch.float32)
    if intended:
        triplet_dist = torch.tensor(np.log((counts_np + eps) / (pair_totals + eps)), dtype=torch.float32)
    else:
        triplet_dist = torch.tensor(counts_np + eps / (pair_totals + eps), dtype=torch.float32).log()
    return triplet_dist, rel_dist


def _files_digest(paths: Iterable[Path], settings: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(dict(settings), sort_keys=True).encode())
    for path in paths:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def load_or_compute_triplet_counts(dataset: Any, cache_dir: str | Path | None = None) -> torch.Tensor:
    """`count_triplets` of a training dataset, cached next to the dataset.

    The cache file `{root}/egtr_cache/{kind}_{split}_triplet_counts.npz` stores the counts with a SHA-256 digest of
    the annotation files and the settings that change the counts; a stale or unreadable cache is recomputed. If the
    folder cannot be written, the counts are returned without caching (with a warning).

    Args:
        dataset: a `VisualGenomeDataset` or `OpenImagesDataset` (needs `root`, `split`, `kind`,
            `annotation_files`).
        cache_dir: folder for the cache file instead of `{root}/egtr_cache`.

    Returns:
        F: (C+1, C+1, R) int64 tensor.
    """
    folder = Path(cache_dir) if cache_dir is not None else Path(dataset.root) / CACHE_FOLDER
    path = folder / f"{dataset.kind}_{dataset.split}_triplet_counts.npz"
    settings = {
        "version": CACHE_VERSION,
        "kind": dataset.kind,
        "split": dataset.split,
        "num_images": len(dataset),
        "num_labels": dataset.num_labels,
        "num_rel_labels": dataset.num_rel_labels,
    }
    digest = _files_digest(dataset.annotation_files, settings)
    if path.is_file():
        try:
            with np.load(path) as cached:
                if str(cached["digest"]) == digest:
                    logger.info("triplet counts from cache %s", path)
                    return torch.from_numpy(cached["counts"].astype(np.int64))
        except (OSError, KeyError, ValueError) as error:
            logger.warning("ignoring unreadable statistics cache %s (%s)", path, error)
    counts = count_triplets(dataset, dataset.num_labels, dataset.num_rel_labels)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(path, counts=counts.numpy(), digest=np.asarray(digest))
        logger.info("triplet counts cached in %s", path)
    except OSError as error:
        logger.warning("cannot write the statistics cache %s (%s); counts are not cached", path, error)
    return counts
