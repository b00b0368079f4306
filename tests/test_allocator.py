"""`tune_cpu_allocator` makes freed large blocks reusable, so a repeated allocation no longer page-faults."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the setting is glibc's mallopt"
)

# Allocate, touch and free a 64 MiB tensor 12 times; print (tuning applied, minor page faults of the last eight: the
# first few settle the heap's layout).
CHILD = """
import resource, torch
from egtr import tune_cpu_allocator
applied = tune_cpu_allocator() if TUNE else False
for _ in range(4):
    torch.empty(16 << 20).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    torch.empty(16 << 20).fill_(1.0)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _run(tune: bool, **environment: str) -> tuple[bool, int]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MALLOC_", "EGTR_DEFAULT_MALLOC"))}
    env.update(environment)
    completed = subprocess.run(
        [sys.executable, "-c", CHILD.replace("TUNE", str(tune))], env=env, capture_output=True, text=True, check=True
    )
    applied, faults = completed.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.slow
def test_freed_blocks_are_reused_after_tuning():
    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    applied, tuned_faults = _run(tune=True)
    assert applied
    _, default_faults = _run(tune=False)
    assert default_faults > 7 * pages  # glibc unmapped and re-faulted every block
    assert tuned_faults < pages // 4  # the block stayed in the heap


def test_environment_opts_out():
    applied, faults = _run(tune=True, EGTR_DEFAULT_MALLOC="1")
    assert not applied and faults > 7 * (64 << 20) // os.sysconf("SC_PAGE_SIZE")
