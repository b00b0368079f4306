"""The gather form of multi-scale deformable attention (the CPU path) computes grid_sample's function exactly."""

import pytest
import torch

from egtr import EGTR
from egtr.models import deformable_detr
from egtr.models.deformable_detr import (
    multi_scale_deformable_attention,
    multi_scale_deformable_attention_gather,
)

# Odd sizes, a 1x1 level and a level wider than tall: border and stride mistakes show up in one of them.
SPATIAL_SHAPES = [(7, 11), (4, 6), (2, 3), (1, 1)]


def _inputs(dtype, batch=2, queries=9, heads=3, head_dim=5, points=4, spread=(-0.6, 1.6), seed=0):
    generator = torch.Generator().manual_seed(seed)
    total = sum(h * w for h, w in SPATIAL_SHAPES)
    value = torch.randn(batch, total, heads, head_dim, generator=generator, dtype=dtype)
    low, high = spread
    locations = torch.rand(batch, queries, heads, len(SPATIAL_SHAPES), points, 2, generator=generator, dtype=dtype)
    locations = locations * (high - low) + low  # many points partly or wholly outside their level
    weights = torch.rand(batch, queries, heads, len(SPATIAL_SHAPES), points, generator=generator, dtype=dtype)
    return value, locations, weights / weights.sum((-1, -2), keepdim=True)


def test_gather_equals_grid_sample_forward_and_gradients():
    value, locations, weights = (t.requires_grad_() for t in _inputs(torch.float64))
    plain = multi_scale_deformable_attention(value, SPATIAL_SHAPES, locations, weights)
    gather = multi_scale_deformable_attention_gather(value, SPATIAL_SHAPES, locations, weights)
    assert gather.shape == plain.shape == (2, 9, 15)
    torch.testing.assert_close(gather, plain, rtol=1e-12, atol=1e-12)

    upstream = torch.randn_like(plain)
    plain_grads = torch.autograd.grad((plain * upstream).sum(), (value, locations, weights))
    gather_grads = torch.autograd.grad((gather * upstream).sum(), (value, locations, weights))
    for name, gather_grad, plain_grad in zip(("value", "locations", "weights"), gather_grads, plain_grads):
        assert plain_grad.abs().max() > 0, name
        torch.testing.assert_close(gather_grad, plain_grad, rtol=1e-10, atol=1e-10, msg=name)


def test_gather_on_pixel_centres_borders_and_far_outside():
    # Locations on every pixel centre and edge of each level, from two pixels before the map to two after.
    value, _, _ = _inputs(torch.float64)
    steps = []
    for height, width in SPATIAL_SHAPES:
        xs = torch.arange(-4, 2 * width + 5, dtype=torch.float64) / (2 * width)
        ys = torch.arange(-4, 2 * height + 5, dtype=torch.float64) / (2 * height)
        steps.append(torch.cartesian_prod(xs, ys))
    count = max(len(grid) for grid in steps)
    points = torch.stack([torch.cat([g, torch.full((count - len(g), 2), 30.0, dtype=g.dtype)]) for g in steps])
    batch, _, heads, _ = value.shape
    locations = points.permute(1, 0, 2)  # (levels, Q, 2) -> (Q, levels, 2); padding points lie far outside
    locations = locations[None, :, None, :, None, :].expand(batch, count, heads, -1, 1, 2).contiguous()
    weights = torch.rand(batch, count, heads, len(SPATIAL_SHAPES), 1, dtype=torch.float64)
    plain = multi_scale_deformable_attention(value, SPATIAL_SHAPES, locations, weights)
    gather = multi_scale_deformable_attention_gather(value, SPATIAL_SHAPES, locations, weights)
    torch.testing.assert_close(gather, plain, rtol=1e-12, atol=1e-12)


def test_gather_gives_nan_for_nan_locations_like_grid_sample():
    value, locations, weights = _inputs(torch.float32)
    locations[0, 3, 1, 2, 0, 0] = float("nan")  # a diverged model: NaN offsets
    plain = multi_scale_deformable_attention(value, SPATIAL_SHAPES, locations, weights)
    gather = multi_scale_deformable_attention_gather(value, SPATIAL_SHAPES, locations, weights)
    assert torch.equal(gather.isnan(), plain.isnan()) and gather.isnan().any()
    torch.testing.assert_close(gather.nan_to_num(), plain.nan_to_num(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_gather_in_reduced_and_single_precision(dtype, tolerance):
    value, locations, weights = _inputs(torch.float64, spread=(-0.2, 1.2))
    exact = multi_scale_deformable_attention(value, SPATIAL_SHAPES, locations, weights)
    # Value in `dtype` (as under autocast), locations and weights as the model makes them (float32).
    gather = multi_scale_deformable_attention_gather(
        value.to(dtype), SPATIAL_SHAPES, locations.float(), weights.float()
    )
    assert gather.dtype == dtype
    torch.testing.assert_close(gather.double(), exact, rtol=tolerance, atol=tolerance)


def test_model_outputs_do_not_depend_on_the_attention_form(reference_dir, reference_inputs, monkeypatch):
    model = EGTR.from_pretrained(reference_dir / "artifact").eval()
    pixel_values = torch.from_numpy(reference_inputs["pixel_values"])
    pixel_mask = torch.from_numpy(reference_inputs["pixel_mask"])  # a padded batch: masked values are zeros
    with torch.no_grad():
        gather = model(pixel_values, pixel_mask)
        monkeypatch.setattr(
            deformable_detr, "multi_scale_deformable_attention_gather", multi_scale_deformable_attention
        )
        plain = model(pixel_values, pixel_mask)
    for name in ("logits", "pred_boxes", "pred_rel", "pred_connectivity", "encoder_last_hidden_state"):
        torch.testing.assert_close(getattr(gather, name), getattr(plain, name), rtol=1e-4, atol=1e-5, msg=name)
