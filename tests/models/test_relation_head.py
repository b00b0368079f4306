"""The factorised relation head computes the same function as the original's dense pair tensor."""

import dataclasses

import torch

from egtr import EGTR, EGTRConfig

TINY = EGTRConfig(
    backbone="resnet18",
    d_model=64,
    encoder_layers=1,
    decoder_layers=3,
    num_queries=12,
    num_labels=6,
    num_rel_labels=4,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
)


def _random_head_inputs(batch=2, layers=3, queries=12, d_model=64):
    generator = torch.Generator().manual_seed(0)
    return (
        torch.randn(batch, layers, queries, d_model, generator=generator),
        torch.randn(batch, layers, queries, d_model, generator=generator),
        torch.randn(batch, queries, d_model, generator=generator),
    )


def test_factorised_equals_dense_forward_and_gradients():
    torch.manual_seed(0)
    model = EGTR(TINY)
    for parameter in model.parameters():  # non-trivial weights everywhere, the gate included
        if parameter.requires_grad:
            torch.nn.init.normal_(parameter, std=0.2)
    inputs = _random_head_inputs()
    fast = model.relation_head(*inputs)
    dense = model.relation_head_dense(*inputs)
    for fast_tensor, dense_tensor in zip(fast, dense):
        assert torch.allclose(fast_tensor, dense_tensor, atol=1e-5, rtol=1e-5)

    def gradients(head):
        model.zero_grad()
        relation, connectivity, _ = head(*inputs)
        (relation.square().mean() + connectivity.sigmoid().mean()).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    fast_grads, dense_grads = gradients(model.relation_head), gradients(model.relation_head_dense)
    assert fast_grads.keys() == dense_grads.keys() and "rel_predictor_gate.weight" in fast_grads
    for name in fast_grads:
        assert torch.allclose(fast_grads[name], dense_grads[name], atol=1e-5, rtol=1e-4), name


def test_dense_switch_in_config_gives_same_model_outputs(reference_dir, reference_inputs):
    model = EGTR.from_pretrained(reference_dir / "artifact")
    dense = EGTR(dataclasses.replace(model.config, dense_relation_head=True)).eval()
    dense.load_state_dict(model.state_dict())
    pixel_values = torch.from_numpy(reference_inputs["pixel_values"])
    pixel_mask = torch.from_numpy(reference_inputs["pixel_mask"])
    with torch.no_grad():
        fast_out, dense_out = model(pixel_values, pixel_mask), dense(pixel_values, pixel_mask)
    assert torch.allclose(fast_out.pred_rel, dense_out.pred_rel, atol=1e-6)
    assert torch.allclose(fast_out.rel_gates, dense_out.rel_gates, atol=1e-6)
