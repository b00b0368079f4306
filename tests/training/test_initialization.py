"""Initialisation from users' files: ImageNet ResNet checkpoints and pre-trained (e.g. COCO) Deformable DETR."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from tests.training.conftest import tiny_model_config

from egtr import EGTR
from egtr.errors import CheckpointError
from egtr.training import load_backbone_weights, load_initial_weights
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
    report = load_initial_weights(model, directory, scope="detector", reinitialize="any")
    own = model.state_dict()
    key = "model.encoder.layers.0.self_attn.sampling_offsets.weight"
    assert torch.equal(own[key], state_dict[key])
    # The COCO class head (91 classes) and query embeddings (300) do not fit and keep their initialisation.
    assert "91" in report.reinitialized["class_embed.0.weight"]
    assert "(300, 128)" in report.reinitialized["model.query_position_embeddings.weight"]
    assert torch.equal(model.rel_predictor.layers[0].weight, head_before)  # the relation head is never loaded
    assert "trained anew" in report.reinitialized["rel_predictor.layers.0.weight"]
    assert key in report.kept and not any(k.startswith("class_embed.") for k in report.kept)


def test_coco_detector_is_refused_by_the_strict_and_labels_policies(tmp_path):
    directory, _ = coco_like_detector_dir(tmp_path, use_safetensors=False)
    model = EGTR(tiny_model_config())
    before = model.model.level_embed.clone()
    with pytest.raises(CheckpointError, match=r"query_position_embeddings.weight: shape[\s\S]*--reinitialize any"):
        load_initial_weights(model, directory, scope="detector", reinitialize="labels")
    with pytest.raises(CheckpointError, match=r"class_embed.0.weight: shape[\s\S]*--reinitialize labels"):
        load_initial_weights(model, directory, scope="detector")
    assert torch.equal(model.model.level_embed, before)  # a refused file changes nothing


def test_detector_file_without_a_detector_is_refused(tmp_path):
    torch.save({"layer1.0.conv1.weight": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="no Deformable DETR encoder weights"):
        load_initial_weights(EGTR(tiny_model_config()), tmp_path, scope="detector", reinitialize="any")


def saved_model(directory, **overrides) -> EGTR:
    model = EGTR(tiny_model_config(**overrides))
    with torch.no_grad():
        model.triplet_dist.fill_(0.5)
    model.save_pretrained(directory)
    return model


def test_fine_tuning_to_new_labels_keeps_the_body_and_reinitialises_the_label_heads(tmp_path):
    source = saved_model(tmp_path / "vg", num_labels=8, num_rel_labels=6)
    target = EGTR(tiny_model_config(num_labels=3, num_rel_labels=2, class_names=["a", "b", "c"]))
    fresh_class_bias = target.class_embed[0].bias.clone()
    report = load_initial_weights(target, tmp_path / "vg", reinitialize="labels")
    # Backbone, transformer, box head and the relation-extraction layers come from the file ...
    for key in (
        "model.backbone.conv_encoder.model.layer2.0.conv1.weight",
        "proj_q.1.weight",
        "bbox_embed.0.layers.2.bias",
    ):
        assert torch.equal(target.state_dict()[key], source.state_dict()[key]), key
        assert key in report.kept
    assert torch.equal(target.rel_predictor.layers[0].weight, source.rel_predictor.layers[0].weight)
    # ... the class, predicate and frequency-dependent tensors keep their fresh initialisation, with the reason.
    assert torch.equal(target.class_embed[0].bias, fresh_class_bias)
    assert report.reinitialized["class_embed.1.weight"] == "the file has 8 classes, this model 3"
    assert report.reinitialized["rel_predictor.layers.2.bias"] == "the file has 6 predicates, this model 2"
    assert "8 classes" in report.reinitialized["triplet_dist"] and "rel_predictor.layers.1.weight" in report.kept
    assert set(report.reinitialized) == {
        *(f"class_embed.{i}.{p}" for i in range(2) for p in ("weight", "bias")),
        "rel_predictor.layers.2.weight",
        "rel_predictor.layers.2.bias",
        "triplet_dist",
        "rel_dist",
    }


def test_same_label_count_with_other_names_is_reinitialised_and_same_labels_are_kept(tmp_path):
    names = [f"class {i}" for i in range(8)]
    source = saved_model(tmp_path / "source", class_names=names)
    other = EGTR(tiny_model_config(class_names=names[::-1]))
    report = load_initial_weights(other, tmp_path / "source", reinitialize="labels")
    assert report.reinitialized["class_embed.0.weight"] == "the classes differ (same count 8, other names)"
    assert "rel_predictor.layers.2.weight" in report.kept  # predicate names unknown on one side: same count kept
    same = EGTR(tiny_model_config(class_names=names))
    report = load_initial_weights(same, tmp_path / "source", reinitialize="labels")
    assert report.reinitialized == {} and torch.equal(same.triplet_dist, source.triplet_dist)


def test_strict_loading_refuses_other_labels_and_other_sizes(tmp_path):
    saved_model(tmp_path / "vg", num_labels=8)
    with pytest.raises(CheckpointError, match=r"class_embed.0.weight: shape: file \(8, 64\), model \(3, 64\)"):
        load_initial_weights(EGTR(tiny_model_config(num_labels=3)), tmp_path / "vg")
    # Another number of queries is not a label change: "labels" still refuses it.
    with pytest.raises(CheckpointError, match="query_position_embeddings"):
        load_initial_weights(
            EGTR(tiny_model_config(num_labels=3, num_queries=20)), tmp_path / "vg", reinitialize="labels"
        )


def test_a_class_head_reinitialised_for_new_labels_trains_with_the_relation_head_rate(tmp_path):
    from egtr.training import TrainConfig, build_parameter_groups
    from egtr.training.initialization import new_class_head

    saved_model(tmp_path / "vg", num_labels=8)
    model = EGTR(tiny_model_config(num_labels=3))
    report = load_initial_weights(model, tmp_path / "vg", reinitialize="labels")
    new_heads = new_class_head({"init_from": {"reinitialized": report.reinitialized}})
    assert new_heads == {f"class_embed.{i}.{p}" for i in range(2) for p in ("weight", "bias")}
    groups = {group["name"]: group for group in build_parameter_groups(model, TrainConfig(), new_heads=new_heads)}
    head = {id(parameter) for parameter in groups["relation_head"]["params"]}
    assert id(model.class_embed[0].weight) in head and groups["relation_head"]["lr"] == TrainConfig().lr_relation_head
    plain = {group["name"]: group for group in build_parameter_groups(model, TrainConfig())}
    assert id(model.class_embed[0].weight) in {id(parameter) for parameter in plain["body"]["params"]}


def test_detector_weights_initialise_the_detector_only(tmp_path):
    source = EGTR(tiny_model_config())
    torch.save(
        {k: v for k, v in source.state_dict().items() if not k.startswith(("proj_", "rel_"))},
        tmp_path / "pytorch_model.bin",
    )
    target = EGTR(tiny_model_config())
    report = load_initial_weights(target, tmp_path, scope="detector")
    assert torch.equal(target.model.level_embed, source.model.level_embed)
    assert not torch.equal(target.proj_q[0].weight, source.proj_q[0].weight)
    assert "proj_q.0.weight" in report.reinitialized and "model.level_embed" in report.kept
