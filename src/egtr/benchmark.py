"""An honest speed benchmark of EGTR inference (`egtr benchmark`).

The original FPS number (reference §6.3) was read off tqdm's it/s over the test loader: no warm-up exclusion, no
device synchronisation, data loading included. Here the measurement is explicit:

* input: one real photo resized like the paper's FPS run (shorter side 600, longer side <= 1000), batch 1;
* warm-up iterations (cuDNN autotuning, allocator growth, `torch.compile`) are run first and excluded;
* every timed iteration ends with `torch.cuda.synchronize()` on CUDA, so the time is the device's, not the launch's;
* the median and the spread (p10/p90, IQR, std) over N runs are reported, FPS = batch size / median;
* two scopes are reported separately: **model** (the forward pass on a tensor already on the device) and
  **end-to-end** (decode the file + resize + normalise + host-to-device copy + forward + post-processing into a
  `SceneGraph`);
* the parameter count, peak memory (CUDA allocator peak per scope, process peak RSS) and the environment
  (device name, torch version, threads, TF32 flags) go into the JSON so that numbers can be compared.
"""

from __future__ import annotations

import logging
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from egtr.fileio import write_json
from egtr.inference import ModelInputs, ModelOutputs, ModelRuntime, Predictor, PreparedImage, TorchRuntime
from egtr.inference.scene_graph import SceneGraph
from egtr.models import EGTR
from egtr.preprocessing import FPS_LONGEST_EDGE, FPS_SHORTEST_EDGE, PreprocessorConfig, resolve_preprocessing

logger = logging.getLogger(__name__)

DEFAULT_IMAGE = Path(__file__).parent / "assets" / "coffee.jpg"  # 400x600 photo -> 600x900 input at 600/1000


def fps_preprocessing(
    recorded: PreprocessorConfig | None, size: int | None, max_size: int | None
) -> PreprocessorConfig:
    """The resize to time: each size given explicitly wins, then the model directory's recorded preprocessing (the
    size it was trained for), then the paper's FPS input 600 / 1000 (reference §6.3)."""
    return resolve_preprocessing(
        recorded, size, max_size, default=PreprocessorConfig(FPS_SHORTEST_EDGE, FPS_LONGEST_EDGE)
    )


@dataclass
class TimingStats:
    """Summary of per-iteration wall times (milliseconds)."""

    runs: int
    median_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    p10_ms: float
    p90_ms: float
    iqr_ms: float
    images_per_iteration: int
    fps: float  # images per second at the median time

    @classmethod
    def from_seconds(cls, seconds: list[float], images_per_iteration: int = 1) -> TimingStats:
        if not seconds:
            raise ValueError("no timed runs")
        milliseconds = np.asarray(seconds, dtype=np.float64) * 1000.0
        p10, p25, median, p75, p90 = np.percentile(milliseconds, [10, 25, 50, 75, 90])
        return cls(
            runs=len(seconds),
            median_ms=float(median),
            mean_ms=float(milliseconds.mean()),
            std_ms=float(statistics.pstdev(milliseconds.tolist())),
            min_ms=float(milliseconds.min()),
            max_ms=float(milliseconds.max()),
            p10_ms=float(p10),
            p90_ms=float(p90),
            iqr_ms=float(p75 - p25),
            images_per_iteration=images_per_iteration,
            fps=float(images_per_iteration * 1000.0 / median),
        )


def time_function(
    function: Callable[[], object], device: torch.device, warmup: int, runs: int
) -> tuple[list[float], float]:
    """Run `function` warmup + runs times; returns (per-run seconds of the timed runs, seconds of the first call).

    The device is synchronised before starting the clock and before stopping it, so queued GPU work is counted in
    the iteration that issued it.
    """
    first_call = 0.0
    for index in range(warmup):
        start = time.perf_counter()
        function()
        _synchronize(device)
        if index == 0:
            first_call = time.perf_counter() - start
    times = []
    for _ in range(runs):
        _synchronize(device)
        start = time.perf_counter()
        function()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return times, first_call


def run_benchmark(
    model: EGTR | ModelRuntime,
    image: str | Path | None = None,
    *,
    preprocessor: PreprocessorConfig | None = None,
    batch_size: int = 1,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype = "float32",
    compile_model: bool = False,
    compile_mode: str = "default",
    warmup: int = 10,
    runs: int = 50,
    scopes: tuple[str, ...] = ("model", "end_to_end"),
    model_description: str = "",
) -> dict[str, Any]:
    """Measure the inference speed of `model` on one image file.

    Why this is long: the thirteen documented settings; the code (about 65 lines) is one timing loop per scope.

    Args:
        model: the network (its weights do not change the speed; random weights are fine), or a `ModelRuntime`
            (ONNX Runtime, OpenVINO, or a `TorchRuntime` already set up; `device`, `dtype` and the compile
            settings are then the runtime's own).
        image: image file (decoded in every end-to-end iteration); default: the bundled coffee photo.
        preprocessor: the resize (default: the paper's FPS input, shorter side 600, longer side <= 1000).
        batch_size: images per forward pass (the paper: 1); the same image is repeated.
        device: "auto", "cpu", "cuda", ...
        dtype: "float32", "bfloat16" or "float16" (reduced precision runs under `torch.autocast`, like `Predictor`).
        compile_model: wrap the PyTorch model in `torch.compile` (compiled in the warm-up, reported apart).
        compile_mode: `torch.compile` mode: "default", "reduce-overhead" (CUDA graphs: one launch per forward,
            the lever at batch 1 where the GPU waits on kernel launches) or "max-autotune".
        warmup: untimed iterations per scope (at least 1).
        runs: timed iterations per scope.
        scopes: any of "model", "end_to_end".
        model_description: free text stored in the result (e.g. the checkpoint path).

    Returns:
        A JSON-serialisable dict: settings, environment, parameter counts, and per scope the `TimingStats`, the
        first-call time and the CUDA peak memory.
    """
    unknown = set(scopes) - {"model", "end_to_end"}
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of ('model', 'end_to_end'), got {scopes}")
    if warmup < 1 or runs < 1:
        raise ValueError(f"warmup and runs must be >= 1, got warmup={warmup}, runs={runs}")
    image_path = Path(image) if image is not None else DEFAULT_IMAGE
    preprocessor = preprocessor or PreprocessorConfig(FPS_SHORTEST_EDGE, FPS_LONGEST_EDGE)
    if isinstance(model, EGTR):
        model = TorchRuntime(model, device, dtype, compile_mode if compile_model else None)
    predictor = Predictor(model, preprocessor=preprocessor, batch_size=batch_size, top_k=100)
    torch_device = predictor.device
    parameters, buffers = _parameter_counts(model)

    prepared = predictor.prepare(image_path)  # raises DataError naming the file if unreadable
    batch = [prepared] * batch_size
    result: dict[str, Any] = {
        "model": model_description,
        "parameters": parameters,
        "buffer_values": buffers,
        "settings": {
            "image": str(image_path),
            "original_size_hw": list(prepared.size_hw),
            "input_size_hw": list(prepared.pixel_values.shape[-2:]),
            "image_size": preprocessor.shortest_edge,
            "max_size": preprocessor.longest_edge,
            "batch_size": batch_size,
            **model.describe(),
            "warmup": warmup,
            "runs": runs,
        },
        "environment": environment(torch_device),
        "scopes": {},
    }
    for scope in scopes:
        # The result is discarded; only the time counts.
        function: Callable[[], object] = (
            _model_only(predictor, batch) if scope == "model" else _end_to_end(predictor, image_path, batch_size)
        )
        if torch_device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(torch_device)
        times, first_call = time_function(function, torch_device, warmup, runs)
        scope_result: dict[str, Any] = asdict(TimingStats.from_seconds(times, batch_size))
        scope_result["first_call_s"] = first_call  # includes torch.compile / cuDNN autotuning
        if torch_device.type == "cuda":
            scope_result["cuda_peak_allocated_bytes"] = torch.cuda.max_memory_allocated(torch_device)
            scope_result["cuda_peak_reserved_bytes"] = torch.cuda.max_memory_reserved(torch_device)
        result["scopes"][scope] = scope_result
        logger.info("%s: median %.1f ms (%.2f FPS)", scope, scope_result["median_ms"], scope_result["fps"])
    result["process_peak_rss_bytes"] = _peak_rss_bytes()
    return result


def _parameter_counts(runtime: ModelRuntime) -> tuple[int | None, int | None]:
    """Parameters (shared tensors counted once) and buffer values of a PyTorch model; None for an exported graph."""
    if not isinstance(runtime, TorchRuntime):
        return None, None
    parameters = {id(parameter): parameter.numel() for parameter in runtime.model.parameters()}
    return sum(parameters.values()), sum(buffer.numel() for buffer in runtime.model.buffers())


def _model_only(predictor: Predictor, batch: list[PreparedImage]) -> Callable[[], ModelOutputs]:
    """The forward pass alone, on a batch already padded (and, for PyTorch, already on the device)."""
    inputs = predictor.processor.collate(batch, predictor.runtime.min_size)
    inputs = ModelInputs(inputs.pixel_values.to(predictor.device), inputs.pixel_mask.to(predictor.device))
    return lambda: predictor.runtime(inputs)


def _end_to_end(predictor: Predictor, image_path: Path, batch_size: int) -> Callable[[], list[SceneGraph]]:
    """Decode + resize + normalise + copy + forward + post-process into `SceneGraph`s."""

    def run() -> list[SceneGraph]:
        batch = [predictor.prepare(image_path) for _ in range(batch_size)]
        return predictor.postprocess(predictor.forward(batch), batch)

    return run


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (the whole process, not only the benchmark)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def environment(device: torch.device) -> dict[str, Any]:
    """Everything that changes the numbers: hardware, library versions, threads, precision flags."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info |= {
            "gpu": torch.cuda.get_device_name(device),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        }
    return info


def cpu_name() -> str:
    """The CPU model as `lscpu` names it ("model name" of /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matmul_floor_gflops(dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 7) -> float:
    """This machine's matmul throughput with the current threads: the best GFLOP/s of `repeats` timed `size`^3
    `torch.mm` calls in `dtype` (after one untimed call).

    A model's forward pass can use the cores at most this well, so `forward GFLOP / seconds / floor` is the share
    of the machine it reaches. The best of several calls, because the floor itself swings between runs.
    """
    left, right = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(left, right)
    best = min(_seconds(lambda: torch.mm(left, right)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def forward_gflop(model: EGTR, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> float:
    """GFLOP of one forward pass: matmuls and convolutions, counted by `torch.utils.flop_counter` (2 per
    multiply-add). The deformable attention's sampling is not a matmul and counts 0."""
    from torch.utils.flop_counter import FlopCounterMode

    # The counter's module tracker needs autograd on (no `no_grad`): the parameters stop requiring gradients instead.
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    counter = FlopCounterMode(display=False)
    try:
        for parameter in trainable:
            parameter.requires_grad_(False)
        with counter:
            model(pixel_values, pixel_mask)
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)
    return counter.get_total_flops() / 1e9


def _seconds(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def format_result(result: dict[str, Any]) -> str:
    """A few human-readable lines for the terminal."""
    settings = result["settings"]
    height, width = settings["input_size_hw"]
    environment_info = result["environment"]
    hardware = environment_info.get("gpu") or f"{environment_info['cpu']} ({environment_info['torch_threads']} threads)"
    compiled = f" + torch.compile({settings['compile_mode']})" if settings.get("compile_mode") else ""
    parameters = f"{result['parameters']:,} parameters" if result["parameters"] is not None else "exported graph"
    original_height, original_width = settings["original_size_hw"]
    lines = [
        f"model: {result['model'] or 'EGTR'}; {parameters}",
        f"runtime: {settings['runtime']}; device: {settings['device']} = {hardware}; "
        + f"torch {environment_info['torch']}; dtype {settings['dtype']}{compiled}",
        f"input: {Path(settings['image']).name} {original_width}x{original_height} -> {width}x{height} "
        + f"(shorter side {settings['image_size']}, longer <= {settings['max_size']}), batch {settings['batch_size']}; "
        + f"{settings['warmup']} warm-up + {settings['runs']} timed runs",
    ]
    for scope, values in result["scopes"].items():
        memory = ""
        if "cuda_peak_allocated_bytes" in values:
            memory = f", peak CUDA memory {values['cuda_peak_allocated_bytes'] / 2**20:.0f} MiB"
        lines.append(
            f"{scope.replace('_', '-'):>11}: {values['fps']:.2f} FPS, median {values['median_ms']:.1f} ms "
            f"(p10 {values['p10_ms']:.1f}, p90 {values['p90_ms']:.1f}, IQR {values['iqr_ms']:.1f}), "
            f"first call {values['first_call_s']:.2f} s{memory}"
        )
    lines.append(f"process peak RSS: {result['process_peak_rss_bytes'] / 2**20:.0f} MiB")
    return "\n".join(lines)


def write_result(result: Mapping[str, object], path: str | Path) -> Path:
    return write_json(path, result)
