"""What bulk prediction reads: image files, lists of image files (text, CSV, Parquet) and WebDataset tar shards.

The corpus is cut into *units* that depend only on the input, never on the number of processes: the image files
(command-line files first, then each `--input-list` in order) form consecutive chunks of `shard_size` entries
(`list-000000`, `list-000001`, ...), and each tar shard forms chunks of `shard_size` samples of its own
(`tar-00003-0000`, ...). A unit is what one output shard holds and what a resumed run skips or redoes as a whole.

Units are dealt round-robin to the global DataLoader workers (rank x workers per rank + worker id): list chunk `c`
to worker `c % total`, tar shard `t` (all its chunks) to worker `t % total`. Every worker streams the lists
itself and keeps only its own chunks, so no process holds the corpus, or even its list of paths, in memory (the
command-line files excepted).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import itertools
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from egtr.errors import EgtrError
from egtr.extras import require_extra
from egtr.fileio import file_sha256
from egtr.images import IMAGE_SUFFIXES

LIST_UNIT = "list"
TAR_UNIT = "tar"


class BulkInputError(EgtrError, ValueError):
    """A user error in the inputs of bulk prediction (missing list, missing column, no such shard)."""


@dataclass(frozen=True)
class Entry:
    """One input image: `key` identifies it in the output; `path` (a file) or `data` (encoded bytes) holds it;
    `problem` says why it cannot be read at all (an empty path in a list, a tar sample without an image)."""

    unit: str
    index: int  # position within the unit
    key: str
    path: str | None = None
    data: bytes | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Corpus:
    """The inputs of one bulk run, in the order that defines the units.

    Attributes:
        files: image files given on the command line (folders and globs already expanded).
        input_lists: text (one path per line), `.csv` or `.parquet` files with a `path_column`.
        tar_shards: WebDataset tar shards (image bytes + `__key__` per sample).
        data_root: relative paths in input lists are taken relative to it (None: the current directory).
        path_column: the column of CSV / Parquet lists that holds the paths.
        shard_size: entries per unit (= records per output shard, errors included).
    """

    files: tuple[str, ...] = ()
    input_lists: tuple[str, ...] = ()
    tar_shards: tuple[str, ...] = ()
    data_root: str | None = None
    path_column: str = "path"
    shard_size: int = 1000

    def check(self) -> Corpus:
        """Fail early, with the file named, on a missing list, a list without the path column, a missing shard."""
        if self.shard_size < 1:
            raise BulkInputError(f"--shard-size must be >= 1, got {self.shard_size}")
        if not (self.files or self.input_lists or self.tar_shards):
            raise BulkInputError("no inputs: give image files, folders, globs, tar shards or --input-list")
        for name in (*self.input_lists, *self.tar_shards):
            if not Path(name).is_file():
                raise BulkInputError(f"{name}: no such file")
        for name in self.input_lists:
            _check_list_header(Path(name), self.path_column)
        return self

    # ---------------------------------------------------------------- the list units
    def list_entries(self) -> Iterator[tuple[str, str | None, str | None]]:
        """(key, path, problem) of every image file, command-line files first, streamed from the lists."""
        for name in self.files:
            yield name, name, None
        root = Path(self.data_root) if self.data_root else None
        for name in self.input_lists:
            for where, value in _read_list(Path(name), self.path_column):
                if not value:
                    yield where, None, f"{where}: empty path"
                else:
                    yield value, str(root / value) if root is not None else value, None

    def list_units(self, wanted: Callable[[int], bool] | None = None) -> Iterator[tuple[str, list[Entry]]]:
        """(unit name, entries) of the list chunks whose number `wanted` accepts, in order."""
        entries = self.list_entries()
        for chunk in itertools.count():
            keep = wanted is None or wanted(chunk)
            block = list(itertools.islice(entries, self.shard_size))
            if not block:
                return
            if keep:
                unit = unit_name(LIST_UNIT, chunk)
                yield unit, [Entry(unit, i, key, path=path, problem=why) for i, (key, path, why) in enumerate(block)]

    # ---------------------------------------------------------------- the tar units
    def tar_samples(self, shard: int, skip_unit: Callable[[str], bool], seen: dict[str, int]) -> Iterator[Entry]:
        """The samples of tar shard number `shard` as entries (bytes of the first image member), in tar order.

        Samples of units that `skip_unit` accepts are read past without keeping their bytes. A tar that cannot be
        read further (truncated, corrupt) ends with one entry whose `problem` says so. At the end, `seen["samples"]`
        is the number of samples read (so a caller knows the tar is finished and how many chunks it has).
        """
        from webdataset.tariterators import group_by_keys, tar_file_iterator

        path = self.tar_shards[shard]
        index = -1
        try:
            with open(path, "rb") as stream:
                members = ({**member, "__url__": path} for member in tar_file_iterator(stream))
                for index, sample in enumerate(group_by_keys(members)):
                    unit = unit_name(TAR_UNIT, index // self.shard_size, shard)
                    if skip_unit(unit):
                        continue
                    key = sample["__key__"]
                    image_fields = [name for name in sample if ("." + name.split(".")[-1]) in IMAGE_SUFFIXES]
                    entry = Entry(unit, index % self.shard_size, key)
                    if not image_fields:
                        fields = ", ".join(sorted(name for name in sample if not name.startswith("__")))
                        yield replace(entry, problem=f"{path}: sample {key!r} has no image (fields: {fields})")
                    else:
                        yield replace(entry, data=sample[sorted(image_fields)[0]])
        except (tarfile.TarError, OSError, ValueError) as error:
            index += 1
            unit = unit_name(TAR_UNIT, index // self.shard_size, shard)
            if not skip_unit(unit):
                yield Entry(
                    unit, index % self.shard_size, f"{path}#{index}", problem=f"{path}: unreadable tar ({error})"
                )
        seen["samples"] = index + 1

    def count_tar_samples(self, shard: int) -> int:
        """Samples in a tar shard, from its headers only (no image bytes are read)."""
        keys = set()
        with tarfile.open(self.tar_shards[shard]) as archive:
            for member in archive:
                if member.isfile() and not Path(member.name).name.startswith("__"):
                    keys.add(_sample_key(member.name))
        return len(keys)

    def fingerprint(self) -> dict[str, object]:
        """What identifies the inputs (and so the units) for the resume check: a change here changes the units."""
        files = hashlib.sha256("\n".join(self.files).encode()).hexdigest()
        return {
            "files": {"count": len(self.files), "sha256": files},
            "input_lists": [{"path": name, "sha256": file_sha256(name)} for name in self.input_lists],
            "tar_shards": list(self.tar_shards),
            "data_root": self.data_root,
            "path_column": self.path_column,
            "shard_size": self.shard_size,
        }


def unit_name(kind: str, chunk: int, shard: int | None = None) -> str:
    return f"{LIST_UNIT}-{chunk:06d}" if kind == LIST_UNIT else f"{TAR_UNIT}-{shard:05d}-{chunk:04d}"


def split_inputs(inputs: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate tar shards (`.tar`, brace ranges like `shards/{000..127}.tar` and globs expanded) from image
    inputs (files, folders, globs: left for `egtr.inference.expand_image_paths`)."""
    images: list[str] = []
    tars: list[str] = []
    for item in inputs:
        for expanded in _expand_braces(item):
            if not expanded.lower().endswith(".tar"):
                images.append(expanded)
            elif glob.has_magic(expanded):
                matches = sorted(glob.glob(expanded))
                if not matches:
                    raise BulkInputError(f"{expanded}: no tar shard matches")
                tars.extend(matches)
            else:
                tars.append(expanded)
    return images, list(dict.fromkeys(tars))


def _expand_braces(item: str) -> list[str]:
    """`shards/{000..127}.tar` as its 128 names; an input without braces as itself, so that predicting image files
    needs no braceexpand (a module of the bulk extra)."""
    if "{" not in item:
        return [item]
    require_extra("bulk", f"the brace range {item}")
    from braceexpand import braceexpand

    return list(braceexpand(item))


# -------------------------------------------------------------------------------------------- list files
def _list_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    return {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}.get(suffix, "text")


def _check_list_header(path: Path, column: str) -> None:
    kind = _list_kind(path)
    if kind == "text":
        return
    if kind == "csv":
        with open(path, newline="") as stream:
            header = next(csv.reader(stream), [])
    else:
        import pyarrow.parquet as pq

        try:
            header = pq.read_schema(path).names
        except Exception as error:  # pyarrow raises its own ArrowInvalid for a file that is not Parquet
            raise BulkInputError(f"{path}: not a readable Parquet file ({error})") from error
    if column not in header:
        raise BulkInputError(
            f"{path}: no {column!r} column (columns: {', '.join(header) or 'none'}); see --path-column"
        )


def _read_list(path: Path, column: str) -> Iterator[tuple[str, str]]:
    """(where, path value) per entry; `where` names the file and line or row for error messages."""
    kind = _list_kind(path)
    if kind == "text":
        with open(path, encoding="utf-8") as stream:
            for number, line in enumerate(stream, 1):
                value = line.rstrip("\r\n")
                if value.strip():  # blank lines separate nothing and name no image
                    yield f"{path}:{number}", value.strip()
    elif kind == "csv":
        with open(path, newline="", encoding="utf-8") as stream:
            for number, row in enumerate(csv.DictReader(stream), 2):
                yield f"{path}:{number}", (row.get(column) or "").strip()
    else:
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(path).iter_batches(columns=[column], batch_size=65536):
            for value in batch.column(0).to_pylist():
                yield f"{path} row {number}", "" if value is None else str(value).strip()
                number += 1


def _sample_key(member_name: str) -> str:
    # webdataset's rule (base_plus_ext): the key is everything before the first dot of the file name.
    folder, _, name = member_name.rpartition("/")
    return f"{folder}/{name.split('.')[0]}" if folder else name.split(".")[0]
