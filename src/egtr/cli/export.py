"""`egtr export`: a model as a deployable ONNX or OpenVINO folder that every command takes as `--model`."""

from __future__ import annotations

import argparse

from egtr.cli.options import Subparsers, add_model, positive_int


def add_command(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "export",
        parents=[common],
        help="export a model to ONNX or OpenVINO (a folder every command takes as --model; docs/deploy.md)",
        description="Export a model to a folder with the graph (model.onnx, or model.xml + model.bin), config.json, "
        "preprocessor_config.json and export.json. Batch, height and width are dynamic (sides above 64 pixels; "
        "smaller inputs are padded). The export is checked against PyTorch on an input of another size.",
    )
    add_model(parser)
    parser.add_argument("--format", choices=("onnx", "openvino"), default="onnx", help="graph format (default onnx)")
    parser.add_argument("--out", required=True, help="the folder to write (must not exist, or be empty)")
    parser.add_argument("--opset", type=positive_int, default=18, help="ONNX opset, 17 or later (default 18)")
    parser.add_argument("--no-verify", action="store_true", help="skip the check of the exported graph against PyTorch")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from egtr.inference.export import export_model

    exported = export_model(args.model, args.out, format=args.format, opset=args.opset, verify=not args.no_verify)
    manifest = exported.manifest
    verification = manifest.get("verification")
    checked = (
        f"; matches {verification['against']} within {max(verification['max_abs_difference'].values()):.1e} in "
        f"{verification['runtime']}"
        if verification
        else ""
    )
    print(
        f"exported {args.model} to {exported.directory} ({exported.format}, opset {manifest['opset']}, "
        f"{manifest['size_bytes'] / 2**20:.1f} MiB, {manifest['export_seconds']:.0f} s{checked})"
    )
    return 0
