"""The training loss makes no host-device synchronisation apart from the Hungarian matching.

On the CPU there is nothing to synchronise with, so the check looks at the ATen operators the criterion runs
(forward and backward) and fails on those that synchronise on a GPU: `.item()`/`float()`/`bool()` of a tensor
(`_local_scalar_dense`), data-dependent shapes (`nonzero`, `masked_select`, boolean-mask indexing, ...),
tensors built from Python data (`lift_fresh`: a host-to-device copy on a GPU, `x[index] = 1.0` included) and
copies between devices. `EGTRCriterion.match` (the matcher's copy of the costs to the CPU and the copy of the
assignment back) and the range checks of CPU-resident relations are allowed and not recorded. With a GPU, the
same step also runs under `torch.cuda.set_sync_debug_mode("error")`.
"""

from __future__ import annotations

import contextlib
import functools
import traceback

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from egtr.config import LossConfig
from egtr.losses import EGTRCriterion

from .test_criterion import _criterion, _random_outputs, _random_targets

NUM_LAYERS = 3

# Operators that read device data on the host (a synchronisation) or copy host data to the device.
SYNC_OPS = {
    "aten::_local_scalar_dense",  # .item(), float(t), int(t), bool(t), `if t:`, t.tolist()
    "aten::is_nonzero",
    "aten::equal",
    "aten::nonzero",
    "aten::masked_select",
    "aten::_unique",
    "aten::_unique2",
    "aten::unique_dim",
    "aten::unique_consecutive",
    "aten::bincount",
    "aten::lift_fresh",  # torch.tensor(python data), and the value of `x[index] = python scalar`
    "aten::lift_fresh_copy",
}
INDEX_OPS = {"aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_"}


def _sync_reason(func, args, kwargs, output) -> str | None:
    """Why this operator call would synchronise on a GPU, or None."""
    name = func._schema.name
    if name in SYNC_OPS:
        return name
    if name in INDEX_OPS and any(
        isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8) for index in args[1]
    ):
        return f"{name} with a boolean mask"
    if name == "aten::repeat_interleave" and kwargs.get("output_size") is None and len(args) < 3:
        return "repeat_interleave without output_size"
    if name == "aten::_to_copy" and output.device != args[0].device:
        return f"copy {args[0].device} -> {output.device}"
    if name == "aten::copy_" and args[0].device != args[1].device:
        return f"copy {args[1].device} -> {args[0].device}"
    return None


class SyncRecorder(TorchDispatchMode):
    """Records the operators that would synchronise, with the egtr source lines that called them."""

    def __init__(self) -> None:
        super().__init__()
        self.offences: list[str] = []
        self._pause_depth = 0

    @contextlib.contextmanager
    def paused(self):
        self._pause_depth += 1
        try:
            yield
        finally:
            self._pause_depth -= 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        if not self._pause_depth:
            first_output = next((t for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor)), None)
            reason = _sync_reason(func, args, kwargs, first_output)
            if reason is not None:
                callers = [
                    f"{frame.filename.split('/src/')[-1]}:{frame.lineno} {frame.line}"
                    for frame in traceback.extract_stack()
                    if "/egtr/" in frame.filename and "/tests/" not in frame.filename
                ]
                self.offences.append(f"{reason} <- {' <- '.join(reversed(callers)) or 'autograd'}")
        return output


def _paused(recorder: SyncRecorder, method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with recorder.paused():
            return method(*args, **kwargs)

    return wrapper


def _allow_matching(monkeypatch: pytest.MonkeyPatch, recorder: SyncRecorder) -> None:
    monkeypatch.setattr(EGTRCriterion, "match", _paused(recorder, EGTRCriterion.match))
    monkeypatch.setattr(
        EGTRCriterion,
        "_check_cpu_relation_ranges",
        _paused(recorder, EGTRCriterion._check_cpu_relation_ranges),
    )


def _case(loss_config: LossConfig, use_relation_losses: bool = True, device: str = "cpu"):
    """Criterion, outputs (leaves requiring grad) and targets: 3 images, one without objects, one with more
    objects than queries (unmatched targets, dropped relations)."""
    generator = torch.Generator().manual_seed(11)
    outputs = _random_outputs(generator, batch_size=3, num_queries=8, num_layers=NUM_LAYERS)
    outputs["rel_gates"] = torch.rand(2, generator=generator)
    outputs = {
        name: [t.to(device).requires_grad_() for t in value]
        if isinstance(value, list)
        else value.to(device).requires_grad_()
        for name, value in outputs.items()
    }
    targets = [
        {name: value.to(device) for name, value in target.items()}
        for target in _random_targets(generator, [3, 0, 11], [4, 0, 6])
    ]
    criterion = _criterion(
        loss_config=loss_config, use_relation_losses=use_relation_losses, num_decoder_layers=NUM_LAYERS
    )
    return criterion, outputs, targets


CASES = {
    "egtr": (LossConfig(auxiliary_loss=True), True),
    "open_images_random_sampling": (
        LossConfig(auxiliary_loss=True, rel_sample_nonmatching_largest=False, rel_sample_negatives_largest=False),
        True,
    ),
    "no_smoothing_no_sampling": (
        LossConfig(auxiliary_loss=True, smoothing=0.0, rel_sample_negatives=None, rel_sample_nonmatching=None),
        True,
    ),
    "detector_only": (LossConfig(auxiliary_loss=True), False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_training_and_validation_steps_make_no_host_sync(case, monkeypatch):
    criterion, outputs, targets = _case(*CASES[case])
    recorder = SyncRecorder()
    _allow_matching(monkeypatch, recorder)
    with recorder:
        losses = criterion(outputs, targets, training=True)
        losses["loss"].backward()
        with torch.no_grad():
            criterion(outputs, targets, training=False)
    assert not recorder.offences, "host-device synchronisation in the loss:\n" + "\n".join(recorder.offences)
    assert "loss_ce_0" in losses and ("loss_rel" in losses) == CASES[case][1]


def _set_with_python_scalar(x: torch.Tensor) -> None:
    x.clone()[torch.zeros(1, dtype=torch.int64)] = 1.0


OFFENDERS = {
    "item": lambda x: x.sum().item(),
    "float": lambda x: float(x.sum()),
    "bool": lambda x: bool(x.sum() > 0),
    "torch.tensor": lambda x: torch.tensor([1.0, 2.0]),
    "boolean_mask": lambda x: x[x > 0],
    "nonzero": lambda x: x.nonzero(),
    "set_with_python_scalar": _set_with_python_scalar,
}


@pytest.mark.parametrize("offender", list(OFFENDERS))
def test_recorder_catches_synchronising_operations(offender):
    """Guards the check above against a PyTorch version that stops emitting the operators it looks for."""
    x = torch.randn(4)
    recorder = SyncRecorder()
    with recorder:
        OFFENDERS[offender](x)
    assert recorder.offences


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_host_sync_on_cuda(monkeypatch):
    criterion, outputs, targets = _case(LossConfig(auxiliary_loss=True), device="cuda")
    original_match = EGTRCriterion.match

    def match(self, *args, **kwargs):
        torch.cuda.set_sync_debug_mode(0)
        try:
            return original_match(self, *args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("error")

    monkeypatch.setattr(EGTRCriterion, "match", match)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        criterion(outputs, targets, training=True)["loss"].backward()
        with torch.no_grad():
            criterion(outputs, targets, training=False)
    finally:
        torch.cuda.set_sync_debug_mode(0)
