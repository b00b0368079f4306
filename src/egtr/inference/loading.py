"""`--model` + `--runtime` -> a ready `ModelRuntime`, its preprocessing and where it came from.

A checkpoint (any layout `egtr.models.read_checkpoint` knows) runs in PyTorch by default. Asked to run in ONNX
Runtime or OpenVINO, it is exported once (`egtr.inference.export.export_model`, ONNX format, which both runtimes
read) into a cache folder named after its weights' SHA-256 and reused from then on. An exported folder runs in its
own runtime (or the other one that reads its format).

The cache: `$EGTR_CACHE`, else `$XDG_CACHE_HOME/egtr`, else `~/.cache/egtr`; entries under `exports/`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from egtr.inference.export import ExportedModel, export_model, is_exported_folder
from egtr.inference.runtimes import ModelRuntime, TorchRuntime, check_runtime, exported_runtime
from egtr.models import EGTR, Checkpoint, read_checkpoint
from egtr.models.hub import resolve_model_path
from egtr.preprocessing import PreprocessorConfig
from egtr.version import __version__

__all__ = ["LoadedModel", "cache_directory", "load_runtime"]

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A runtime with the preprocessing recorded beside the model (None: the paper's) and its provenance."""

    runtime: ModelRuntime
    preprocessor: PreprocessorConfig | None
    source: dict[str, str]


def cache_directory() -> Path:
    if os.environ.get("EGTR_CACHE"):
        return Path(os.environ["EGTR_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "egtr"


def load_runtime(
    model: str | Path,
    runtime: str | None = None,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype = "float32",
    threads: int | None = None,
    compile_mode: str | None = None,
    revision: str | None = None,
) -> LoadedModel:
    """Load `model` (a checkpoint in any layout, an `egtr export` folder, or either by name from the Hugging Face
    Hub at `revision`: `egtr.models.hub`) into `runtime` (torch, onnxruntime, openvino; None: torch for a
    checkpoint, the folder's own for an export)."""
    check_runtime(runtime, dtype)  # before a checkpoint is exported for it (a minute for a full-size model)
    path = resolve_model_path(model, revision)
    if is_exported_folder(path):
        exported = ExportedModel.read(path)
        loaded = exported_runtime(exported, runtime, _device_name(device), dtype, threads)
        return LoadedModel(loaded, exported.preprocessor, exported.provenance())
    checkpoint = read_checkpoint(path)
    if runtime in (None, "torch"):
        if threads:
            torch.set_num_threads(threads)
        network = EGTR.from_checkpoint(checkpoint)
        return LoadedModel(
            TorchRuntime(network, device, dtype, compile_mode), checkpoint.preprocessor, checkpoint.provenance()
        )
    exported = cached_export(checkpoint)
    loaded = exported_runtime(exported, runtime, _device_name(device), dtype, threads)
    return LoadedModel(loaded, checkpoint.preprocessor, checkpoint.provenance())


def cached_export(checkpoint: Checkpoint) -> ExportedModel:
    """The ONNX export of `checkpoint`, made once per weights file and egtr version."""
    folder = cache_directory() / "exports" / f"{checkpoint.weights_sha256[:16]}-onnx-egtr{__version__}"
    if is_exported_folder(folder):
        return ExportedModel.read(folder)
    logger.warning(
        "exporting %s to ONNX once (about a minute for a full-size model), cached in %s", checkpoint.source, folder
    )
    return export_model(checkpoint, folder, format="onnx")


def _device_name(device: str | torch.device | None) -> str | None:
    return None if device is None else str(device)
