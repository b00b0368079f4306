"""The output folder of bulk prediction: shards committed by atomic rename, errors, settings and the manifest.

Layout of `--out`:

    settings.json             what the results depend on (model SHA-256, prediction settings, inputs); a later run
                              with different ones is refused unless --overwrite
    shards/list-000000.parquet ...  one shard per unit (see egtr.bulk.sources), one record per image:
                              {"key": ..., **SceneGraph.to_dict()}, in input order within the shard; the folder
                              is a Parquet (or JSONL) dataset as it is: pandas.read_parquet("out/shards")
    _units/<unit>.json        per committed unit: records and unreadable entries (key, reason)
    errors.jsonl              all unreadable entries, {"unit", "key", "reason"} (written at the end)
    manifest.json             model, weights SHA-256, settings, counts, shards, time (written at the end)

A shard is written by `egtr.fileio.atomic_write` (a hidden temporary file in the same folder, flushed to disk, then
renamed to its final name):
a reader (or a resumed run) sees either the whole shard or nothing, whenever the process is killed. A unit counts
as done exactly when its shard exists, so a re-run redoes the missing units and nothing else.
"""

from __future__ import annotations

import gzip
import json
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from egtr.bulk.sources import TAR_UNIT, BulkInputError
from egtr.fileio import atomic_write, read_json, remove_stale_temporaries, write_json

OUTPUT_FORMATS = {"jsonl": ".jsonl", "jsonl.gz": ".jsonl.gz", "parquet": ".parquet"}
MANIFEST_VERSION = 1
UNITS_DIR = "_units"
SHARDS_DIR = "shards"


def record_schema() -> Any:
    """The Arrow schema of a record: the `egtr predict` JSON (`SceneGraph.to_dict()`) plus `key`, typed."""
    import pyarrow as pa

    scene_object = pa.struct(
        [
            ("box", pa.list_(pa.float64())),
            ("label", pa.int64()),
            ("label_name", pa.string()),
            ("score", pa.float64()),
            ("query", pa.int64()),
        ]
    )
    relation = pa.struct(
        [
            ("subject", pa.int64()),
            ("object", pa.int64()),
            ("predicate", pa.int64()),
            ("predicate_name", pa.string()),
            ("score", pa.float64()),
            ("predicate_score", pa.float64()),
        ]
    )
    return pa.schema(
        [
            ("key", pa.string()),
            ("format_version", pa.int64()),
            ("image_path", pa.string()),
            ("image_size", pa.struct([("height", pa.int64()), ("width", pa.int64())])),
            ("objects", pa.list_(scene_object)),
            ("relations", pa.list_(relation)),
        ]
    )


class OutputFolder:
    """One bulk run's `--out` folder in one output format."""

    def __init__(self, root: str | Path, output_format: str) -> None:
        if output_format not in OUTPUT_FORMATS:
            raise BulkInputError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
        self.root = Path(root)
        self.output_format = output_format
        self.suffix = OUTPUT_FORMATS[output_format]

    @property
    def settings_path(self) -> Path:
        return self.root / "settings.json"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def errors_path(self) -> Path:
        return self.root / "errors.jsonl"

    @property
    def shards_dir(self) -> Path:
        return self.root / SHARDS_DIR

    def shard_path(self, unit: str) -> Path:
        return self.shards_dir / f"{unit}{self.suffix}"

    # ------------------------------------------------------------------ settings
    def check_settings(self, settings: dict[str, Any], overwrite: bool) -> None:
        """Refuse (BulkInputError) an existing folder made with other settings, unless `overwrite`. Read-only, so
        every process may call it."""
        if overwrite or not self.settings_path.is_file():
            if not overwrite and self.shards_dir.is_dir() and any(self.shards_dir.iterdir()):
                raise BulkInputError(
                    f"{self.root}: holds shards but no settings.json; not an egtr bulk output folder? "
                    "Use another --out, or --overwrite to replace its results"
                )
            return
        try:
            existing = read_json(self.settings_path)
        except (OSError, ValueError) as error:
            raise BulkInputError(
                f"{self.settings_path}: unreadable ({error}); use --overwrite to start over"
            ) from error
        changes = [f"{name} {old!r} -> {new!r}" for name, old, new in _setting_changes(existing, settings)]
        if changes:
            raise BulkInputError(
                f"{self.root} holds results made with other settings ({'; '.join(changes[:4])}"
                f"{'; ...' if len(changes) > 4 else ''}): use --overwrite to replace them, or another --out"
            )

    def prepare(self, settings: dict[str, Any], overwrite: bool) -> None:
        """Start (or resume) a run; one process only. `overwrite` removes earlier results first."""
        self.root.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for folder in (self.shards_dir, self.root / UNITS_DIR):
                shutil.rmtree(folder, ignore_errors=True)
        for stale in (self.manifest_path, self.errors_path):  # rewritten when this run finishes
            stale.unlink(missing_ok=True)
        for folder in (self.shards_dir, self.root / UNITS_DIR):
            folder.mkdir(exist_ok=True)
            remove_stale_temporaries(folder)  # of writes a kill -9 interrupted; nobody else writes yet
        write_json(self.settings_path, settings)

    def complete_manifest(
        self, *, settings: dict[str, Any] | None = None, request: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """The manifest of a finished run of these `settings` (or of this command-line `request`) whose shards are
        all on disk, else None: a rerun of a complete run has nothing to do and must change nothing."""
        try:
            manifest = read_json(self.manifest_path)
        except (OSError, ValueError):
            return None
        if not manifest.get("complete") or manifest.get("output_format") != self.output_format:
            return None
        if settings is not None and _setting_changes(manifest.get("settings"), settings):
            return None
        if request is not None and _differences(manifest.get("request"), request):
            return None
        return manifest if all((self.root / shard["file"]).is_file() for shard in manifest["shards"]) else None

    # ------------------------------------------------------------------ units
    def committed_units(self) -> set[str]:
        """Units whose shard exists, plus `tar-NNNNN-complete` for tar shards whose every unit is committed."""
        done = {path.name[: -len(self.suffix)] for path in self.shards_dir.glob(f"*{self.suffix}")}
        for marker in (self.root / UNITS_DIR).glob(f"{TAR_UNIT}-*-complete.json"):
            chunks = read_json(marker)["chunks"]
            shard = marker.name.split("-")[1]
            if all(f"{TAR_UNIT}-{shard}-{chunk:04d}" in done for chunk in range(chunks)):
                done.add(marker.name.removesuffix(".json"))
        return done

    def commit_unit(
        self, unit: str, records: list[dict[str, Any]], errors: list[dict[str, str]], tar_chunks: int | None = None
    ) -> Path:
        """Write the unit's errors, then its shard (the commit), then the tar marker when it was a tar's last."""
        write_json(self.root / UNITS_DIR / f"{unit}.json", {"unit": unit, "records": len(records), "errors": errors})
        shard = self.shard_path(unit)
        atomic_write(shard, lambda temporary: self._write_records(temporary, records))
        if tar_chunks is not None:
            shard_number = unit.split("-")[1]
            write_json(self.root / UNITS_DIR / f"{TAR_UNIT}-{shard_number}-complete.json", {"chunks": tar_chunks})
        return shard

    def _write_records(self, path: Path, records: list[dict[str, Any]]) -> None:
        if self.output_format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(records, schema=record_schema()), str(path))
            return
        lines = b"".join(json.dumps(record).encode() + b"\n" for record in records)
        if self.output_format == "jsonl.gz":
            with gzip.GzipFile(filename=str(path), mode="wb", mtime=0) as compressed:  # mtime=0: same bytes each run
                compressed.write(lines)
        else:
            path.write_bytes(lines)

    # ------------------------------------------------------------------ the end of a run
    def finish(self, settings: dict[str, Any], started: float, extra: dict[str, Any]) -> dict[str, Any]:
        """Merge the errors into errors.jsonl and write manifest.json (one process, after all have finished)."""
        shards: list[dict[str, Any]] = []
        all_errors: list[dict[str, Any]] = []
        for unit in sorted(name for name in self.committed_units() if not name.endswith("-complete")):
            summary = read_json(self.root / UNITS_DIR / f"{unit}.json")
            shards.append({"file": f"{SHARDS_DIR}/{self.shard_path(unit).name}", "records": summary["records"]})
            all_errors.extend({"unit": unit, **error} for error in summary["errors"])
        atomic_write(self.errors_path, lambda temporary: temporary.write_bytes(b"".join(_json_lines(all_errors))))
        finished = time.time()
        manifest = {
            "format_version": MANIFEST_VERSION,
            "model": settings.get("model"),
            "weights_sha256": settings.get("weights_sha256"),
            "settings": settings,
            "output_format": self.output_format,
            "counts": {
                "records": sum(shard["records"] for shard in shards),
                "errors": len(all_errors),
                "shards": len(shards),
            },
            "shards": shards,
            "errors_file": self.errors_path.name,
            "started": _iso(started),
            "finished": _iso(finished),
            "duration_s": round(finished - started, 3),
            **extra,
        }
        write_json(self.manifest_path, manifest)
        return manifest


def _json_lines(items: Iterable[dict[str, Any]]) -> Iterable[bytes]:
    return (json.dumps(item).encode() + b"\n" for item in items)


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _setting_changes(old: Any, new: Any) -> list[tuple[str, Any, Any]]:
    """The differences between two runs' settings that matter: all but the model's path (the same weights, by their
    SHA-256, may have moved)."""
    return [change for change in _differences(old, new) if change[0] != "model"]


def _differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted name, old, new) of every leaf that differs between two JSON-like values."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for name in sorted(set(old) | set(new)):
            found.extend(_differences(old.get(name), new.get(name), f"{prefix}{name}."))
        return found
    # JSON turns tuples into lists: compare the JSON forms
    return [] if json.dumps(old) == json.dumps(new) else [(prefix.rstrip("."), old, new)]
