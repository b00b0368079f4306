"""`egtr export`: a model as a deployable folder for ONNX Runtime or OpenVINO, and reading such a folder back.

An exported folder holds the graph (`model.onnx`, or `model.xml` + `model.bin` for OpenVINO), `config.json` (the
model configuration with its class and predicate names), `preprocessor_config.json` (resize and normalisation) and
`export.json` (format, opset, the source model and its weights' SHA-256, the versions that made it, the check
against PyTorch), written last: its presence means the folder is complete. Every command takes the folder as
`--model`.

The graph:
- inputs `pixel_values` (B, 3, H, W) float32 and `pixel_mask` (B, H, W) int64, outputs `logits`, `pred_boxes`,
  `pred_rel`, `pred_connectivity` (`egtr.inference.runtimes.ModelOutputs`);
- batch, height and width are dynamic (`torch.export` with symbolic sizes, ONNX opset >= 17). Height and width
  have a lower bound: the coarsest feature level (stride 64 with 4 levels) must be at least 2 x 2, so a side must
  be > 64 pixels; `ImageProcessor.collate` pads smaller batches (with mask 0) up to it;
- the deformable attention is exported in its grid_sample form (ONNX GridSample), which ONNX Runtime and OpenVINO
  both run natively; PyTorch on CPU runs the equivalent gather form.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from egtr.config import EGTRConfig
from egtr.errors import CheckpointError, ConfigError, MissingExtraError
from egtr.extras import has_extra, require_extra
from egtr.fileio import current_umask, read_json, write_json
from egtr.inference.processor import ModelInputs
from egtr.inference.runtimes import OUTPUT_NAMES, ModelRuntime
from egtr.models import EGTR, Checkpoint, read_checkpoint
from egtr.preprocessing import PREPROCESSOR_NAME, PreprocessorConfig, load_preprocessor_config
from egtr.version import __version__

__all__ = ["EXPORT_FORMATS", "ExportedModel", "export_model", "is_exported_folder"]

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("onnx", "openvino")
MANIFEST_NAME = "export.json"
GRAPH_FILES = {"onnx": "model.onnx", "openvino": "model.xml"}
RUNTIMES_OF_FORMAT = {"onnx": ("onnxruntime", "openvino"), "openvino": ("openvino",)}
DEFAULT_OPSET = 18
# A forward pass on this many images of these sizes traces the graph (not 1: torch.export would fix a size of 1).
EXAMPLE_BATCH, EXAMPLE_HEIGHT, EXAMPLE_WIDTH = 2, 176, 240
# The largest batch and side the graph is declared for (a bound torch.export needs; not a limit in practice).
MAX_BATCH, MAX_SIDE = 1024, 8192
# An export is checked against PyTorch on an input of another size than the example; outputs are probabilities
# and logits, so 1e-4 is far above float32 reordering noise (observed: ~1e-6) and far below a wrong graph.
VERIFY_TOLERANCE = 1e-4


def min_input_size(config: EGTRConfig) -> int:
    """The smallest side the exported graph accepts: its coarsest level (stride 8 x 2^(levels-1)) must be >= 2."""
    return 8 * 2 ** (config.num_feature_levels - 1) + 1


def is_exported_folder(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST_NAME).is_file()


@dataclass
class ExportedModel:
    """An exported folder, read back: its configuration, preprocessing and manifest (no graph is loaded here)."""

    directory: Path
    config: EGTRConfig
    preprocessor: PreprocessorConfig | None
    manifest: dict[str, Any]

    @property
    def format(self) -> str:
        return str(self.manifest["format"])

    @property
    def runtimes(self) -> tuple[str, ...]:
        return RUNTIMES_OF_FORMAT[self.format]

    @property
    def default_runtime(self) -> str:
        return self.runtimes[0]

    @property
    def min_size(self) -> int:
        return int(self.manifest.get("min_size", min_input_size(self.config)))

    def graph_file(self, runtime: str) -> Path:
        """The file `runtime` reads (OpenVINO reads the ONNX file of an ONNX export directly)."""
        return self.directory / GRAPH_FILES[self.format]

    def provenance(self) -> dict[str, str]:
        """As `Checkpoint.provenance`: the weights hash is the source model's (the graph carries the same weights)."""
        source = self.manifest.get("source", {})
        return {
            "model": str(self.directory),
            "layout": f"exported-{self.format}",
            "weights_file": str(self.graph_file(self.default_runtime)),
            "weights_sha256": str(source.get("weights_sha256", "")),
        }

    @classmethod
    def read(cls, directory: str | Path) -> ExportedModel:
        directory = Path(directory)
        manifest = read_json(directory / MANIFEST_NAME, CheckpointError)
        if not isinstance(manifest, dict) or manifest.get("format") not in EXPORT_FORMATS:
            raise CheckpointError(
                f"{directory / MANIFEST_NAME}: field 'format' must be one of {', '.join(EXPORT_FORMATS)}"
            )
        graph = directory / GRAPH_FILES[manifest["format"]]
        if not graph.is_file():
            raise CheckpointError(f"{directory}: exported as {manifest['format']} but {graph.name} is missing")
        try:
            config = EGTRConfig.from_json(directory / "config.json").with_dataset_names()
        except ConfigError as error:
            raise CheckpointError(str(error)) from error
        return cls(directory, config, load_preprocessor_config(directory), manifest)


class _GraphOutputs(torch.nn.Module):
    """The exported function: the four outputs post-processing needs, as a tuple (ONNX outputs are flat)."""

    def __init__(self, model: EGTR) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = self.model(pixel_values, pixel_mask)
        return tuple(getattr(output, name) for name in OUTPUT_NAMES)


def export_model(
    model: str | Path | Checkpoint,
    out: str | Path,
    format: str = "onnx",
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
) -> ExportedModel:
    """Export a model (any layout `egtr.models.read_checkpoint` knows) into the folder `out`; an ONNX export folder
    given as `model` with `format="openvino"` is converted without tracing the model again.

    The folder is built beside `out` and renamed into place when complete, so an interrupted export leaves no
    half-written folder. With `verify`, the graph is run in ONNX Runtime (or OpenVINO) on an input of another size
    than the traced example and compared with PyTorch (a converted folder: with the ONNX graph it came from): a
    difference above 1e-4 fails the export.

    Raises:
        ConfigError: an unknown format, an opset below 17, or an `out` that is a file or a non-empty folder.
        MissingExtraError: the onnx (or openvino) extra is not installed.
    """
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"--format {format}: expected one of {', '.join(EXPORT_FORMATS)}")
    if opset < 17:
        raise ConfigError(f"--opset {opset}: the graph needs opset 17 or later (GridSample on 4-D inputs, LayerNorm)")
    out = Path(out)
    if out.is_file() or (out.is_dir() and any(out.iterdir())):
        raise ConfigError(f"{out}: already exists and is not an empty folder; give a new --out")
    if not isinstance(model, Checkpoint) and is_exported_folder(Path(model)):
        source = ExportedModel.read(model)
        if source.format != "onnx" or format != "openvino":
            raise ConfigError(
                f"{model}: already an exported {source.format} folder; only an ONNX folder converts (to openvino)"
            )
        _require_exporters("openvino")
        return _build_folder(out, lambda folder: _convert_export(source, folder, verify))
    _require_exporters(format)
    checkpoint = model if isinstance(model, Checkpoint) else read_checkpoint(model)
    return _build_folder(out, lambda folder: _export_checkpoint(checkpoint, folder, format, opset, verify))


def _build_folder(out: Path, build: Callable[[Path], dict[str, Any]]) -> ExportedModel:
    """Run `build` in a temporary folder beside `out` (it returns the manifest), then move it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        manifest = build(building)
        manifest["size_bytes"] = sum(path.stat().st_size for path in building.iterdir())
        write_json(building / MANIFEST_NAME, manifest)  # last: its presence means the folder is complete
        building.chmod(0o777 & ~current_umask())  # mkdtemp makes it 0700; a folder of a plain mkdir is wanted
        if out.is_dir():
            out.rmdir()  # empty, checked by the caller
        os.replace(building, out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return ExportedModel.read(out)


def _export_checkpoint(checkpoint: Checkpoint, folder: Path, format: str, opset: int, verify: bool) -> dict[str, Any]:
    network = EGTR.from_checkpoint(checkpoint).eval().set_attention_form("grid_sample")
    started = time.perf_counter()
    _export_onnx(network, folder / GRAPH_FILES["onnx"], opset)
    if format == "openvino":
        _convert_to_openvino(folder)
    manifest = _manifest(format, opset, network.config, checkpoint.provenance(), time.perf_counter() - started)
    checkpoint.config.save(folder / "config.json")
    (checkpoint.preprocessor or PreprocessorConfig()).save(folder)
    if verify:
        exported = ExportedModel(folder, network.config, checkpoint.preprocessor, manifest)
        manifest["verification"] = _verify(exported, _torch_reference(network.set_attention_form("auto")), "torch")
    return manifest


def _convert_export(source: ExportedModel, folder: Path, verify: bool) -> dict[str, Any]:
    started = time.perf_counter()
    shutil.copy2(source.graph_file("openvino"), folder / GRAPH_FILES["onnx"])
    _convert_to_openvino(folder)
    manifest = _manifest(
        "openvino",
        int(source.manifest["opset"]),
        source.config,
        source.manifest["source"],
        time.perf_counter() - started,
    )
    manifest["converted_from"] = str(source.directory)
    for name in ("config.json", PREPROCESSOR_NAME):
        if (source.directory / name).is_file():
            shutil.copy2(source.directory / name, folder / name)
    if verify:
        from egtr.inference.runtimes import OnnxRuntimeModel

        exported = ExportedModel(folder, source.config, source.preprocessor, manifest)
        manifest["verification"] = _verify(exported, OnnxRuntimeModel(source), "onnxruntime")
    return manifest


def _require_exporters(format: str) -> None:
    # Both extras bring the exporter (onnx, onnxscript); the exported graph is checked in onnxruntime (onnx extra)
    # or OpenVINO (the openvino extra alone runs ONNX files too), and OpenVINO converts it to its own format.
    if format == "openvino" or (has_extra("openvino") and not has_extra("onnx")):
        require_extra("openvino", f"egtr export --format {format}")
    else:
        require_extra("onnx", f"egtr export --format {format}")


def _export_onnx(network: EGTR, path: Path, opset: int) -> None:
    """`torch.onnx.export` (the dynamo exporter) with symbolic batch, height and width."""
    size = min_input_size(network.config)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    height = torch.export.Dim("height", min=size, max=MAX_SIDE)
    width = torch.export.Dim("width", min=size, max=MAX_SIDE)
    example_height, example_width = max(EXAMPLE_HEIGHT, size + 1), max(EXAMPLE_WIDTH, size + 3)
    example = (
        torch.zeros(EXAMPLE_BATCH, 3, example_height, example_width),
        torch.ones(EXAMPLE_BATCH, example_height, example_width, dtype=torch.int64),
    )
    with warnings.catch_warnings():
        # torch.onnx's notes that cannot be acted on: dims sharing a constraint, a pytree deprecation of its own
        warnings.filterwarnings("ignore", message=".*will not be used, since it shares the same shape constraints.*")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
        torch.onnx.export(
            _GraphOutputs(network).eval(),
            example,
            str(path),
            dynamo=True,
            opset_version=opset,
            input_names=["pixel_values", "pixel_mask"],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=({0: batch, 2: height, 3: width}, {0: batch, 1: height, 2: width}),
            external_data=False,
            verbose=False,
        )


def _convert_to_openvino(folder: Path) -> None:
    """ONNX -> OpenVINO IR (weights kept float32: the precision is chosen when the runtime compiles it)."""
    import openvino

    onnx_path = folder / GRAPH_FILES["onnx"]
    openvino.save_model(openvino.convert_model(onnx_path), folder / GRAPH_FILES["openvino"], compress_to_fp16=False)
    onnx_path.unlink()


def _manifest(format: str, opset: int, config: EGTRConfig, source: dict[str, str], seconds: float) -> dict[str, Any]:
    versions = {"egtr": __version__, "torch": torch.__version__}
    for name in ("onnx", "onnxscript", "onnxruntime", "openvino"):
        with contextlib.suppress(ImportError):
            versions[name] = __import__(name).__version__
    return {
        "format": format,
        "opset": opset,
        "graph": GRAPH_FILES[format],
        "inputs": {"pixel_values": "float32 (batch, 3, height, width)", "pixel_mask": "int64 (batch, height, width)"},
        "outputs": list(OUTPUT_NAMES),
        "dynamic": ["batch", "height", "width"],
        "min_size": min_input_size(config),
        "deformable_attention": "grid_sample",
        "source": source,
        "versions": versions,
        "export_seconds": round(seconds, 1),
    }


def _torch_reference(network: EGTR) -> Callable[[ModelInputs], Any]:
    def run(inputs: ModelInputs) -> Any:
        with torch.inference_mode():
            return network(inputs.pixel_values, inputs.pixel_mask)

    return run


def _verify(exported: ExportedModel, reference: Callable[[ModelInputs], Any], reference_name: str) -> dict[str, Any]:
    """Run the exported graph and `reference` on one input of another size than the traced example (padding
    included); compare every output."""
    from egtr.inference.runtimes import OnnxRuntimeModel, OpenVinoModel

    generator = torch.Generator().manual_seed(0)
    height, width = exported.min_size + 37, exported.min_size + 101
    pixel_values = torch.randn(1, 3, height, width, generator=generator)
    pixel_mask = torch.ones(1, height, width, dtype=torch.int64)
    pixel_mask[:, :, width - 24 :] = 0
    pixel_values[:, :, :, width - 24 :] = 0
    inputs = ModelInputs(pixel_values, pixel_mask)
    try:
        runtime: ModelRuntime = OnnxRuntimeModel(exported) if exported.format == "onnx" else OpenVinoModel(exported)
    except MissingExtraError:
        runtime = OpenVinoModel(exported)  # the openvino extra alone runs ONNX files too
    expected, outputs = reference(inputs), runtime(inputs)
    differences = {name: float((getattr(outputs, name) - getattr(expected, name)).abs().max()) for name in OUTPUT_NAMES}
    worst = max(differences.values())
    if not worst <= VERIFY_TOLERANCE:
        raise RuntimeError(
            f"the exported graph differs from {reference_name} by {worst:.3g} (> {VERIFY_TOLERANCE}) on a "
            f"{height}x{width} input: {differences}"
        )
    return {
        "runtime": runtime.name,
        "against": reference_name,
        "input_hw": [height, width],
        "max_abs_difference": differences,
    }
