"""The whole forward pass traces into one graph, so `torch.compile` (and its CUDA graphs) captures all of it."""

import pytest
import torch

from egtr import EGTR, EGTRConfig
from egtr.models import deformable_detr

TINY = EGTRConfig(
    backbone="resnet18",
    d_model=64,
    encoder_layers=1,
    decoder_layers=2,
    num_queries=12,
    num_labels=6,
    num_rel_labels=4,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
)


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["gather", "grid_sample"])
def test_forward_has_no_graph_breaks(attention, monkeypatch):
    if attention == "grid_sample":  # the CUDA path, traced here on CPU tensors
        monkeypatch.setattr(
            deformable_detr, "multi_scale_deformable_attention_gather", deformable_detr.multi_scale_deformable_attention
        )
    torch._dynamo.reset()
    model = EGTR(TINY).eval()
    pixel_mask = torch.ones(2, 96, 128, dtype=torch.long)
    pixel_mask[1, :, 100:] = 0  # a padded batch
    with torch.no_grad():
        explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 96, 128), pixel_mask)
    assert explanation.graph_break_count == 0, [str(reason.reason) for reason in explanation.break_reasons]
    assert explanation.graph_count == 1
