"""Shared pieces of the training tests: a tiny model configuration and a tiny synthetic scene world."""

from __future__ import annotations

from pathlib import Path

import pytest

from egtr.config import EGTRConfig
from egtr.data import DataConfig
from egtr.data.synthetic import generate_synthetic_dataset
from egtr.training import TrainConfig

IMAGE_SIZE = 64


def tiny_model_config(**overrides) -> EGTRConfig:
    """A model small enough to train for a few steps in seconds on 2 CPU cores."""
    values = {
        "backbone": "resnet18",
        "d_model": 64,
        "encoder_layers": 1,
        "decoder_layers": 2,
        "num_queries": 12,
        "encoder_ffn_dim": 128,
        "decoder_ffn_dim": 128,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "num_labels": 8,
        "num_rel_labels": 6,
    }
    values.update(overrides)
    return EGTRConfig(**values)


def tiny_train_config(data_root: Path, output_dir: Path, **overrides) -> TrainConfig:
    """An EGTR-stage config for the tiny world: fixed image size, few batches per epoch, no workers."""
    values = {
        "output_dir": str(output_dir),
        "data": DataConfig.for_synthetic(str(data_root), image_size=IMAGE_SIZE, train_sizes=(IMAGE_SIZE,)),
        "model": tiny_model_config(),
        "lr": 2e-4,
        "lr_backbone": 2e-5,
        "lr_relation_head": 2e-4,
        "max_epochs": 2,
        "finetune_epochs": 0,
        "batch_size": 2,
        "accumulate_grad_batches": 1,
        "accelerator": "cpu",
        "num_workers": 0,
        "limit_train_batches": 2,
        "limit_val_batches": 1,
        "sanity_val_steps": 0,
        "log_every_n_steps": 1,
        "progress_bar": False,
        "freeze_backbone": True,
        "evaluate_split": None,
    }
    values.update(overrides)
    return TrainConfig(**values).validate()


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 train / 4 val / 2 test synthetic images of 64 x 64 pixels."""
    return generate_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), 16, 4, 2, IMAGE_SIZE, seed=0)
