"""Initialisation from users' files: ImageNet ResNet checkpoints and pre-trained (e.g. COCO) Deformable DETR."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from tests.training.conftest import tiny_model_config

from egtr import EGTR
from egtr.errors import CheckpointError
from egtr.training import load_backbone_weights, load_pretrained_detector
from egtr.training.initialization import BACKBONE_PREFIX


def imagenet_resnet18_state_dict() -> dict[str, torch.Tensor]:
    """A torchvision/timm-layout ResNet-18 state dict (random values): BN counters everywhere and a classifier."""
    source = EGTR(tiny_model_config())
    state_dict = {}
    for key, value in source.state_dict().items():
        if key.startswith(BACKBONE_PREFIX):
            name = key[len(BACKBONE_PREFIX) :]
            state_dict[name] = torch.randn_like(value) if value.is_floating_point() else value
            if name.endswith("running_var"):
                state_dict[name.replace("running_var", "num_batches_tracked")] = torch.tensor(7)
    state_dict["fc.weight"] = torch.randn(1000, 512)
    state_dict["fc.bias"] = torch.randn(1000)
    return state_dict


@pytest.mark.parametrize("file_format", ["pth", "safetensors", "ddp_pth"])
def test_backbone_from_imagenet_checkpoint(tmp_path, file_format):
    state_dict = imagenet_resnet18_state_dict()
    if file_format == "safetensors":
        path = tmp_path / "resnet18.safetensors"
        save_file(state_dict, str(path))
    elif file_format == "ddp_pth":
        path = tmp_path / "resnet18.pth"  # a DDP-trained checkpoint: "module." in front, under "state_dict"
        torch.save({"state_dict": {f"module.{key}": value for key, value in state_dict.items()}}, path)
    else:
        path = tmp_path / "resnet18.pth"
        torch.save(state_dict, path)
    model = EGTR(tiny_model_config())
    report = load_backbone_weights(model, path)
    own = model.state_dict()
    assert torch.equal(own[BACKBONE_PREFIX + "layer3.1.conv2.weight"], state_dict["layer3.1.conv2.weight"])
    assert torch.equal(own[BACKBONE_PREFIX + "bn1.running_mean"], state_dict["bn1.running_mean"])
    assert report.missing == [] and report.mismatched == []
    assert "fc.weight" in report.unexpected and "bn1.num_batches_tracked" in report.unexpected
    assert all(key.startswith(BACKBONE_PREFIX) for key in report.loaded)


def test_backbone_of_another_depth_is_refused(tmp_path):
    state_dict = imagenet_resnet18_state_dict()
    state_dict["layer2.0.conv1.weight"] = torch.randn(128, 64, 1, 1)  # a ResNet-50 shape
    torch.save(state_dict, tmp_path / "resnet.pth")
    with pytest.raises(CheckpointError, match="another ResNet depth"):
        load_backbone_weights(EGTR(tiny_model_config()), tmp_path / "resnet.pth")


def test_backbone_file_that_is_not_a_resnet_is_refused(tmp_path):
    torch.save({"transformer.layer.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a ResNet"):
        load_backbone_weights(EGTR(tiny_model_config()), tmp_path / "other.pth")


def coco_like_detector_dir(tmp_path, use_safetensors: bool):
    """transformers' Deformable DETR layout: config.json + weights with 91 classes and 300 queries."""
    coco = EGTR(tiny_model_config(num_labels=91, num_queries=300))
    state_dict = {
        key: value
        for key, value in coco.state_dict().items()
        if not key.startswith(
            ("proj_q", "proj_k", "final_", "rel_predictor", "connectivity_layer", "triplet_dist", "rel_dist")
        )
    }
    directory = tmp_path / "deformable-detr"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "deformable_detr", "num_queries": 300}))
    if use_safetensors:
        # safetensors refuses shared tensors: the released files hold one copy per class_embed.i anyway.
        save_file(
            {key: value.clone().contiguous() for key, value in state_dict.items()},
            str(directory / "model.safetensors"),
        )
    else:
        torch.save(state_dict, directory / "pytorch_model.bin")
    return directory, state_dict


@pytest.mark.parametrize("use_safetensors", [False, True])
def test_coco_detector_loads_what_fits_and_reports_the_rest(tmp_path, use_safetensors):
    directory, state_dict = coco_like_detector_dir(tmp_path, use_safetensors)
    model = EGTR(tiny_model_config())
    head_before = model.rel_predictor.layers[0].weight.clone()
    report = load_pretrained_detector(model, directory)
    own = model.state_dict()
    key = "model.encoder.layers.0.self_attn.sampling_offsets.weight"
    assert torch.equal(own[key], state_dict[key])
    mismatched = {line.split(":")[0] for line in report.mismatched}
    # The COCO class head (91 classes) and query embeddings (300) do not fit and keep their initialisation.
    assert "class_embed.0.weight" in mismatched and "model.query_position_embeddings.weight" in mismatched
    assert torch.equal(model.rel_predictor.layers[0].weight, head_before)  # the relation head is never loaded
    assert report.missing == []


def test_detector_file_without_a_detector_is_refused(tmp_path):
    torch.save({"layer1.0.conv1.weight": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="no Deformable DETR encoder weights"):
        load_pretrained_detector(EGTR(tiny_model_config()), tmp_path)
