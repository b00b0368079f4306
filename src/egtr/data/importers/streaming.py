"""Large JSON annotation files read one record at a time, and records pointed at instead of kept.

A VG150-sized COCO-relations file holds 1.2M annotation objects: parsed whole with `json.load` they take about
1 GB before anything is converted. The importers that meet such files read each top-level list item by item with
ijson's C parser and keep only the fields they need; a dropped record is reported with a `RecordRef` (file, list,
position), and the report quotes the records it points at in one more pass at the end.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ijson

from egtr.errors import DataError


@dataclass(frozen=True, slots=True)
class RecordRef:
    """Where a record is: item `position` of the top-level list `field` of the JSON file `path`."""

    path: Path
    field: str
    position: int


def iter_field(path: Path, field: str) -> Iterator[Any]:
    """The items of the top-level list `field` of a JSON file, one at a time (none if it is missing or no list).

    Raises:
        DataError: the file is not valid JSON (named, with the parser's message); raised when the parser gets there.
    """
    try:
        with open(path, "rb") as handle:
            # use_float: numbers as float, not Decimal (ints stay int), as json.load gives them.
            yield from ijson.items(handle, f"{field}.item" if field else "item", use_float=True)
    except ijson.JSONError as error:
        raise _malformed(path, error) from error


def _malformed(path: Path, error: ijson.JSONError) -> DataError:
    """One line from yajl's message: its first line and the text it points at (it spans three lines)."""
    message: Any = error.args[0] if error.args else str(error)
    if isinstance(message, str) and message[:2] in ("b'", 'b"'):  # yajl's bytes, as their repr (lexical errors)
        message = ast.literal_eval(message)
    if isinstance(message, bytes):
        message = message.decode("utf-8", "backslashreplace")
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    near = next((line for line in lines[1:] if "(right here)" not in line), "")
    return DataError(
        f"{path}: malformed JSON ({lines[0] if lines else 'parse error'}" + (f" near {near!r})" if near else ")")
    )


def iter_list(path: Path) -> Iterator[Any]:
    """The items of a JSON file that is a list, one at a time (none if it is no list)."""
    return iter_field(path, "")


def iter_members(path: Path) -> Iterator[tuple[str, Any]]:
    """The (key, value) members of a JSON file that is an object, one at a time (none if it is no object)."""
    try:
        with open(path, "rb") as handle:
            yield from ijson.kvitems(handle, "", use_float=True)
    except ijson.JSONError as error:
        raise _malformed(path, error) from error


def top_level_kind(path: Path) -> str:
    """ "list", "object" or "other": what the JSON file holds, from its first character (nothing else is read)."""
    with open(path, "rb") as handle:
        start = handle.read(4096).lstrip(b" \t\r\n")[:1]
    return {b"[": "list", b"{": "object"}.get(start, "other")


def read_field(path: Path, field: str) -> list[Any]:
    """A small top-level list of a JSON file (e.g. `categories`), whole."""
    return list(iter_field(path, field))


def resolve(refs: Iterable[RecordRef]) -> dict[RecordRef, Any]:
    """The records `refs` point at, read in one pass per (file, list) that stops after the last one needed."""
    wanted: dict[tuple[Path, str], set[int]] = defaultdict(set)
    for ref in refs:
        wanted[(ref.path, ref.field)].add(ref.position)
    records: dict[RecordRef, Any] = {}
    for (path, field), positions in wanted.items():
        last = max(positions)
        for position, record in enumerate(iter_field(path, field)):
            if position in positions:
                records[RecordRef(path, field, position)] = record
            if position >= last:
                break
    return records
