"""`TrainConfig.lr_schedule` / `warmup_steps`: the factor per step, a real run's rates, and resuming with new rates."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tests.training.conftest import tiny_train_config

from egtr.training import train_egtr
from egtr.training.module import learning_rate_multiplier
from egtr.training.resume import apply_optimizer_settings


def test_warmup_then_cosine_to_zero():
    multiplier = learning_rate_multiplier("cosine", warmup_steps=4, total_steps=14)
    assert [multiplier(step) for step in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert multiplier(4) == 1.0
    assert multiplier(9) == pytest.approx(0.5)  # half-way through the 10 cosine steps
    assert multiplier(14) == pytest.approx(0.0, abs=1e-12)
    assert multiplier(20) == pytest.approx(0.0, abs=1e-12)  # past the end (a resumed run given more epochs)
    values = [multiplier(step) for step in range(4, 15)]
    assert values == sorted(values, reverse=True)


def test_constant_schedule_with_warmup_stays_at_the_rate():
    multiplier = learning_rate_multiplier("constant", warmup_steps=2, total_steps=10)
    assert [multiplier(step) for step in range(5)] == [0.5, 1.0, 1.0, 1.0, 1.0]


def test_unknown_schedule_is_refused(synthetic_root: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        tiny_train_config(synthetic_root, tmp_path, lr_schedule="linear")


def test_a_cosine_run_ends_at_zero(synthetic_root: Path, tmp_path: Path):
    config = tiny_train_config(
        synthetic_root, tmp_path / "run", lr_schedule="cosine", warmup_steps=1, max_epochs=3, limit_train_batches=2
    )
    train_egtr(config)
    checkpoint = torch.load(tmp_path / "run" / "main" / "checkpoints" / "last.ckpt", weights_only=False)
    (scheduler,) = checkpoint["lr_schedulers"]
    assert scheduler["last_epoch"] == 6  # one scheduler step per optimiser step: 3 epochs x 2 batches
    multiplier = learning_rate_multiplier("cosine", 1, 6)
    for group in checkpoint["optimizer_states"][0]["param_groups"]:
        base = {"body": config.lr, "backbone": config.lr_backbone, "relation_head": config.lr_relation_head}
        assert group["lr"] == pytest.approx(base[group["name"]] * multiplier(6), abs=1e-15)
        assert group["initial_lr"] == base[group["name"]]


def test_resuming_with_a_new_rate_keeps_the_schedule_factor():
    checkpoint = {
        "optimizer_states": [{"param_groups": [{"name": "body", "lr": 0.25e-3, "initial_lr": 1e-3}]}],
        "lr_schedulers": [{"base_lrs": [1e-3], "last_epoch": 7}],
    }
    changes = apply_optimizer_settings(checkpoint, {"body": 2e-3}, weight_decay=1e-4, scheduled=True)
    group = checkpoint["optimizer_states"][0]["param_groups"][0]
    assert changes == ["body lr 0.001 -> 0.002"]
    assert math.isclose(group["lr"], 0.5e-3) and group["initial_lr"] == 2e-3
    assert checkpoint["lr_schedulers"][0]["base_lrs"] == [2e-3]


def test_resuming_without_a_schedule_goes_back_to_the_configured_rate():
    checkpoint = {
        "optimizer_states": [{"param_groups": [{"name": "body", "lr": 0.25e-3, "initial_lr": 1e-3}]}],
        "lr_schedulers": [{"base_lrs": [1e-3], "last_epoch": 7}],
    }
    changes = apply_optimizer_settings(checkpoint, {"body": 1e-3}, weight_decay=1e-4, scheduled=False)
    assert checkpoint["optimizer_states"][0]["param_groups"][0]["lr"] == 1e-3
    assert changes == ["body lr 0.00025 -> 0.001 (no learning-rate schedule in this run)"]


def test_resuming_a_constant_run_with_its_own_rates_changes_nothing():
    checkpoint = {"optimizer_states": [{"param_groups": [{"name": "body", "lr": 1e-3, "weight_decay": 1e-4}]}]}
    assert apply_optimizer_settings(checkpoint, {"body": 1e-3}, weight_decay=1e-4) == []
    assert checkpoint["optimizer_states"][0]["param_groups"][0] == {"name": "body", "lr": 1e-3, "weight_decay": 1e-4}
