"""The one exception type of `egtr.data`: every problem with users' data is raised as a `DataError`."""

from __future__ import annotations


class DataError(ValueError):
    """A dataset file or record is missing, unreadable or inconsistent.

    The message always names the file and, where there is one, the record (image id / list index) and field, so
    that a failure inside a DataLoader worker is still actionable in the main process.
    """
