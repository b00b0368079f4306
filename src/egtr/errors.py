"""The exceptions that mean "your input is wrong", as opposed to a bug in egtr.

Every message names the file and, where there is one, the record (image id, list index, task id) and the field, so
that it is actionable on its own: the command line prints it as one line and exits with status 2 (`egtr.cli`).
They subclass `ValueError` as well, so code that already catches `ValueError` keeps working.
"""

from __future__ import annotations


class EgtrError(Exception):
    """Base class: a problem with the user's files, records or values (never an internal error)."""


class ConfigError(EgtrError, ValueError):
    """A configuration file or value that is missing, malformed or inconsistent."""


class CheckpointError(EgtrError, ValueError):
    """A file that is not (or does not fit) the expected checkpoint; the message says what it looks like."""


class DataError(EgtrError, ValueError):
    """A dataset file or record is missing, unreadable or inconsistent.

    Raised inside DataLoader workers too, so the message must stand alone in the main process.
    """


class ImageError(DataError):
    """An image that cannot be used: missing, not an image, truncated, of an unsupported mode, or over the pixel
    limit."""


class MissingExtraError(EgtrError, ImportError):
    """An optional dependency is not installed; the message names the extra and the pip command."""

    def __init__(self, what: str, extra: str) -> None:
        super().__init__(f'{what} needs the {extra} extra: pip install "egtr[{extra}]"')
        self.extra = extra


class HubError(EgtrError, ValueError):
    """A model name (`org/name`) the Hugging Face Hub or its cache cannot provide: unknown, no such revision, not
    cached while offline, the Hub unreachable, or an upload refused."""


class OutputError(EgtrError, ValueError):
    """An output location (`--out`) where nothing can be written: a file where a folder is needed, a read-only file
    system, no permission. Found before any work is done."""
