"""The Lightning module: parameter groups of the paper, the non-finite loss guard."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from tests.training.conftest import tiny_model_config, tiny_train_config

from egtr import EGTR
from egtr.training import (
    EGTRLightningModule,
    NonFiniteLossError,
    TrainConfig,
    build_parameter_groups,
    run_training,
)


def group_names(groups, model):
    names_by_id = {id(parameter): name for name, parameter in model.named_parameters()}
    return {group["name"]: [names_by_id[id(parameter)] for parameter in group["params"]] for group in groups}


def test_egtr_stage_has_three_groups_with_the_papers_rates():
    model = EGTR(tiny_model_config())
    groups = build_parameter_groups(model, TrainConfig())
    assert {group["name"]: group["lr"] for group in groups} == {
        "body": 2e-6,
        "backbone": 2e-7,
        "relation_head": 2e-4,
    }
    names = group_names(groups, model)
    assert all(
        name.startswith(("proj_", "final_", "rel_predictor", "connectivity_layer")) for name in names["relation_head"]
    )
    assert "rel_predictor_gate.weight" in names["relation_head"]
    assert all(key in name for name in names["backbone"] for key in [""]) and any(
        "sampling_offsets" in name for name in names["backbone"]
    )
    assert any("reference_points" in name for name in names["backbone"])
    assert "class_embed.0.weight" in names["body"] and "model.query_position_embeddings.weight" in names["body"]
    grouped = [name for group in names.values() for name in group]
    # Frozen tensors (frequency tables, backbone stem) are in no group; every trainable one is in exactly one.
    assert "triplet_dist" not in grouped and not any("layer1." in name for name in grouped)
    trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    assert sorted(grouped) == sorted(trainable)


def test_detector_stage_has_two_groups_and_a_frozen_relation_head():
    model = EGTR(tiny_model_config())
    config = TrainConfig.for_detector()
    module = EGTRLightningModule(model, config)
    groups = build_parameter_groups(module.model, config, lr_factor=0.1)
    assert {group["name"]: group["lr"] for group in groups} == pytest.approx({"body": 1e-5, "backbone": 1e-6})
    assert not any(parameter.requires_grad for parameter in model.rel_predictor.parameters())
    assert module.criterion.loss_config.auxiliary_loss and not module.criterion.use_relation_losses


def test_non_finite_loss_stops_training_without_saving(synthetic_root: Path, tmp_path: Path, monkeypatch):
    config = tiny_train_config(synthetic_root, tmp_path / "run", max_epochs=3)
    original = EGTRLightningModule._losses
    calls = {"count": 0}

    def poisoned(self, batch, training):
        losses = original(self, batch, training)
        calls["count"] += training
        if training and calls["count"] >= 4:  # epoch 0 (2 steps) is fine and is checkpointed; then NaN
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(EGTRLightningModule, "_losses", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss .* global step 3"):
        run_training(config)
    checkpoints = tmp_path / "run" / "main" / "checkpoints"
    last = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 2  # the last good state, written at the end of epoch 0
    assert all(torch.isfinite(value).all() for value in last["state_dict"].values() if value.is_floating_point())
    assert not (tmp_path / "run" / "model").exists()


def test_config_for_the_module_is_stored_in_checkpoints(synthetic_root: Path, tmp_path: Path):
    config = tiny_train_config(synthetic_root, tmp_path / "run", max_epochs=1)
    run_training(config)
    payload = torch.load(tmp_path / "run" / "main" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert payload["egtr_model_config"]["class_names"][:2] == ["circle", "square"]
    assert TrainConfig.from_dict(payload["egtr_train_config"]) == dataclasses.replace(config)
    assert any(key.startswith("model.model.encoder.") for key in payload["state_dict"])  # official layout
