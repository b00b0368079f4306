"""Fidelity of the model to the original EGTR code, and the full-size configuration."""

from pathlib import Path

import numpy as np
import pytest
import torch

from egtr import EGTR, EGTRConfig

STATE_DICT_KEYS = Path(__file__).parents[2] / "tests" / "fixtures" / "state-dict-keys.txt"


@pytest.fixture(scope="module")
def reference_model(reference_dir):
    return EGTR.from_pretrained(reference_dir / "artifact")


@pytest.fixture(scope="module")
def reference_forward(reference_model, reference_inputs):
    with torch.no_grad():
        return reference_model(
            torch.from_numpy(reference_inputs["pixel_values"]), torch.from_numpy(reference_inputs["pixel_mask"])
        )


def _max_abs_diff(ours: torch.Tensor, reference: np.ndarray) -> float:
    assert tuple(ours.shape) == reference.shape
    return float(np.abs(ours.numpy() - reference).max())


@pytest.mark.parametrize(
    "name, reference_name, tolerance",
    [
        ("logits", "logits", 1e-4),
        ("pred_boxes", "pred_boxes", 1e-5),
        ("pred_rel", "pred_rel", 1e-5),
        ("pred_connectivity", "pred_connectivity", 1e-5),
        ("rel_logits", "pred_rel_logits", 1e-4),
        ("connectivity_logits", "pred_connectivity_logits", 1e-4),
        ("decoder_hidden_states", "decoder_hidden_states", 1e-4),
        ("encoder_last_hidden_state", "encoder_last_hidden_state", 1e-4),
        ("init_reference_points", "init_reference_points", 1e-5),
    ],
)
def test_forward_reproduces_original(reference_forward, reference_outputs, name, reference_name, tolerance):
    """Official-format weights + padded batch of two images -> the original code's outputs."""
    difference = _max_abs_diff(getattr(reference_forward, name), reference_outputs[reference_name])
    print(f"{name}: max abs diff {difference:.3e}")
    assert difference < tolerance


def test_self_attention_byproducts_match(reference_forward, reference_outputs):
    # The original returns q scaled by head_dim^-0.5 and split into heads: undo both.
    queries = reference_outputs["decoder_attention_queries"]  # (B, L, heads, N, head_dim)
    batch, layers, heads, num_queries, head_dim = queries.shape
    queries = (queries * head_dim**0.5).transpose(0, 1, 3, 2, 4).reshape(batch, layers, num_queries, heads * head_dim)
    keys = reference_outputs["decoder_attention_keys"].transpose(0, 1, 3, 2, 4).reshape(queries.shape)
    assert _max_abs_diff(reference_forward.self_attention_queries, queries) < 1e-5
    assert _max_abs_diff(reference_forward.self_attention_keys, keys) < 1e-4


def test_reference_model_sizes(reference_model, reference_sizes):
    # The original's counts, from its checkpoint: parameters (shared heads once, frequency tables included) and
    # the values of its frozen-batch-norm buffers.
    assert sum(p.numel() for p in reference_model.parameters()) == reference_sizes.num_parameters
    assert sum(b.numel() for b in reference_model.buffers()) == reference_sizes.num_buffer_values
    config = reference_model.config
    assert (config.num_queries, config.backbone) == (reference_sizes.num_queries, reference_sizes.backbone)


def test_batch_elements_are_independent(reference_model, reference_inputs, reference_forward):
    """Image 0 fills the padded canvas, so running it alone must give its batch outputs."""
    with torch.no_grad():
        alone = reference_model(
            torch.from_numpy(reference_inputs["pixel_values"][:1]), torch.from_numpy(reference_inputs["pixel_mask"][:1])
        )
    assert torch.allclose(alone.pred_rel, reference_forward.pred_rel[:1], atol=1e-5)
    assert torch.allclose(alone.pred_boxes, reference_forward.pred_boxes[:1], atol=1e-5)


def test_pixel_mask_is_used(reference_model, reference_inputs):
    """Image 1 is padded: treating its padding as image content must change the result."""
    pixel_values = torch.from_numpy(reference_inputs["pixel_values"][1:])
    pixel_mask = torch.from_numpy(reference_inputs["pixel_mask"][1:])
    with torch.no_grad():
        padded_out = reference_model(pixel_values, pixel_mask)
        no_mask_out = reference_model(pixel_values, torch.ones_like(pixel_mask))
    # Ignoring the mask changes the result, so the mask is really used (sine positions, valid ratios, value masking).
    assert not torch.allclose(padded_out.pred_boxes, no_mask_out.pred_boxes, atol=1e-3)


def test_full_size_vg_configuration_matches_official_layout():
    model = EGTR(EGTRConfig())  # R50, 200 queries, 150 classes, 50 predicates
    state_dict = model.state_dict()
    reference = [line.split("\t") for line in STATE_DICT_KEYS.read_text().splitlines()]
    assert list(state_dict) == [key for key, _, _ in reference]
    assert all(str(tuple(state_dict[key].shape)) == shape for key, shape, _ in reference)
    assert sum(p.numel() for p in model.parameters()) == 42_510_356
    # Relation + connectivity head (reference §2.8).
    head = [
        model.proj_q,
        model.proj_k,
        model.final_sub_proj,
        model.final_obj_proj,
        model.rel_predictor_gate,
        model.rel_predictor,
        model.connectivity_layer,
    ]
    assert sum(p.numel() for module in head for p in module.parameters()) == 1_328_948


@pytest.mark.slow
def test_full_size_forward_at_600x1000_on_cpu():
    model = EGTR(EGTRConfig()).eval()
    with torch.no_grad():
        output = model(torch.randn(1, 3, 600, 1000), torch.ones(1, 600, 1000, dtype=torch.long))
    assert output.logits.shape == (1, 200, 150)
    assert output.pred_rel.shape == (1, 200, 200, 50)
    assert output.pred_connectivity.shape == (1, 200, 200, 1)
    assert torch.isfinite(output.pred_rel).all() and (output.pred_boxes >= 0).all() and (output.pred_boxes <= 1).all()


def test_trainable_batch_norm_option_matches_frozen_in_eval():
    """backbone_norm="batch" (training from scratch) has the same keys and, in eval mode, the same function."""
    small = {
        "backbone": "resnet18",
        "d_model": 64,
        "encoder_layers": 1,
        "decoder_layers": 2,
        "num_queries": 8,
        "num_labels": 4,
        "num_rel_labels": 3,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 64,
    }
    batch_model = EGTR(EGTRConfig(**small, backbone_norm="batch"))
    frozen_model = EGTR(EGTRConfig(**small))
    pixel_values = torch.randn(2, 3, 64, 96)
    batch_model.train()
    batch_model(pixel_values)  # batch statistics update the running averages
    norm = batch_model.model.backbone.conv_encoder.model.bn1
    assert isinstance(norm, torch.nn.BatchNorm2d) and int(norm.num_batches_tracked) == 1
    state = {k: v for k, v in batch_model.state_dict().items() if k in frozen_model.state_dict()}
    assert set(frozen_model.state_dict()) <= set(batch_model.state_dict())
    frozen_model.load_state_dict(state)
    batch_model.eval()
    with torch.no_grad():
        assert torch.allclose(batch_model(pixel_values).pred_boxes, frozen_model(pixel_values).pred_boxes, atol=1e-5)


def test_bf16_autocast_on_cpu_stays_within_bf16_tolerance(reference_model, reference_inputs, reference_forward):
    """The reduced-precision path (`--dtype bfloat16`, 1.8x faster on AVX-512-BF16 CPUs) computes the same model."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = reference_model(
            torch.from_numpy(reference_inputs["pixel_values"]), torch.from_numpy(reference_inputs["pixel_mask"])
        )
    for name in ("pred_boxes", "pred_rel", "pred_connectivity"):
        difference = (getattr(outputs, name).float() - getattr(reference_forward, name)).abs().max().item()
        assert difference < 2e-2, (name, difference)
    assert (outputs.logits.float() - reference_forward.logits).abs().max().item() < 0.1
