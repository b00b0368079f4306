"""TrainConfig: the paper's defaults, presets, JSON round trip and key=value overrides."""

from __future__ import annotations

import json

import pytest

from egtr.training import TrainConfig


def test_defaults_are_the_papers_egtr_recipe():
    config = TrainConfig()
    # Reference §4.2: 3 groups 2e-6 / 2e-7 / 2e-4, AdamW wd 1e-4, clip 0.1, 4 images x 2 accumulation, 50 + 25 epochs.
    assert (config.lr, config.lr_backbone, config.lr_relation_head) == (2e-6, 2e-7, 2e-4)
    assert config.weight_decay == 1e-4 and config.gradient_clip_val == 0.1
    assert (config.batch_size, config.accumulate_grad_batches) == (4, 2)
    assert (config.max_epochs, config.finetune_epochs, config.finetune_lr_factor) == (50, 25, 0.1)
    assert config.early_stopping_patience == 15 and config.precision == "32-true"
    assert not config.loss.auxiliary_loss
    assert TrainConfig(devices=8).effective_batch_size == 64


def test_detector_and_open_images_presets():
    detector = TrainConfig.for_detector()
    # Reference §4.1: aux losses on, 1e-4 / 1e-5, 150 + 50 epochs, no accumulation.
    assert detector.stage == "detector" and detector.loss.auxiliary_loss
    assert (detector.lr, detector.lr_backbone, detector.max_epochs, detector.finetune_epochs) == (
        1e-4,
        1e-5,
        150,
        50,
    )
    assert detector.accumulate_grad_batches == 1
    open_images = TrainConfig.for_open_images()
    # Reference §4.5: connectivity weight 90, random non-matching sampling, OI data layout.
    assert open_images.loss.connectivity_loss_coefficient == 90
    assert not open_images.loss.rel_sample_nonmatching_largest
    assert open_images.data.kind == "oi"


def test_json_round_trip(tmp_path):
    config = TrainConfig.for_detector(output_dir=str(tmp_path), devices=2, precision="bf16-mixed")
    config.save(tmp_path / "config.json")
    assert "train_config" in json.loads((tmp_path / "config.json").read_text())
    loaded = TrainConfig.load(tmp_path / "config.json")
    assert loaded == config


def test_overrides_parse_values_and_reach_nested_configs():
    config = TrainConfig().with_overrides(
        [
            "lr=1e-4",
            "devices=2",
            "data.root=/data/vg",
            "model.num_queries=100",
            "loss.auxiliary_loss=true",
            "data.train_sizes=[320,352]",
            "detector_weights=null",
        ]
    )
    assert config.lr == 1e-4 and config.devices == 2
    assert config.data.root == "/data/vg" and config.data.train_sizes == (320, 352)
    assert config.model.num_queries == 100 and config.loss.auxiliary_loss
    assert config.detector_weights is None


@pytest.mark.parametrize(
    "override, message",
    [
        ("lrr=1", "unknown setting"),
        ("model.depth=3", "unknown setting"),
        ("lr", "key=value"),
        ("lr.x=1", "not a nested config"),
        ("stage=pretrain", "stage"),
        ("precision=8", "precision"),
        ("batch_size=0", "batch_size"),
    ],
)
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig().with_overrides([override])


def test_unknown_fields_in_a_saved_config_are_an_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"train_config": {"learning_rate": 1.0}}))
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig.load(path)
