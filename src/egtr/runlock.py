"""`RunLock`: one process at a time writes into a run directory; a second one is refused with the holder's name.

The lock is an advisory `flock` on `DIRECTORY/.egtr.lock`, which the kernel releases when the holding process ends in
any way, SIGKILL and crashes included: a killed run never leaves its directory locked. The file itself stays and
holds the holder's description (pid, host, start time, command) for the refusal message; its presence alone means
nothing. On systems without `fcntl` (Windows) no lock is taken and a warning says so.

`flock` locks are not reliable on some network file systems (old NFS); the lock protects against a second run on
the same machine or on file systems that support it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from egtr.errors import EgtrError
from egtr.fileio import read_json

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

LOCK_NAME = ".egtr.lock"


class RunLockedError(EgtrError, RuntimeError):
    """Another live process holds the run directory (the message names it); the command line exits with 2."""


class RunLock:
    """Exclusive lock of a run directory, held from `acquire()` (or `with`) to `release()` or the process's end.

    Args:
        directory: the run directory (created if missing).
        purpose: what the holder does, shown to a refused process (e.g. "egtr train").
    """

    def __init__(self, directory: str | Path, purpose: str = "egtr training") -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.purpose = purpose
        self._descriptor: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise `RunLockedError` naming the holder; never waits."""
        if self._descriptor is not None:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            logger.warning("no file locking on this system: nothing stops a second run in %s", self.directory)
            return self
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(descriptor)
            raise RunLockedError(
                f"{self.directory} is in use by {self._holder()}; wait for it to finish or stop it, or choose "
                "another output directory"
            ) from None
        # Ours now: replace the previous holder's description (the file is never truncated by a refused process).
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "purpose": self.purpose,
            "command": " ".join(sys.argv),
        }
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (json.dumps(holder) + "\n").encode(), 0)
        self._descriptor = descriptor
        return self

    def release(self) -> None:
        """Give the lock up (also done by the kernel when the process ends)."""
        if self._descriptor is None:
            return
        descriptor, self._descriptor = self._descriptor, None
        try:
            os.ftruncate(descriptor, 0)
            fcntl.flock(descriptor, fcntl.LOCK_UN)
        finally:
            os.close(descriptor)

    @property
    def held(self) -> bool:
        return self._descriptor is not None

    def _holder(self) -> str:
        try:
            holder = read_json(self.path)
            return (
                f"{holder['purpose']} (pid {holder['pid']} on {holder['host']}, started {holder['started']}: "
                f"{holder['command']})"
            )
        except (OSError, ValueError, KeyError, TypeError):
            return "another process (no description in its lock file yet)"

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()
