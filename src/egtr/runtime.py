"""Where and in which precision things run: the one place that resolves `device` and `dtype` settings.

Every entry point (Predictor, evaluation, benchmark, the CLI) takes the same spellings:

- device: "auto" (or None) = CUDA when available, else CPU; otherwise anything `torch.device` understands
  ("cpu", "cuda", "cuda:1"); asking for CUDA where there is none is an error, not a silent CPU run;
- dtype: "float32"/"fp32", "bfloat16"/"bf16", "float16"/"fp16"/"half" or a torch dtype. Reduced precision means
  `torch.autocast` around the forward pass (weights stay float32), the usual mixed-precision inference.
"""

from __future__ import annotations

import contextlib

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_ALIASES = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
# The CLI's --dtype choices: canonical names first, then the aliases.
DTYPE_CHOICES = (*DTYPES, *DTYPE_ALIASES)
# Lightning's precision plugin name for each dtype (training runs under Lightning's own autocast).
LIGHTNING_PRECISION = {"float32": "32-true", "bfloat16": "bf16-mixed", "float16": "16-mixed"}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """ "auto"/None -> CUDA when available, else CPU; anything else as `torch.device` understands it.

    Raises:
        ValueError: an unknown device string, or CUDA asked for where it is not available.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device {device!r} is not a device (expected auto, cpu, cuda, cuda:N, ...)") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was requested but CUDA is not available (torch {torch.__version__})")
    return resolved


def dtype_name(dtype: str | torch.dtype) -> str:
    """The canonical name ("float32", "bfloat16", "float16") of any accepted spelling."""
    if isinstance(dtype, torch.dtype):
        for name, value in DTYPES.items():
            if value == dtype:
                return name
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype}")
    name = DTYPE_ALIASES.get(str(dtype).lower(), str(dtype).lower())
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)} (or fp32/bf16/fp16), got {dtype!r}")
    return name


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Any accepted spelling -> the torch dtype."""
    return DTYPES[dtype_name(dtype)]


def autocast_context(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[object]:
    """`torch.autocast` for bfloat16/float16 on `device`, a no-op context for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def available_cpus() -> int:
    """CPU cores this process may run on: its affinity mask (taskset, cgroups' cpusets, SLURM's --cpus-per-task),
    not the machine's count, which `os.cpu_count()` and torch's default give."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity masks
        return os.cpu_count() or 1


def threads_per_process(processes: int = 1) -> int:
    """The default intra-op threads of each of `processes` processes sharing this machine: OMP_NUM_THREADS when it
    is set (as torch and Lightning honour it), else the available cores shared out, at least 1 (more threads than
    cores spin-wait for each other)."""
    import os

    told = os.environ.get("OMP_NUM_THREADS", "")
    if told.isdigit() and int(told) > 0:
        return int(told)
    return max(1, available_cpus() // max(1, processes))


def set_threads(threads: int | None, processes: int = 1) -> int:
    """Set torch's intra-op threads to `threads` (None: `threads_per_process(processes)`); returns the number."""
    count = threads or threads_per_process(processes)
    torch.set_num_threads(count)
    return count
