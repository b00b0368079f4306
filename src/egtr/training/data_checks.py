"""Data problems caught before step 1, and unreadable images during training reported, never a traceback (#13.7).

- `check_dataset_before_training`: the validator's fast checks (`egtr data validate --no-decode`: files, records,
  indices, duplicate ids, images in two splits, relations of images not in the split, missing image files) over
  every split present; any error stops the run with the full report (`DatasetCheckError`).
- An image that only fails when decoded (corrupt, truncated) is found when it is loaded: `TolerantDataset` turns its
  `DataError` into a marker that `collate_skipping` moves into the batch's `unreadable` list, so that the training
  process (not a loader worker, whose errors arrive as a traceback text) decides. With `unreadable_images="stop"`
  (default) the run stops with `UnreadableImageError` naming the file; with "skip" the image is left out of its
  batch, logged with its path, and counted per epoch (`unreadable_images` in the metrics).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from egtr.data import DataConfig, DataError, collate_fn
from egtr.data.config import SPLITS
from egtr.data.validate import Problem, split_files, validate_dataset

logger = logging.getLogger(__name__)

UNREADABLE_POLICIES = ("stop", "skip")


class DatasetCheckError(DataError):
    """The dataset has errors the loaders would fail on mid-training; the message is the validator's report."""


class UnreadableImageError(DataError):
    """An image of the training data could not be decoded (`unreadable_images="stop"`)."""


def check_dataset_before_training(data: DataConfig) -> list[Problem]:
    """Run the validator's no-decode checks on every split of `data.root` that exists; raise on any error.

    Returns:
        The warnings (logged as a count here).

    Raises:
        DatasetCheckError: a summary line, then one line per problem.
    """
    root = Path(data.root)
    splits = [
        split for split in SPLITS if split in ("train", "val") or split_files(root, data.kind, split)[0].is_file()
    ]
    problems = validate_dataset(root, data.kind, splits, decode_images=False)
    errors = [problem for problem in problems if problem.severity == "error"]
    warnings = [problem for problem in problems if problem.severity == "warning"]
    if errors:
        # The summary first: the command line prefixes the first line with "error: ", and the report lines carry
        # their own ERROR / WARNING (last, it printed "error: ERROR: ...").
        summary = (
            f"{root}: {len(errors)} error(s), {len(warnings)} warning(s) in the dataset check before training "
            f"(splits {', '.join(splits)}); fix them and train again (`egtr data validate --data-root {root}` "
            "repeats the check):"
        )
        raise DatasetCheckError("\n".join([summary, *(str(problem) for problem in problems)]))
    if warnings:
        logger.warning(
            "dataset check: %d warning(s), handled by the loaders as documented (`egtr data validate --data-root %s` "
            "lists them)",
            len(warnings),
            root,
        )
    return warnings


class TolerantDataset(Dataset):
    """A dataset whose items that fail with `DataError` come back as `(None, message)` markers instead of raising."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except DataError as error:
            return None, str(error)

    def __getattr__(self, name: str) -> Any:  # class_names, annotations, ... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def collate_skipping(batch: list[tuple[torch.Tensor | None, Any]]) -> dict[str, Any]:
    """`collate_fn` over the readable items; the messages of the unreadable ones go to `batch["unreadable"]`."""
    readable = [(pixels, target) for pixels, target in batch if pixels is not None]
    unreadable = [message for pixels, message in batch if pixels is None]
    collated = collate_fn(readable) if readable else {"labels": []}
    collated["unreadable"] = unreadable
    return collated
