"""Large JSON annotation files read one record at a time, and records pointed at instead of kept.

A VG150-sized COCO-relations file holds 1.2M annotation objects: parsed whole with `json.load` they take about
1.5 GB before anything is converted. The importers read such files here instead: the text is read in chunks of
`CHUNK` characters and each record (an item of a top-level list, or a member of the top-level object) is decoded on
its own by the json module's C scanner (`JSONDecoder.raw_decode`), so that memory holds one chunk and one record,
at `json.load`'s speed. Only the structure around the records (the top-level braces, keys, commas) is walked here.

A dropped record is reported with a `RecordRef` (file, list, position); the report quotes the records it points at
in one more pass at the end (`resolve`).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from egtr.errors import DataError

CHUNK = 1 << 24  # characters per read: 16 Mi, several thousand records
_DECODER = json.JSONDecoder()
_NON_SPACE = re.compile(r"[^ \t\n\r]")


@dataclass(frozen=True, slots=True)
class RecordRef:
    """Where a record is: item `position` of the top-level list `field` of the JSON file `path`."""

    path: Path
    field: str
    position: int


class _Reader:
    """A JSON text read chunk by chunk; `value()` decodes the next value, `take(char)` consumes punctuation."""

    def __init__(self, path: Path, handle: IO[str]) -> None:
        self.path, self.handle = path, handle
        self.buffer, self.start = "", 0  # unread text and where the next token starts in it
        self.line = 1  # line number at buffer[0], for error messages
        self.eof = False

    def _fill(self) -> bool:
        """Append the next chunk (dropping what was read); False at the end of the file."""
        if self.eof:
            return False
        try:
            chunk = self.handle.read(CHUNK)
        except UnicodeDecodeError as error:
            raise DataError(f"{self.path}: not UTF-8 text ({error})") from error
        if not chunk:
            self.eof = True
            return False
        self.line += self.buffer.count("\n", 0, self.start)
        self.buffer = self.buffer[self.start :] + chunk
        self.start = 0
        return True

    def peek(self) -> str:
        """The next character that is not white space ("" at the end of the file); nothing is consumed."""
        while True:
            match = _NON_SPACE.search(self.buffer, self.start)
            if match is not None:
                self.start = match.start()
                return self.buffer[self.start]
            self.start = len(self.buffer)
            if not self._fill():
                return ""

    def take(self, expected: str) -> str:
        """Consume the next character, which must be one of `expected`."""
        char = self.peek()
        if not char or char not in expected:
            wanted = " or ".join(repr(c) for c in expected)
            raise self.error(f"expecting {wanted}", self.start)
        self.start += 1
        return char

    def value(self) -> Any:
        """Decode the next JSON value (reading more chunks while it continues past the buffer)."""
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buffer, self.start)
            except json.JSONDecodeError as error:
                if self._fill():  # the value may go on in the next chunk
                    continue
                raise self.error(error.msg, error.pos) from error
            if end == len(self.buffer) and self._fill():
                continue  # a number or literal cut by the chunk end would decode as a shorter value
            self.start = end
            return value

    def skip(self) -> None:
        """Skip the next value; a list is skipped item by item, so a large one is never held."""
        if self.peek() == "[":
            for _ in self.items():
                pass
        else:
            self.value()

    def items(self) -> Iterator[Any]:
        """The items of the list that starts here, one at a time."""
        self.take("[")
        if self.peek() == "]":
            self.start += 1
            return
        while True:
            yield self.value()
            if self.take(",]") == "]":
                return

    def members(self) -> Iterator[str]:
        """The keys of the object that starts here; after each key the reader is at its value, which the caller
        must read (`value`, `items` or `skip`) before asking for the next key."""
        self.take("{")
        if self.peek() == "}":
            self.start += 1
            return
        while True:
            key = self.value() if self.peek() == '"' else None
            if not isinstance(key, str):
                raise self.error("expecting a property name in double quotes", self.start)
            self.take(":")
            yield key
            if self.take(",}") == "}":
                return

    def end(self) -> None:
        if self.peek():
            raise self.error("extra data after the JSON value", self.start)

    def error(self, message: str, position: int) -> DataError:
        line = self.line + self.buffer.count("\n", 0, position)
        column = position - self.buffer.rfind("\n", 0, position)
        return DataError(f"{self.path}: malformed JSON at line {line} column {column}: {message}")


def _open(path: Path) -> IO[str]:
    try:
        return open(path, encoding="utf-8")
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror})") from error


def _document_start(reader: _Reader) -> str:
    """The first character of the file, "[" or "{" (or "" when empty): every annotation file holds a list or an
    object. Anything else is refused here with what it is, "not JSON" (a CSV, YAML, a binary) or JSON of one number
    or string, instead of a parse error about some later character."""
    char = reader.peek()
    if char in ("[", "{", ""):
        return char
    try:  # within the first chunk only: a large CSV must not be read whole to say that it is no JSON
        value, end = _DECODER.raw_decode(reader.buffer, reader.start)
        single_value = not reader.buffer[end:].strip()
    except json.JSONDecodeError:
        single_value = False
    if not single_value:
        first_line = reader.buffer[reader.start :].split("\n", 1)[0][:60]
        csv = " (it looks like CSV)" if any(separator in first_line for separator in ",;\t") else ""
        raise DataError(f"{reader.path}: not JSON{csv}: it begins with {first_line!r}")
    raise DataError(f"{reader.path}: JSON of a single {type(value).__name__}, not a list or an object")


def top_level_kind(path: Path) -> str:
    """ "list", "object" or "empty": what the JSON file holds, from its first value's start (nothing else is read).

    Raises:
        DataError: the file is not JSON, or holds a single number, string or literal.
    """
    with _open(path) as handle:
        return {"[": "list", "{": "object"}.get(_document_start(_Reader(path, handle)), "empty")


def iter_fields(path: Path, fields: Collection[str]) -> Iterator[tuple[str, int, Any]]:
    """(field, position, item) for every item of the top-level lists `fields` of a JSON object file, in file order,
    in one pass; other members are skipped, and a wanted field that is not a list yields its value at position -1.

    Raises:
        DataError: the file is not valid JSON (file, line, column and what was expected), or not UTF-8.
    """
    with _open(path) as handle:
        reader = _Reader(path, handle)
        if _document_start(reader) != "{":
            reader.skip()
            reader.end()
            return
        for key in reader.members():
            if key not in fields:
                reader.skip()
            elif reader.peek() == "[":
                for position, item in enumerate(reader.items()):
                    yield key, position, item
            else:
                yield key, -1, reader.value()
        reader.end()


def iter_field(path: Path, field: str) -> Iterator[Any]:
    """The items of the top-level list `field` of a JSON object file, one at a time (none if it is no list)."""
    for _, position, item in iter_fields(path, (field,)):
        if position >= 0:
            yield item


def read_fields(path: Path, fields: Collection[str]) -> dict[str, Any]:
    """Small top-level members of a JSON object file (e.g. name lists), whole, in one pass; missing ones absent."""
    values: dict[str, Any] = {}
    for key, position, item in iter_fields(path, fields):
        if position < 0:
            values[key] = item
        else:
            values.setdefault(key, []).append(item)
    return values


def iter_list(path: Path) -> Iterator[Any]:
    """The items of a JSON file that is a list, one at a time (none if it is no list)."""
    with _open(path) as handle:
        reader = _Reader(path, handle)
        if _document_start(reader) == "[":
            yield from reader.items()
        else:
            reader.skip()
        reader.end()


def iter_members(path: Path) -> Iterator[tuple[str, Any]]:
    """The (key, value) members of a JSON file that is an object, one at a time (none if it is no object)."""
    with _open(path) as handle:
        reader = _Reader(path, handle)
        if _document_start(reader) == "{":
            for key in reader.members():
                yield key, reader.value()
        else:
            reader.skip()
        reader.end()


def resolve(refs: Iterable[RecordRef]) -> dict[RecordRef, Any]:
    """The records `refs` point at: one pass per file, which stops after the last one needed."""
    wanted: dict[Path, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for ref in refs:
        wanted[ref.path][ref.field].add(ref.position)
    records: dict[RecordRef, Any] = {}
    for path, positions in wanted.items():
        remaining = sum(map(len, positions.values()))
        for field, position, record in iter_fields(path, positions):
            if position in positions[field]:
                records[RecordRef(path, field, position)] = record
                remaining -= 1
                if not remaining:
                    break
    return records
