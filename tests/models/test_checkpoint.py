"""Loading and saving every supported checkpoint layout, and the errors for wrong files."""

import json
import re
import shutil

import pytest
import torch
from tests.models.helpers import TINY

from egtr import EGTR, CheckpointError, EGTRConfig
from egtr.models.checkpoint import read_checkpoint, read_state_dict
from egtr.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PREPROCESSOR_NAME,
    PreprocessorConfig,
    load_preprocessor_config,
)


def test_official_checkpoint_is_float16_and_loads_as_float32(reference_dir):
    checkpoint = torch.load(next((reference_dir / "artifact" / "checkpoints").glob("*.ckpt")), weights_only=True)
    assert checkpoint["state_dict"]["model.class_embed.0.weight"].dtype == torch.float16
    state_dict = read_state_dict(next((reference_dir / "artifact" / "checkpoints").glob("*.ckpt")))
    assert len(state_dict) == 289 and "class_embed.0.weight" in state_dict
    assert state_dict["class_embed.0.weight"].dtype == torch.float32


def test_single_ckpt_file_and_artifact_dir_give_the_same_model(reference_dir):
    from_dir = EGTR.from_pretrained(reference_dir / "artifact")
    from_file = EGTR.from_pretrained(next((reference_dir / "artifact" / "checkpoints").glob("*.ckpt")))
    for (key, a), (_, b) in zip(from_dir.state_dict().items(), from_file.state_dict().items()):
        assert torch.equal(a, b), key


def test_artifact_picks_the_largest_epoch(tmp_path, reference_dir):
    artifact = tmp_path / "artifact"
    shutil.copytree(reference_dir / "artifact", artifact)
    (artifact / "checkpoints" / "epoch=01-validation_loss=0.90.ckpt").write_bytes(b"not a checkpoint")
    EGTR.from_pretrained(artifact)  # epoch 03 is chosen, the broken epoch 01 file is never read
    (artifact / "checkpoints" / "epoch=07-validation_loss=0.40.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="epoch=07"):
        EGTR.from_pretrained(artifact)


def test_save_and_load_round_trip_exactly(tmp_path, reference_dir, reference_inputs):
    model = EGTR.from_pretrained(reference_dir / "artifact")
    model.save_pretrained(tmp_path / "ours")
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    reloaded = EGTR.from_pretrained(tmp_path / "ours")
    assert reloaded.config == model.config
    for (key, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), key
    pixel_values = torch.from_numpy(reference_inputs["pixel_values"])
    pixel_mask = torch.from_numpy(reference_inputs["pixel_mask"])
    with torch.no_grad():
        assert torch.equal(model(pixel_values, pixel_mask).pred_rel, reloaded(pixel_values, pixel_mask).pred_rel)


def test_shared_heads_stay_shared_after_loading(tmp_path):
    model = EGTR(EGTRConfig(**TINY))
    model.save_pretrained(tmp_path)
    reloaded = EGTR.from_pretrained(tmp_path)
    assert reloaded.class_embed[0] is reloaded.class_embed[1]
    with torch.no_grad():
        reloaded.class_embed[0].bias.add_(1.0)
    assert torch.equal(reloaded.class_embed[1].bias, reloaded.class_embed[0].bias)


def test_detector_checkpoint_given_as_egtr_is_explained(tmp_path):
    """The classic mistake (original issue #5): the pre-trained DETR link used as EGTR weights."""
    model = EGTR(EGTRConfig(**TINY))
    detector_state = {
        k: v
        for k, v in model.state_dict().items()
        if not k.startswith(("proj_", "final_", "rel_", "connectivity", "triplet_dist"))
    }
    detector_dir = tmp_path / "pretrained_detr"
    detector_dir.mkdir()
    torch.save(detector_state, detector_dir / "pytorch_model.bin")
    (detector_dir / "config.json").write_text(json.dumps({"model_type": "deformable_detr", **TINY}))
    with pytest.raises(CheckpointError, match=r"pre-trained detector[\s\S]*egtr train --detector-weights"):
        EGTR.from_pretrained(detector_dir)
    # The same weights inside an artifact layout: strict check lists the missing relation head.
    (detector_dir / "checkpoints").mkdir()
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in detector_state.items()}},
        detector_dir / "checkpoints" / "epoch=00-validation_loss=1.00.ckpt",
    )
    (detector_dir / "pytorch_model.bin").unlink()
    with pytest.raises(
        CheckpointError, match=r"detector checkpoint without EGTR's relation head[\s\S]*proj_q\.0\.weight"
    ):
        EGTR.from_pretrained(detector_dir)


def test_wrong_sizes_are_listed(tmp_path, reference_dir):
    artifact = tmp_path / "artifact"
    shutil.copytree(reference_dir / "artifact", artifact)
    config = json.loads((artifact / "config.json").read_text())
    config["num_queries"] = 31
    (artifact / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"shape mismatches \(1\)[\s\S]*query_position_embeddings"):
        EGTR.from_pretrained(artifact)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config.json: malformed JSON at line 1"):
        EGTR.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError):
        EGTR.from_pretrained(tmp_path / "missing")


def test_config_reads_official_json(reference_dir, reference_sizes):
    config = EGTRConfig.from_json(reference_dir / "artifact" / "config.json")
    expected = reference_sizes
    assert (config.d_model, config.encoder_layers, config.decoder_layers, config.num_queries) == (
        expected.d_model,
        expected.encoder_layers,
        expected.decoder_layers,
        expected.num_queries,
    )
    assert (config.num_labels, config.num_rel_labels, config.backbone) == (
        expected.num_labels,
        expected.num_rel_labels,
        expected.backbone,
    )
    assert config.class_names is None  # LABEL_i placeholders are dropped


# ------------------------------------------------------------------------------------- preprocessor_config.json
def test_preprocessor_config_round_trip_in_the_transformers_layout(tmp_path):
    preprocessor = PreprocessorConfig(128, 256, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    EGTR(EGTRConfig(**TINY)).save_pretrained(tmp_path, preprocessor=preprocessor)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors", PREPROCESSOR_NAME]
    values = json.loads((tmp_path / PREPROCESSOR_NAME).read_text())
    # What transformers' DeformableDetrImageProcessor reads: shorter side, longer-side cap, PIL bilinear, 1/255.
    assert values["size"] == {"shortest_edge": 128, "longest_edge": 256}
    assert values["image_mean"] == [0.5, 0.4, 0.3] and values["image_std"] == [0.2, 0.25, 0.3]
    assert values["do_normalize"] is values["do_resize"] is values["do_rescale"] is True
    assert values["resample"] == 2 and values["rescale_factor"] == pytest.approx(1 / 255)
    assert load_preprocessor_config(tmp_path) == preprocessor
    assert PreprocessorConfig.load(tmp_path / PREPROCESSOR_NAME) == preprocessor
    # A loaded model carries its preprocessing, and saving it again writes the same.
    reloaded = EGTR.from_pretrained(tmp_path)
    assert reloaded.preprocessor == preprocessor
    reloaded.save_pretrained(tmp_path / "again")
    assert load_preprocessor_config(tmp_path / "again") == preprocessor


def test_a_model_built_in_python_saves_the_paper_preprocessing(tmp_path):
    EGTR(EGTRConfig(**TINY)).save_pretrained(tmp_path)
    assert load_preprocessor_config(tmp_path) == PreprocessorConfig()


def test_official_artifact_has_no_preprocessor_config(reference_dir):
    artifact = reference_dir / "artifact"
    assert load_preprocessor_config(artifact) is None
    assert read_checkpoint(artifact).preprocessor is None
    assert read_checkpoint(next((artifact / "checkpoints").glob("*.ckpt"))).preprocessor is None
    assert PreprocessorConfig() == PreprocessorConfig(800, 1333, IMAGENET_MEAN, IMAGENET_STD)  # the paper's


def test_a_checkpoint_file_finds_the_preprocessor_config_of_its_model_directory(tmp_path, reference_dir):
    artifact = tmp_path / "artifact"
    shutil.copytree(reference_dir / "artifact", artifact)
    preprocessor = PreprocessorConfig(96, 192)
    preprocessor.save(artifact)
    checkpoint_file = next((artifact / "checkpoints").glob("*.ckpt"))
    assert read_checkpoint(checkpoint_file).preprocessor == preprocessor
    assert read_checkpoint(artifact).preprocessor == preprocessor


def test_explicit_sizes_win_field_by_field():
    recorded = PreprocessorConfig(128, 256, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert recorded.with_sizes() == recorded
    assert recorded.with_sizes(size=96) == PreprocessorConfig(96, 256, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert recorded.with_sizes(max_size=400).longest_edge == 400


def test_older_transformers_size_layout_is_read():
    values = {"size": 600, "max_size": 1000, "image_mean": [0.1, 0.2, 0.3], "image_std": [1, 1, 1]}
    assert PreprocessorConfig.from_dict(values) == PreprocessorConfig(600, 1000, (0.1, 0.2, 0.3), (1.0, 1.0, 1.0))
    assert PreprocessorConfig.from_dict({"size": {"shortest_edge": 5, "longest_edge": 9}}) == PreprocessorConfig(5, 9)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"size": None}, "size"),
        ({"size": {"height": 800, "width": 800}}, "size"),
        ({"size": {"shortest_edge": "800", "longest_edge": 1333}}, "size.shortest_edge"),
        ({"size": {"shortest_edge": 800, "longest_edge": 0}}, "size.longest_edge"),
        ({"image_mean": [0.5, 0.5]}, "image_mean"),
        ({"image_std": [0.2, 0.0, 0.2]}, "image_std"),
        ({"do_normalize": False}, "do_normalize"),
        ({"resample": 3}, "resample"),
        ({"rescale_factor": 1.0}, "rescale_factor"),
    ],
)
def test_malformed_preprocessor_config_names_the_file_and_the_field(tmp_path, change, field):
    values = {**PreprocessorConfig().to_dict(), **change}
    values = {key: value for key, value in values.items() if value is not None}
    (tmp_path / PREPROCESSOR_NAME).write_text(json.dumps(values))
    with pytest.raises(CheckpointError, match=rf"{PREPROCESSOR_NAME}: field '{re.escape(field)}'"):
        load_preprocessor_config(tmp_path)


def test_preprocessor_config_that_is_not_json_names_the_file(tmp_path):
    (tmp_path / PREPROCESSOR_NAME).write_text('{"size": ')
    with pytest.raises(CheckpointError, match=rf"{PREPROCESSOR_NAME}: malformed JSON"):
        load_preprocessor_config(tmp_path)
    (tmp_path / PREPROCESSOR_NAME).write_text("[800, 1333]")
    with pytest.raises(CheckpointError, match=rf"{PREPROCESSOR_NAME}: expected a JSON object"):
        load_preprocessor_config(tmp_path)
