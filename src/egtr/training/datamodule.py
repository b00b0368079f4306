"""`SceneGraphDataModule`: the train and validation loaders of a training run (reference §4.2, §7.3).

Training uses the augmenting transforms (flip + random resize, no crop) and shuffles in an order fixed by the seed and
the epoch (`EpochShuffleSampler`, so that a resumed run continues the uninterrupted run's order); under DDP Lightning
uses its `DistributedSampler`, which is seeded by the epoch too. Validation uses the fixed evaluation resize. Batches
are `collate_fn` dicts.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from egtr.data import DataConfig, SceneGraphDataset, build_dataset
from egtr.training.data_checks import TolerantDataset, collate_skipping
from egtr.training.resume import EpochShuffleSampler


class SceneGraphDataModule(pl.LightningDataModule):
    """Train/val datasets and loaders built from a `DataConfig`.

    Args:
        data_config: dataset kind, root and transform sizes.
        batch_size: training images per device.
        eval_batch_size: validation images per device.
        num_workers: loader worker processes per device (0 loads in the training process).
        train_split, val_split: split names.
        num_queries: the model's query count (Open Images training drops images with more boxes, reference §7.2).
    """

    def __init__(
        self,
        data_config: DataConfig,
        batch_size: int,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        train_split: str = "train",
        val_split: str = "val",
        num_queries: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.data_config = data_config
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.train_split = train_split
        self.val_split = val_split
        self.num_queries = num_queries
        self.seed = seed
        self.train_dataset: SceneGraphDataset | None = None
        self.val_dataset: SceneGraphDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is None:
            self.train_dataset = build_dataset(
                self.data_config, self.train_split, train=True, num_queries=self.num_queries
            )
        if self.val_dataset is None:
            self.val_dataset = build_dataset(
                self.data_config, self.val_split, train=False, num_queries=self.num_queries
            )

    def _loader(self, dataset: SceneGraphDataset, batch_size: int, shuffle: bool) -> DataLoader:
        options: dict[str, Any] = {}
        if self.num_workers > 0:
            options["persistent_workers"] = True
        distributed = self.trainer is not None and self.trainer.world_size > 1
        if shuffle and not distributed:
            options["sampler"] = EpochShuffleSampler(len(dataset), self.seed)
        else:
            options["shuffle"] = shuffle
        return DataLoader(
            TolerantDataset(dataset),  # an unreadable image reaches the training step as a message, not a traceback
            batch_size=batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_skipping,
            pin_memory=torch.cuda.is_available(),
            drop_last=False,
            **options,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        assert self.train_dataset is not None  # setup() built it
        return self._loader(self.train_dataset, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        assert self.val_dataset is not None  # setup() built it
        return self._loader(self.val_dataset, self.eval_batch_size, shuffle=False)
