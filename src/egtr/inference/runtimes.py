"""Model runtimes: the second of inference's three parts (images, model runtime, post-processing).

A runtime takes the padded batch of `egtr.inference.processor.ImageProcessor` and returns the four raw outputs that
post-processing ranks (`ModelOutputs`). It is the only part that differs between

- `torch`: the `EGTR` module in PyTorch eager (float32, or bfloat16/float16 under `torch.autocast`), optionally
  through `torch.compile`;
- `onnxruntime`: an exported ONNX graph (`egtr export --format onnx`) in ONNX Runtime (CPU; CUDA and TensorRT
  execution providers when the installed onnxruntime has them);
- `openvino`: an exported OpenVINO IR (or the ONNX graph) in OpenVINO (CPU in float32 or bfloat16 precision).

`load_runtime` picks one for any `--model`: a checkpoint in any layout `egtr.models.read_checkpoint` knows runs in
torch, or is exported once into a cache folder for the other runtimes; an exported folder runs in its own runtime.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from egtr.config import EGTRConfig
from egtr.errors import ConfigError, MissingExtraError
from egtr.extras import require_extra
from egtr.models import EGTR
from egtr.runtime import autocast_context, dtype_name, resolve_device, resolve_dtype

if TYPE_CHECKING:
    from egtr.inference.export import ExportedModel
    from egtr.inference.processor import ModelInputs

__all__ = [
    "RUNTIMES",
    "ModelOutputs",
    "ModelRuntime",
    "OnnxRuntimeModel",
    "OpenVinoModel",
    "TorchRuntime",
]

logger = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnxruntime", "openvino")
RUNTIME_EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino"}
# An ONNX Runtime execution provider: its name, or (name, its options).
Provider = str | tuple[str, dict[str, object]]
OUTPUT_NAMES = ("logits", "pred_boxes", "pred_rel", "pred_connectivity")
# OpenVINO's names of the precisions `--dtype` can ask for.
OPENVINO_PRECISION = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


@dataclass
class ModelOutputs:
    """What post-processing needs of a forward pass (float32 on every runtime but torch's autocast ones).
    B = batch, N = queries, C = classes, R = predicates."""

    logits: torch.Tensor  # (B, N, C) class logits (sigmoid/focal head)
    pred_boxes: torch.Tensor  # (B, N, 4) normalised (cx, cy, w, h)
    pred_rel: torch.Tensor  # (B, N, N, R) sigmoid predicate scores, [b, subject, object, predicate]
    pred_connectivity: torch.Tensor  # (B, N, N, 1) sigmoid connectivity scores

    def image(self, index: int) -> ModelOutputs:
        """The outputs of image `index` as a batch of one."""
        return ModelOutputs(*(getattr(self, name)[index : index + 1] for name in OUTPUT_NAMES))


class ModelRuntime(ABC):
    """One small interface for every way of running the network: call it with a padded batch."""

    name: ClassVar[str]
    config: EGTRConfig
    device: torch.device  # where the inputs go and the outputs are
    dtype: torch.dtype  # the compute precision asked for
    min_size: int = 1  # the smallest height/width the runtime accepts (an exported graph's lower bound)

    @abstractmethod
    def __call__(self, inputs: ModelInputs) -> ModelOutputs:
        """Run the network on `inputs` (pixel_values (B, 3, H, W), pixel_mask (B, H, W))."""

    def describe(self) -> dict[str, str]:
        """JSON-ready description for reports, manifests and the service's /v1/model."""
        return {"runtime": self.name, "device": str(self.device), "dtype": dtype_name(self.dtype)}


class TorchRuntime(ModelRuntime):
    """`EGTR` in PyTorch: float32, or bfloat16/float16 under `torch.autocast` (weights stay float32).

    Args:
        model: the network (moved to `device`, put in eval mode).
        device: "auto" (CUDA if available), "cpu", "cuda", "cuda:1", ...
        dtype: "float32", "bfloat16" or "float16" (or the torch dtype).
        compile_mode: run the forward through `torch.compile(mode=...)` ("default", "reduce-overhead",
            "max-autotune"); None: eager.
    """

    name = "torch"

    def __init__(
        self,
        model: EGTR,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype = "float32",
        compile_mode: str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.model = model.to(self.device).eval()
        self.config = model.config
        self.compile_mode = compile_mode
        self._forward = torch.compile(self.model, mode=compile_mode) if compile_mode else self.model

    def to(self, device: torch.device) -> TorchRuntime:
        """Move the network (bulk prediction: Lightning chose this process's device)."""
        self.device = device
        self.model.to(device)
        return self

    @torch.inference_mode()
    def __call__(self, inputs: ModelInputs) -> ModelOutputs:
        pixel_values = inputs.pixel_values.to(self.device, non_blocking=True)
        pixel_mask = inputs.pixel_mask.to(self.device, non_blocking=True)
        with autocast_context(self.device, self.dtype):
            output = self._forward(pixel_values, pixel_mask)
        return ModelOutputs(output.logits, output.pred_boxes, output.pred_rel, output.pred_connectivity)

    def describe(self) -> dict[str, str]:
        description = super().describe()
        if self.dtype != torch.float32:
            description["precision"] = "torch.autocast (weights float32)"
        if self.compile_mode:
            description["compile_mode"] = self.compile_mode
        return description


class _ExportedRuntime(ModelRuntime):
    """Shared part of the runtimes of an exported graph: numpy in, numpy out, float32 outputs on the CPU."""

    def __init__(self, exported: ExportedModel) -> None:
        self.exported = exported
        self.config = exported.config
        self.min_size = exported.min_size
        self.device = torch.device("cpu")

    def _feed(self, inputs: ModelInputs) -> dict[str, np.ndarray]:
        return {
            "pixel_values": inputs.pixel_values.detach().cpu().numpy().astype(np.float32, copy=False),
            "pixel_mask": inputs.pixel_mask.detach().cpu().numpy().astype(np.int64, copy=False),
        }

    @staticmethod
    def _outputs(arrays: list[np.ndarray]) -> ModelOutputs:
        return ModelOutputs(*(torch.from_numpy(np.array(array, dtype=np.float32)) for array in arrays))

    def describe(self) -> dict[str, str]:
        return {**super().describe(), "graph": str(self.exported.graph_file(self.name))}


class OnnxRuntimeModel(_ExportedRuntime):
    """An exported ONNX graph in ONNX Runtime (float32).

    Args:
        exported: the exported folder (`egtr.inference.export.ExportedModel`).
        device: "cpu" or "auto"; "cuda" / "cuda:N" (CUDA execution provider) or "tensorrt" (TensorRT, then CUDA)
            when the installed onnxruntime has them.
        threads: intra-op threads (None: ONNX Runtime's default, one per core).
        providers: ONNX Runtime execution providers, as `InferenceSession` takes them; overrides `device`.
    """

    name = "onnxruntime"

    def __init__(
        self,
        exported: ExportedModel,
        device: str | None = "cpu",
        dtype: str | torch.dtype = "float32",
        threads: int | None = None,
        providers: list[Provider] | None = None,
    ) -> None:
        super().__init__(exported)
        try:
            import onnxruntime
        except ImportError as error:
            raise MissingExtraError("--runtime onnxruntime", "onnx") from error
        self.dtype = resolve_dtype(dtype)
        check_runtime(self.name, self.dtype)
        self.providers = providers or _onnxruntime_providers(device, onnxruntime.get_available_providers())
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        graph = exported.graph_file(self.name)
        # Inputs and outputs are host arrays whatever the provider: `device` stays the CPU (where the tensors are);
        # describe() names the providers that run the graph.
        self.session = onnxruntime.InferenceSession(str(graph), options, providers=self.providers)

    def __call__(self, inputs: ModelInputs) -> ModelOutputs:
        return self._outputs(self.session.run(list(OUTPUT_NAMES), self._feed(inputs)))

    def describe(self) -> dict[str, str]:
        return {**super().describe(), "providers": ", ".join(self.session.get_providers())}


def _onnxruntime_providers(device: str | None, available: list[str]) -> list[Provider]:
    """Execution providers for a `--device` spelling; a GPU asked for where none is installed is an error."""
    wanted = str(device or "cpu")
    if wanted in ("cpu", "auto"):
        return (
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if wanted == "auto" and ("CUDAExecutionProvider" in available)
            else ["CPUExecutionProvider"]
        )
    chains = {"tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"], "cuda": ["CUDAExecutionProvider"]}
    chain = chains.get(wanted.split(":")[0])
    if chain is None:
        raise ConfigError(f"--device {wanted}: the onnxruntime runtime takes cpu, auto, cuda, cuda:N or tensorrt")
    if chain[0] not in available:
        raise ConfigError(
            f"--device {wanted}: this onnxruntime has no {chain[0]} (it has {', '.join(available)}); install "
            "onnxruntime-gpu for CUDA and TensorRT"
        )
    if ":" in wanted:  # cuda:N -> the provider's device_id option
        options: dict[str, object] = {"device_id": int(wanted.split(":")[1])}
        return [*((name, options) for name in chain), "CPUExecutionProvider"]
    return [*chain, "CPUExecutionProvider"]


class OpenVinoModel(_ExportedRuntime):
    """An exported graph (OpenVINO IR, or the ONNX file) in OpenVINO.

    Args:
        exported: the exported folder (`egtr.inference.export.ExportedModel`).
        device: "cpu"/"auto" (OpenVINO's CPU plugin) or "gpu" (its GPU plugin, Intel graphics).
        dtype: the inference precision: float32, or bfloat16 / float16 where the processor has them (OpenVINO
            computes in that precision and returns float32).
        threads: inference threads (None: OpenVINO's default, one per core).
    """

    name = "openvino"

    def __init__(
        self,
        exported: ExportedModel,
        device: str | None = "cpu",
        dtype: str | torch.dtype = "float32",
        threads: int | None = None,
    ) -> None:
        super().__init__(exported)
        try:
            import openvino
        except ImportError as error:
            raise MissingExtraError("--runtime openvino", "openvino") from error
        self.dtype = resolve_dtype(dtype)
        plugin = {"cpu": "CPU", "auto": "CPU", "gpu": "GPU"}.get(str(device or "cpu").lower())
        if plugin is None:
            raise ConfigError(f"--device {device}: the openvino runtime takes cpu, auto or gpu")
        settings: dict[str, object] = {
            "INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[dtype_name(self.dtype)],
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads:
            settings["INFERENCE_NUM_THREADS"] = threads
        core = openvino.Core()
        self.compiled = core.compile_model(core.read_model(exported.graph_file(self.name)), plugin, settings)
        self._request = self.compiled.create_infer_request()
        self.plugin = plugin

    def __call__(self, inputs: ModelInputs) -> ModelOutputs:
        self._request.infer(self._feed(inputs))
        return self._outputs([self._request.get_tensor(name).data for name in OUTPUT_NAMES])

    def describe(self) -> dict[str, str]:
        return {**super().describe(), "openvino_device": self.plugin}


def exported_runtime(
    exported: ExportedModel,
    runtime: str | None,
    device: str | None = "cpu",
    dtype: str | torch.dtype = "float32",
    threads: int | None = None,
) -> ModelRuntime:
    """The runtime of an exported folder: `runtime` when given, else the one its format names."""
    runtime = runtime or exported.default_runtime
    if runtime == "onnxruntime":
        return OnnxRuntimeModel(exported, device=device, dtype=dtype, threads=threads)
    if runtime == "openvino":
        return OpenVinoModel(exported, device=device, dtype=dtype, threads=threads)
    raise ConfigError(
        f"{exported.directory}: an exported {exported.format} graph runs in "
        f"{' or '.join(exported.runtimes)}, not {runtime}; give the original model for --runtime torch"
    )


def check_runtime(runtime: str | None, dtype: str | torch.dtype = "float32") -> None:
    """A known runtime whose extra is installed (the onnx extra for onnxruntime, the openvino extra for openvino:
    each also exports a checkpoint to run it) and a precision it runs, said before anything is loaded or exported."""
    if runtime is not None and runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {runtime}: expected one of {', '.join(RUNTIMES)}")
    if runtime in RUNTIME_EXTRAS:
        require_extra(RUNTIME_EXTRAS[runtime], f"--runtime {runtime}")
    if runtime == "onnxruntime" and resolve_dtype(dtype) != torch.float32:
        raise ConfigError(
            f"--dtype {dtype_name(dtype)}: the onnxruntime runtime runs float32 graphs; for bfloat16 on the CPU use "
            "--runtime openvino (or torch)"
        )
