"""Shared test fixtures: paths to the reference data produced by the original EGTR code, and its sizes.

Every count a fidelity test needs (classes, predicates, queries, layers, images, parameters) is read from the
fixture files here, so that another fixture set of other sizes can replace `fixtures/reference`.
"""

import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

REFERENCE = Path(__file__).parent / "fixtures" / "reference"

# Entries of the original's state dict that are buffers of its frozen batch norms: the statistics of every
# norm, and the affine weight/bias of all backbone norms except the four `layerK.0.downsample.1` ones, which
# the original leaves as ordinary `nn.BatchNorm2d` with trainable weight/bias (reference quirk Q8).
_NORM_STATISTICS = re.compile(r"\.(running_mean|running_var|num_batches_tracked)$")
_FROZEN_NORM_AFFINE = re.compile(r"^model\.backbone\..*\.(bn\d+)\.(weight|bias)$")
# Shared detection heads: `class_embed.0..L-1` / `bbox_embed.0..L-1` are one module listed L times.
_SHARED_HEAD_COPY = re.compile(r"^(class_embed|bbox_embed)\.[1-9]\d*\.")


@dataclass(frozen=True)
class ReferenceSizes:
    """The sizes of the reference fixture, from `artifact/config.json`, the checkpoint and the array shapes."""

    num_labels: int  # C, object classes: entries of config.json's id2label
    num_rel_labels: int  # R, predicates
    num_queries: int  # N
    d_model: int
    encoder_layers: int
    decoder_layers: int
    backbone: str
    batch_size: int  # images of inputs.npz / outputs.npz
    num_parameters: int  # PyTorch parameters of the original model (shared heads once, frequency tables included)
    num_buffer_values: int  # values of the original's frozen-batch-norm buffers
    bulk_images: int  # images of eval_bulk_inputs.npz
    bulk_labels: int  # C of the bulk evaluator set (its own, not the model's)
    bulk_rel_labels: int  # R of the bulk evaluator set
    bulk_pairs: int  # scored subject/object pairs per bulk image


def _original_parameter_split(checkpoint: Path) -> tuple[int, int]:
    """(parameters, buffer values) of the original model, counted from its Lightning checkpoint."""
    state_dict = torch.load(checkpoint, weights_only=True)["state_dict"]
    entries = {key[len("model.") :]: value.numel() for key, value in state_dict.items()}
    entries = {key: count for key, count in entries.items() if not _SHARED_HEAD_COPY.match(key)}
    buffers = sum(
        count for key, count in entries.items() if _NORM_STATISTICS.search(key) or _FROZEN_NORM_AFFINE.match(key)
    )
    return sum(entries.values()) - buffers, buffers


def read_reference_sizes(directory: Path) -> ReferenceSizes:
    config = json.loads((directory / "artifact" / "config.json").read_text())
    outputs = np.load(directory / "outputs.npz")
    bulk = np.load(directory / "eval_bulk_inputs.npz")
    (checkpoint,) = (directory / "artifact" / "checkpoints").glob("*.ckpt")
    num_parameters, num_buffer_values = _original_parameter_split(checkpoint)
    sizes = ReferenceSizes(
        num_labels=len(config["id2label"]),
        num_rel_labels=config["num_rel_labels"],
        num_queries=config["num_queries"],
        d_model=config["d_model"],
        encoder_layers=config["encoder_layers"],
        decoder_layers=config["decoder_layers"],
        backbone=config["backbone"],
        batch_size=outputs["logits"].shape[0],
        num_parameters=num_parameters,
        num_buffer_values=num_buffer_values,
        bulk_images=bulk["image_hw"].shape[0],
        bulk_labels=int(bulk["num_labels"]),
        bulk_rel_labels=int(bulk["num_rel_labels"]),
        bulk_pairs=bulk["pred_pairs"].shape[1],
    )
    # The recorded arrays must agree with the configuration, or the fixture set is inconsistent.
    batch, queries, labels = sizes.batch_size, sizes.num_queries, sizes.num_labels
    assert outputs["logits"].shape == (batch, queries, labels)
    assert outputs["pred_rel"].shape == (batch, queries, queries, sizes.num_rel_labels)
    assert bulk["pair_rel_scores"].shape == (sizes.bulk_images, sizes.bulk_pairs, sizes.bulk_rel_labels)
    return sizes


# ---- running the suite in parallel (`make test`: pytest -n auto --dist loadfile --no-loadscope-reorder)
# Each file is one unit of work, run by one worker process, so its module fixtures are built once; a session fixture
# too expensive to build twice is built once for all workers (`built_once`). Files start longest first (the slowest,
# measured with `--durations`), so that the last one to finish is not a long one started late.
LONGEST_FIRST = (
    "tests/test_demo.py",
    "tests/runtimes/test_runtimes.py",
    "tests/test_evaluation.py",
    "tests/data/test_label_studio_live.py",
    "tests/bulk/test_bulk_processes.py",
    "tests/training/test_signals.py",
    "tests/test_packaging.py",
)


# Fixtures that take a minute or more to build: every test using one is in the slow tier (`-m "not slow"` skips
# them, and the fixture with them).
SLOW_FIXTURES = ("exported_reference", "exported_reference_openvino", "quick_demo")


@pytest.hookimpl(wrapper=True)  # around the other implementations: xdist sends the files in this order
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Iterator[None]:
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in SLOW_FIXTURES):
            item.add_marker(pytest.mark.slow)
    rank = {path: index for index, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: the rest keep order
    return (yield)


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Path]) -> Path:
    """`build(folder)` run by the first worker that needs it; the others wait for it and share the folder (the
    workers' temporary folders have one parent). `build` must leave `folder` complete or absent."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not folder.exists():
            build(folder)
    return folder


@pytest.fixture(autouse=True, scope="session")
def _threads():
    # The reference outputs were produced with 2 intra-op threads, which CI machines have (2 cores). With parallel
    # workers each gets 1 thread, and so do the commands they start (OMP_NUM_THREADS, which egtr.runtime reads):
    # more would make PyTorch's waiting threads spin against each other.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    else:
        torch.set_num_threads(2)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return REFERENCE


@pytest.fixture(scope="session")
def reference_sizes() -> ReferenceSizes:
    return read_reference_sizes(REFERENCE)


@pytest.fixture(scope="session")
def reference_outputs() -> dict[str, np.ndarray]:
    return dict(np.load(REFERENCE / "outputs.npz"))


@pytest.fixture(scope="session")
def reference_inputs() -> dict[str, np.ndarray]:
    return dict(np.load(REFERENCE / "inputs.npz"))


@pytest.fixture(scope="session")
def exported_reference(tmp_path_factory) -> Path:
    """The reference artifact exported to ONNX once per test run (`egtr export`; 40-80 s on 2 cores)."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install 'egtr[onnx]'")
    from egtr.inference.export import export_model

    def export(out: Path) -> Path:
        return export_model(REFERENCE / "artifact", out).directory

    return built_once(tmp_path_factory, "reference_onnx", export)


@pytest.fixture(scope="session")
def exported_reference_openvino(exported_reference, tmp_path_factory) -> Path:
    """The ONNX export converted to OpenVINO IR (no second trace)."""
    pytest.importorskip("openvino", reason="the openvino extra is not installed: pip install 'egtr[openvino]'")
    from egtr.inference.export import export_model

    def convert(out: Path) -> Path:
        return export_model(exported_reference, out, format="openvino").directory

    return built_once(tmp_path_factory, "reference_openvino", convert)
