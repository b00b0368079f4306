"""`egtr data import FORMAT SRC --out OUT`: datasets annotated in other tools, written in the native layout.

One module per format reads its files into `SourceImage`s (`records`); `writer.NativeWriter` does everything that
is the same for every format and writes the dataset, and `report.ImportReport` counts and lists every drop. The
formats and their pitfalls are documented in docs/own-data.md and in each module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from egtr.data.importers.coco_relations import read_coco_relations
from egtr.data.importers.gqa import read_gqa
from egtr.data.importers.label_studio import read_label_studio
from egtr.data.importers.psg import read_psg
from egtr.data.importers.records import ImportOptions, SourceDataset
from egtr.data.importers.report import ImportReport
from egtr.data.importers.writer import NativeWriter

READERS: dict[str, Callable[[Path, ImportOptions], SourceDataset]] = {
    "coco-relations": read_coco_relations,
    "label-studio": read_label_studio,
    "psg": read_psg,
    "gqa": read_gqa,
}
FORMATS = tuple(READERS)


def import_dataset(format_name: str, source: str | Path, out: str | Path, options: ImportOptions) -> ImportReport:
    """Import `source` (a file or folder of `format_name`) into the native layout at `out`.

    Returns:
        The report (counts per split, drops by reason); `OUT/import_report.json` and `OUT/import_problems.jsonl`
        hold the same and every dropped record.

    Raises:
        DataError: a malformed source file (named, with the field), no image left for a split, or `out` exists
            and is not empty without `options.overwrite`.
        FileNotFoundError: `source` does not exist.
    """
    if format_name not in READERS:
        raise ValueError(f"unknown format {format_name!r}; expected one of {FORMATS}")
    source, out = Path(source), Path(out)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or directory")
    dataset = READERS[format_name](source, options)
    description = {"format": format_name, "source": str(source), "images_folder": str(options.images or "")}
    with NativeWriter(out, options, dataset.given_splits, description) as writer:
        for image in dataset.images(writer.report):
            writer.add(image)
        return writer.finish(dataset.class_names, dataset.predicate_names)


__all__ = ["FORMATS", "ImportOptions", "ImportReport", "import_dataset"]
