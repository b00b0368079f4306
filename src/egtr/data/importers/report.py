"""The import report: counts per split, and every dropped or skipped record with its file, record, field and reason.

`OUT/import_report.json` holds the counts; `OUT/import_problems.jsonl` one line per dropped or skipped record with
the source record itself, so that nothing disappears silently (`kind` "dropped"), and one per record that was kept
but changed or set aside where the report can name it (`kind` "note": e.g. an older annotation of a task, not used;
`kind` "warning": kept as given, but probably not what was meant, e.g. a two-way "left of"). A streaming importer
passes a `RecordRef` instead of the record: the line is written at once and the record filled in when the report is
closed.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from egtr.data.importers.streaming import RecordRef, resolve

REPORT_NAME = "import_report.json"
PROBLEMS_NAME = "import_problems.jsonl"

# Reasons, one per kind of drop (the keys of `ImportReport.dropped`).
ZERO_SIZE_BOX = "zero-size box"
CROWD_BOX = "crowd box"
RELATION_TO_MISSING_OBJECT = "relation to a missing object"
RELATION_TO_DROPPED_OBJECT = "relation to a dropped object"
DUPLICATE_TRIPLET = "duplicate triplet"
IMAGE_WITHOUT_RELATIONS = "image without relations"
IMAGE_FILE_NOT_FOUND = "image file not found"
UNREADABLE_IMAGE = "unreadable image"
DUPLICATE_IMAGE = "duplicate image"
BAD_RECORD = "malformed record"
UNKNOWN_CLASS = "unknown class"
UNKNOWN_PREDICATE = "unknown predicate"
RARE_CLASS = "rare class"
RARE_PREDICATE = "rare predicate"


@dataclass(frozen=True)
class ImportProblem:
    """One dropped or skipped record (`kind` "dropped"), or one named by a note or a warning."""

    reason: str
    file: str
    record: str
    field: str
    detail: str
    kind: str = "dropped"

    def __str__(self) -> str:
        where = (
            self.file + (f", {self.record}" if self.record else "") + (f", field {self.field}" if self.field else "")
        )
        prefix = "" if self.kind == "dropped" else f"{self.kind}: "
        return f"{prefix}{where}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


class ImportReport:
    """Collects counts and problems; problems stream to `problems_path` as they come (an import may drop many)."""

    def __init__(self, problems_path: Path, shown: int = 20) -> None:
        self.problems_path = problems_path
        self._handle: IO[str] | None = open(problems_path, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.dropped: Counter[str] = Counter()
        self.notes: Counter[str] = Counter()  # conversions that keep the record (e.g. a rotated rectangle)
        self.warnings: Counter[str] = Counter()  # records kept as given that were probably not meant that way
        self.splits: dict[str, Counter[str]] = {}
        self.first_problems: list[ImportProblem] = []
        self._shown = shown
        self._lines = 0
        self._pending: dict[int, RecordRef] = {}  # line number -> the record to quote there

    def drop(self, reason: str, file: Path | str, record: str, field: str = "", detail: str = "", raw: Any = None):
        """Record one dropped record (`raw`: the source record or a `RecordRef` to it, for the problems file)."""
        self.dropped[reason] += 1
        self._list(ImportProblem(reason, str(file), record, field, detail), raw)

    def note(
        self, what: str, file: Path | str | None = None, record: str = "", detail: str = "", raw: Any = None
    ) -> None:
        """Count one conversion `what`; with `file` and `record`, also list the record it concerns (and `raw`)."""
        self.notes[what] += 1
        if file is not None:
            self._list(ImportProblem(what, str(file), record, "", detail, "note"), raw)

    def warn(self, what: str, file: Path | str, record: str, detail: str = "", raw: Any = None) -> None:
        """Count and list one record kept as given that was probably not meant that way."""
        self.warnings[what] += 1
        self._list(ImportProblem(what, str(file), record, "", detail, "warning"), raw)

    def _list(self, problem: ImportProblem, raw: Any) -> None:
        """One line of the problems file (the first ones are also printed)."""
        if len(self.first_problems) < self._shown:
            self.first_problems.append(problem)
        if self._handle is not None:
            if isinstance(raw, RecordRef):
                self._pending[self._lines] = raw
                raw = None
            line = {**problem.__dict__, "source": raw}
            self._handle.write(json.dumps(line, default=str, ensure_ascii=False) + "\n")
            self._lines += 1

    def count(self, split: str, images: int, objects: int, relations: int) -> None:
        counts = self.splits.setdefault(split, Counter())
        counts.update({"images": images, "objects": objects, "relations": relations})

    @property
    def num_dropped(self) -> int:
        return sum(self.dropped.values())

    def close(self, quote_records: bool = True) -> None:
        """Close the problems file; `quote_records`: first fill in the records given as `RecordRef`s."""
        if self._handle is None:
            return
        self._handle.close()
        self._handle = None
        if quote_records and self._pending:
            self._quote_pending()

    def _quote_pending(self) -> None:
        records = resolve(self._pending.values())
        filled = self.problems_path.with_name(self.problems_path.name + ".filled")
        with open(self.problems_path, encoding="utf-8") as lines, open(filled, "w", encoding="utf-8") as out:
            for number, line in enumerate(lines):
                if number in self._pending:
                    problem = json.loads(line)
                    problem["source"] = records.get(self._pending[number])
                    line = json.dumps(problem, default=str, ensure_ascii=False) + "\n"
                out.write(line)
        filled.replace(self.problems_path)
        self._pending.clear()

    def to_dict(self) -> dict[str, Any]:
        return {
            "splits": {split: dict(self.splits[split]) for split in sorted(self.splits)},
            "dropped": dict(sorted(self.dropped.items())),
            "notes": dict(sorted(self.notes.items())),
            "warnings": dict(sorted(self.warnings.items())),
            "problems_file": PROBLEMS_NAME,
        }

    def format(self) -> str:
        """The lines the CLI prints: counts per split, drops by reason, the first problems."""
        lines = []
        for split in ("train", "val", "test"):
            counts = self.splits.get(split, Counter())
            lines.append(
                f"{split}: {counts['images']} images, {counts['objects']} objects, {counts['relations']} relations"
            )
        for reason, count in sorted(self.dropped.items()):
            lines.append(f"dropped: {count} x {reason}")
        for what, count in sorted(self.notes.items()):
            lines.append(f"note: {count} x {what}")
        for what, count in sorted(self.warnings.items()):
            lines.append(f"warning: {count} x {what}")
        for problem in self.first_problems:
            lines.append(f"  {problem}")
        if self._lines > len(self.first_problems):
            lines.append(f"  ... {self._lines - len(self.first_problems)} more in {PROBLEMS_NAME}")
        return "\n".join(lines)
