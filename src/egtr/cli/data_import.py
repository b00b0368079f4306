"""`egtr data import FORMAT SRC --out OUT` and `egtr data export coco-relations` (docs/own-data.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from egtr.cli.options import Subparsers, add_data_root, check_out, data_root_of, positive_int


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def add_commands(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    from egtr.data.importers import FORMATS

    parser = commands.add_parser(
        "import",
        parents=[common],
        help="convert a dataset annotated in another tool into the native layout (with an import report)",
        description="Import a scene-graph dataset into the native (RelTR) layout. Images are copied (or linked "
        "with --link), never moved. Every dropped record is counted in OUT/import_report.json and listed in "
        "OUT/import_problems.jsonl. Exit code: 0 if nothing was dropped, 1 if something was, 2 for a bad file.",
    )
    parser.add_argument("format", choices=FORMATS, help="source format")
    parser.add_argument("source", help="annotation file, or folder of per-split files")
    parser.add_argument("--out", required=True, help="dataset folder to create")
    parser.add_argument("--images", default=None, help="folder the image names are resolved against")
    parser.add_argument("--link", action="store_true", help="symlink the images instead of copying them")
    parser.add_argument("--val-fraction", type=_fraction, default=0.1, help="share drawn for val if none")
    parser.add_argument("--test-fraction", type=_fraction, default=0.1, help="share drawn for test if none")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split draw (by image)")
    parser.add_argument("--keep-images-without-relations", action="store_true", help="do not drop them")
    parser.add_argument("--min-count", type=positive_int, default=1, help="gqa: keep names used at least this often")
    parser.add_argument("--max-classes", type=positive_int, default=None, help="gqa: keep the N most frequent classes")
    parser.add_argument("--max-predicates", type=positive_int, default=None, help="gqa: the N most frequent predicates")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    parser.set_defaults(run=run_import)

    export = commands.add_parser(
        "export", parents=[common], help="write a native dataset in another layout (coco-relations)"
    )
    export.add_argument("format", choices=("coco-relations",))
    add_data_root(export, required=True)
    export.add_argument("--out", required=True, help="folder for {train,val,test}/_annotations.coco.json")
    export.add_argument("--overwrite", action="store_true", help="replace existing files")
    export.set_defaults(run=run_export)


def run_import(args: argparse.Namespace) -> int:
    from egtr.data.importers import ImportOptions, import_dataset

    check_out(args.out, "new-folder")

    options = ImportOptions(
        images=Path(args.images) if args.images else None,
        link=args.link,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        keep_images_without_relations=args.keep_images_without_relations,
        min_count=args.min_count,
        max_classes=args.max_classes,
        max_predicates=args.max_predicates,
        overwrite=args.overwrite,
    ).validate()
    report = import_dataset(args.format, args.source, args.out, options)
    print(report.format())
    print(f"dataset written to {args.out} (report: {Path(args.out) / 'import_report.json'})")
    return 1 if report.num_dropped else 0


def run_export(args: argparse.Namespace) -> int:
    from egtr.data.importers.export import export_coco_relations

    check_out(args.out)

    files = export_coco_relations(str(data_root_of(args)), args.out, overwrite=args.overwrite)
    print("written: " + ", ".join(str(path) for path in files))
    return 0
