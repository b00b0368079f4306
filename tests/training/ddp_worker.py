"""Worker of `test_ddp.py`: a 2-process CPU DDP (gloo) fit of the tiny model; every rank saves its final weights.

Run as `python ddp_worker.py DATA_ROOT OUTPUT_DIR`. Lightning's DDP launcher starts the second process by running
this same command again with LOCAL_RANK=1, so the script must be importable top to bottom.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `tests.training`

from tests.training.conftest import tiny_train_config

from egtr.training import EGTRLightningModule, SceneGraphDataModule, build_initial_model
from egtr.training.engine import build_trainer


class RecordImages(Callback):
    """Remembers the image ids of every training batch of this rank."""

    def __init__(self) -> None:
        self.image_ids: list[int] = []

    def on_train_batch_start(self, trainer, module, batch, batch_index) -> None:
        self.image_ids.extend(int(target["image_id"]) for target in batch["labels"])


def main(data_root: str, output_dir: str) -> None:
    torch.set_num_threads(1)  # two processes share the two cores
    config = tiny_train_config(
        Path(data_root),
        Path(output_dir),
        devices=2,
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=1,
        early_stopping_patience=0,
    )
    datamodule = SceneGraphDataModule(config.data, config.batch_size, num_workers=0)
    datamodule.setup()
    torch.manual_seed(0)  # identical initial weights (DDP also broadcasts rank 0's at the start)
    model = build_initial_model(config, datamodule)
    initial = {key: value.clone() for key, value in model.state_dict().items()}
    module = EGTRLightningModule(model, config)
    recorder = RecordImages()
    trainer = build_trainer(config, Path(output_dir) / "main", max_epochs=1, extra_callbacks=[recorder])
    trainer.fit(module, datamodule=datamodule)
    torch.save(
        {
            "state_dict": module.model.state_dict(),
            "initial": initial,
            "global_step": trainer.global_step,
            "world_size": trainer.world_size,
            "image_ids": recorder.image_ids,
        },
        Path(output_dir) / f"rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
