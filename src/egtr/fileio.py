"""Atomic file writes and JSON files: one implementation for checkpoints, model directories, configs and reports.

`atomic_write(path, write)` lets `write` fill a temporary file in the target's directory, flushes it to disk
(`fsync`), renames it over the target with `os.replace` (atomic within one file system on POSIX and Windows) and
persists the rename (`fsync` of the directory). A reader therefore sees the previous complete file or the new
complete one, never a truncated one. On any failure (an exception, Ctrl-C, a full disk) the temporary file is
removed and the target is left as it was. A SIGKILL cannot run that cleanup: `remove_stale_temporaries` deletes what
such a kill leaves (names `.<target>.<random>.tmp`).

The file gets the permissions a plain `open(path, "w")` would give it: those of the file it replaces, else
0o666 minus the umask. (`tempfile.mkstemp` creates 0600 files; renamed as they are, a model trained by one user or
container could not be read by another.)

A full disk raises `DiskFullError` (an `OSError` with errno ENOSPC) naming the target, also where the writer hides
the operating system's error (`torch.save` reports it as "unexpected pos").
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

# A JSON object as this package writes and checks it (values are narrowed where they are read).
JsonObject = dict[str, object]

logger = logging.getLogger(__name__)

TEMPORARY_SUFFIX = ".tmp"
_FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """No space left on the device (or quota exceeded) while writing `path`; the previous file is unchanged."""

    def __init__(self, path: Path, cause: BaseException | None = None) -> None:
        self.path = Path(path)
        detail = f" ({cause})" if cause is not None else ""
        super().__init__(
            errno.ENOSPC, f"no space left on the device writing {self.path}{detail}; the file was not replaced"
        )

    def __str__(self) -> str:
        return str(self.args[1])


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux /proc), else by setting it back."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # os.umask only reports the old value by setting a new one
    os.umask(mask)
    return mask


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)  # an existing file keeps its permissions, as with open("w")
    except FileNotFoundError:
        return 0o666 & ~current_umask()


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` (or an exception it was raised from) is a full disk or an exceeded quota."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL_DISK_ERRNOS:
            return True
        if "No space left on device" in str(current) or "os error 28" in str(current):  # Rust (safetensors) I/O
            return True
        current = current.__cause__ or current.__context__
    return False


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write `path` atomically: `write(temporary_path)` fills a same-directory temporary file (see module docstring).

    Args:
        path: the target file; its directory is created if needed.
        write: called with the temporary file's path (the file exists, empty); must write the whole content there.

    Returns:
        `path` as a `Path`.

    Raises:
        DiskFullError: the device is full; the target is unchanged.
        Whatever `write` raises otherwise, after removing the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        os.chmod(temporary, _mode_for(path))
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        # Includes KeyboardInterrupt: the partial temporary file must not stay behind.
        temporary.unlink(missing_ok=True)
        if isinstance(error, Exception) and not isinstance(error, DiskFullError) and is_disk_full(error):
            raise DiskFullError(path, error) from error
        raise
    _fsync_directory(path.parent)
    return path


def write_bytes_stream(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """`write(stream)` into `path` through a stream that keeps the operating system's error of a failed write.

    For writers that turn an `OSError` of their stream into an error of their own (`torch.save`: "unexpected pos"):
    the `OSError` is raised instead, so that a full disk is recognised.
    """
    with open(path, "wb") as stream:
        recorder = _ErrorRecordingStream(stream)
        try:
            write(recorder)  # type: ignore[arg-type]  # a file-like object with write/flush
        except Exception as error:
            if recorder.error is not None and recorder.error is not error:
                raise recorder.error from error
            raise


class _ErrorRecordingStream:
    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._stream.write(data)
        except OSError as error:
            self.error = error
            raise

    def __getattr__(self, name: str) -> Any:  # seek, tell, truncate, ... of the real stream
        return getattr(self._stream, name)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as error:
            self.error = error
            raise


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically; returns the path."""
    return atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def write_json(
    path: str | Path,
    payload: object,
    allow_nan: bool = True,
    indent: int | None = 2,
    default: Callable[[Any], object] | None = None,
) -> Path:
    """Write `payload` as JSON (UTF-8, trailing newline) atomically; returns the path.

    `indent=None` writes one line (large generated files); `default` converts what JSON cannot hold (`json.dumps`).
    """
    text = json.dumps(payload, indent=indent, allow_nan=allow_nan, default=default) + "\n"  # a TypeError writes nothing
    return write_text(path, text)


def read_json(path: str | Path, error_type: type[Exception] = ValueError) -> Any:
    """Parse a JSON file; a missing file, invalid JSON or non-UTF-8 text raises `error_type` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise error_type(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise error_type(f"{path}: malformed JSON at line {error.lineno} column {error.colno}: {error.msg}") from error
    except UnicodeDecodeError as error:
        raise error_type(f"{path}: not UTF-8 text ({error})") from error


def remove_stale_temporaries(directory: str | Path) -> int:
    """Delete the temporary files of writes that a killed process (SIGKILL) could not clean up; returns how many.

    Only names `atomic_write` creates (`.<target>.<random>.tmp`) are touched. Call it only while no other process
    writes to `directory` (training holds the run directory's lock).
    """
    removed = 0
    for temporary in Path(directory).glob(f".*{TEMPORARY_SUFFIX}"):
        temporary.unlink(missing_ok=True)
        removed += 1
    if removed:
        logger.warning("removed %d unfinished file(s) left by an interrupted write in %s", removed, directory)
    return removed


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
