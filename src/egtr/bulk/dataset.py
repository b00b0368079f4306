"""The DataLoader side of bulk prediction: a rank's share of the corpus, decoded, resized and batched in workers.

Each worker takes its units (see `egtr.bulk.sources`), decodes and prepares every image exactly as
`Predictor.prepare` does (it calls the predictor's `ImageProcessor`, which holds no model) and groups the images into
batches:

* exact (default): only images whose resized size is identical share a batch, so nothing is padded and every
  image gets the output it gets alone (up to float rounding of batched matrix products, ~1e-6);
* `bucket=True`: images of similar aspect ratio (within about 5%) share a batch and are padded to the largest, as
  `Predictor` pads any batch; faster on mixed corpora, and outputs change slightly (docs/bulk.md has the numbers).

A batch carries, besides the images, the entries that could not be read and the units whose entries have all been
sent, so that the writer in the main process can close (commit) a unit's shard as soon as it is complete.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from egtr.bulk.sources import TAR_UNIT, Corpus, Entry, unit_name
from egtr.errors import DataError
from egtr.inference import ImageProcessor, PreparedImage

# Images kept waiting for batch partners per worker, in batches: bounds worker memory on corpora of many sizes.
_BUFFERED_BATCHES = 4


@dataclass(frozen=True)
class ItemRef:
    """Where an image's record goes: `unit` (its shard), `index` (its position there) and its `key`."""

    unit: str
    index: int
    key: str


@dataclass(frozen=True)
class UnitDone:
    """All `entries` of `unit` have been sent; `tar_chunks` is set on the last unit of a tar shard."""

    unit: str
    entries: int
    tar: int | None = None
    tar_chunks: int | None = None


@dataclass
class BulkBatch:
    images: list[PreparedImage] = field(default_factory=list)
    refs: list[ItemRef] = field(default_factory=list)
    errors: list[tuple[ItemRef, str]] = field(default_factory=list)
    completed: list[UnitDone] = field(default_factory=list)


class CorpusDataset(IterableDataset):
    """The units of one rank, split further between its DataLoader workers, as `BulkBatch`es.

    Args:
        corpus: the inputs.
        preparer: the predictor's `ImageProcessor` (decoding, resize and normalisation; no model).
        batch_size: images per batch at most.
        bucket: batch by aspect ratio with padding (see the module docstring) instead of by identical size.
        rank, world_size: this process among all (Lightning's global rank and world size).
        done_units: called in each worker; returns the units already committed, which are skipped.
        keep_images: send the decoded originals along (needed to draw them).
    """

    def __init__(
        self,
        corpus: Corpus,
        preparer: ImageProcessor,
        *,
        batch_size: int,
        bucket: bool,
        rank: int,
        world_size: int,
        done_units: Callable[[], set[str]],
        keep_images: bool = False,
    ) -> None:
        super().__init__()
        self.corpus = corpus
        self.preparer = preparer
        self.batch_size = batch_size
        self.bucket = bucket
        self.rank = rank
        self.world_size = world_size
        self.done_units = done_units
        self.keep_images = keep_images

    def worker_slot(self) -> tuple[int, int]:
        """(this worker's global number, total workers over all ranks)."""
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.rank * workers + worker, self.world_size * workers

    def __iter__(self) -> Iterator[BulkBatch]:
        me, total = self.worker_slot()
        done = self.done_units()
        for unit, block in self.corpus.list_units(lambda chunk: chunk % total == me):
            if unit not in done:
                yield from self._unit_batches(unit, block)
        for shard in range(me, len(self.corpus.tar_shards), total):
            if tar_complete(shard, done):
                continue
            seen: dict[str, int] = {}  # tar_samples() puts the number of samples here once the tar is read
            samples = self.corpus.tar_samples(shard, skip_unit=done.__contains__, seen=seen)
            for unit, entries in itertools.groupby(samples, key=lambda entry: entry.unit):
                # groupby has read one entry past this unit, so `seen` is set iff this was the tar's last unit
                yield from self._unit_batches(unit, entries, tar=shard, tar_seen=seen)

    def count(self, rank_workers: int) -> int:
        """Entries this rank still has to process when it runs `rank_workers` DataLoader workers (for the progress
        bar's ETA; tar shards are counted from their headers)."""
        workers = max(rank_workers, 1)
        mine = set(range(self.rank * workers, (self.rank + 1) * workers))
        total = self.world_size * workers
        done = self.done_units()
        entries = sum(
            len(block)
            for unit, block in self.corpus.list_units(lambda chunk: chunk % total in mine)
            if unit not in done
        )
        size = self.corpus.shard_size
        for shard in range(len(self.corpus.tar_shards)):
            if shard % total in mine and not tar_complete(shard, done):
                samples = self.corpus.count_tar_samples(shard)
                entries += sum(
                    min(size, samples - chunk * size)
                    for chunk in range(math.ceil(samples / size))
                    if unit_name(TAR_UNIT, chunk, shard) not in done
                )
        return entries

    # ------------------------------------------------------------------ one unit
    def _unit_batches(
        self, unit: str, entries: Iterable[Entry], tar: int | None = None, tar_seen: dict[str, int] | None = None
    ) -> Iterator[BulkBatch]:
        groups: dict[tuple[int, int], list[tuple[ItemRef, PreparedImage]]] = {}
        errors: list[tuple[ItemRef, str]] = []
        count = 0
        pending: list[BulkBatch] = []
        for entry in entries:
            count += 1
            ref = ItemRef(entry.unit, entry.index, entry.key)
            prepared = self._prepare(entry)
            if isinstance(prepared, str):
                errors.append((ref, prepared))
                continue
            group = groups.setdefault(self._group_key(prepared), [])
            group.append((ref, prepared))
            if len(group) >= self.batch_size:
                pending.append(self._batch(groups.pop(self._group_key(prepared)), errors))
            elif sum(map(len, groups.values())) > _BUFFERED_BATCHES * self.batch_size:
                largest = max(groups, key=lambda key: len(groups[key]))
                pending.append(self._batch(groups.pop(largest), errors))
            # Yielded one step late so that the unit's last batch can still carry its completion.
            while len(pending) > 1:
                yield pending.pop(0)
        pending.extend(self._batch(group, errors) for group in groups.values())
        if not pending:
            pending.append(BulkBatch())
        pending[-1].errors.extend(errors)
        chunks = math.ceil(tar_seen["samples"] / self.corpus.shard_size) if tar_seen else None
        pending[-1].completed.append(UnitDone(unit, count, tar, chunks))
        yield from pending

    def _prepare(self, entry: Entry) -> PreparedImage | str:
        """The prepared image, or why it cannot be read (one line naming the file or the key)."""
        if entry.problem is not None:
            return entry.problem
        try:
            prepared = self.preparer.prepare(entry.data if entry.data is not None else entry.path)  # type: ignore[arg-type]
        except (DataError, OSError, ValueError) as error:
            message = str(error).replace("<bytes>", entry.key)  # load_image calls bytes "<bytes>"
            return message if entry.key in message or (entry.path or "") in message else f"{entry.key}: {message}"
        if not self.keep_images:
            prepared.image = None  # the decoded original is only needed for drawings; do not ship it
        return prepared

    def _group_key(self, prepared: PreparedImage) -> tuple[int, int]:
        height, width = prepared.pixel_values.shape[-2:]
        if not self.bucket:
            return (int(height), int(width))
        # Aspect-ratio buckets about 5% wide (log-spaced): padding stays under ~5% of the longer side.
        return (round(20 * math.log(width / height)), 0)

    @staticmethod
    def _batch(group: list[tuple[ItemRef, PreparedImage]], errors: list[tuple[ItemRef, str]]) -> BulkBatch:
        batch = BulkBatch(images=[image for _, image in group], refs=[ref for ref, _ in group], errors=list(errors))
        errors.clear()
        return batch


def tar_complete(shard: int, done: set[str]) -> bool:
    """Whether every unit of tar shard `shard` is committed, by the marker the writer leaves after the last one."""
    return f"{TAR_UNIT}-{shard:05d}-complete" in done


def collate_bulk(batch: Any) -> Any:
    """DataLoader `collate_fn` for a dataset that yields whole batches: pass them through unchanged."""
    return batch
