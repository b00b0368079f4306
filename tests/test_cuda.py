"""CUDA paths compute what the CPU paths compute (skipped without a GPU; `benchmarks/gpu_session.sh` runs them)."""

import pytest
import torch

from egtr import EGTR
from egtr.models.deformable_detr import (
    multi_scale_deformable_attention,
    multi_scale_deformable_attention_gather,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def reference_pair(reference_dir, reference_inputs):
    """The reference model's fp32 CPU outputs, and the same model and inputs on the GPU."""
    model = EGTR.from_pretrained(reference_dir / "artifact").eval()
    inputs = [torch.from_numpy(reference_inputs[name]) for name in ("pixel_values", "pixel_mask")]
    with torch.no_grad():
        cpu_outputs = model(*inputs)
    return cpu_outputs, model.cuda(), [tensor.cuda() for tensor in inputs]


@pytest.fixture(autouse=True)
def _no_tf32():
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def test_both_attention_forms_on_cuda_match_the_cpu():
    generator = torch.Generator().manual_seed(0)
    shapes = [(7, 11), (4, 6), (2, 3), (1, 1)]
    value = torch.randn(2, sum(h * w for h, w in shapes), 3, 5, generator=generator, dtype=torch.float64)
    locations = torch.rand(2, 9, 3, len(shapes), 4, 2, generator=generator, dtype=torch.float64) * 2.2 - 0.6
    weights = torch.rand(2, 9, 3, len(shapes), 4, generator=generator, dtype=torch.float64)
    expected = multi_scale_deformable_attention(value, shapes, locations, weights)
    for attend in (multi_scale_deformable_attention, multi_scale_deformable_attention_gather):
        result = attend(value.cuda(), shapes, locations.cuda(), weights.cuda()).cpu()
        torch.testing.assert_close(result, expected, rtol=1e-10, atol=1e-10)


def test_model_fp32_on_cuda_matches_cpu(reference_pair):
    cpu_outputs, model, inputs = reference_pair
    with torch.no_grad():
        cuda_outputs = model(*inputs)
    for name in ("logits", "pred_boxes", "pred_rel", "pred_connectivity"):
        torch.testing.assert_close(
            getattr(cuda_outputs, name).cpu(), getattr(cpu_outputs, name), rtol=1e-3, atol=1e-4, msg=name
        )


def test_model_bf16_autocast_on_cuda_is_within_bf16_tolerance(reference_pair):
    cpu_outputs, model, inputs = reference_pair
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        outputs = model(*inputs)
    for name, tolerance in (("pred_boxes", 2e-2), ("pred_rel", 2e-2), ("pred_connectivity", 2e-2)):
        difference = (getattr(outputs, name).float().cpu() - getattr(cpu_outputs, name)).abs().max().item()
        assert difference < tolerance, (name, difference)
