"""Keep freed memory for reuse: a process-wide malloc setting that makes CPU inference much faster.

glibc's malloc hands every block above its mmap threshold (adaptive, at most 32 MiB) back to the kernel as soon as it
is freed, and the next such allocation is mapped afresh and page-faulted in, zeroed, page by page. One 600x1000
forward pass allocates and frees hundreds of multi-megabyte activations (the encoder's 12,537 x 1024 feed-forward
activation alone is 51 MB), so a fifth of its time went to page faults (0.3-0.5 million minor faults per pass,
1.66 s instead of 1.32 s on 2 cores: `python benchmarks/cpu_forward.py`). Raising the mmap and trim thresholds lets
freed blocks stay in the heap and be reused: the effect PyTorch's
CPU performance guide gets by preloading jemalloc or tcmalloc, here with nothing but glibc. The cost: the heap keeps
its high-water mark until the process exits (measured: +40 to +100 MiB peak RSS for the full model at 600x1000).

`egtr` commands call `tune_cpu_allocator()` at start; Python users call it once themselves. Setting the
environment variable `EGTR_DEFAULT_MALLOC=1` (or any of glibc's own `MALLOC_MMAP_THRESHOLD_` /
`MALLOC_TRIM_THRESHOLD_`) leaves malloc as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
DEFAULT_THRESHOLD_BYTES = 1 << 30
_applied = False


def tune_cpu_allocator(threshold_bytes: int = DEFAULT_THRESHOLD_BYTES) -> bool:
    """Keep freed blocks below `threshold_bytes` in the heap for reuse (glibc only; idempotent).

    Returns True when the setting is in effect (now or from an earlier call), False where it does not apply: not
    glibc, opted out through the environment, or mallopt refused the value.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get("EGTR_DEFAULT_MALLOC") or any(
        name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    ):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        accepted = libc.mallopt(_M_MMAP_THRESHOLD, threshold_bytes) == 1
        accepted = accepted and libc.mallopt(_M_TRIM_THRESHOLD, threshold_bytes) == 1
    except (OSError, AttributeError) as error:  # no loadable libc or no mallopt in it
        logger.debug("malloc left as it is: %s", error)
        return False
    _applied = accepted
    return accepted
