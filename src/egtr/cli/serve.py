"""`egtr serve`: scene graphs over HTTP, a JSON API and a web page, micro-batched (docs/serving.md)."""

from __future__ import annotations

import argparse
import os

from egtr.cli.options import (
    Subparsers,
    add_device,
    add_dtype,
    add_max_pixels,
    add_model,
    add_prediction_options,
    add_runtime,
    add_sizes,
    load_predictor,
    positive_int,
)
from egtr.extras import require_extra
from egtr.preprocessing import PAPER_LONGEST_EDGE, PAPER_SHORTEST_EDGE


def add_command(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "serve",
        parents=[common],
        help="scene graphs over HTTP (JSON API + web page at /), micro-batched; see docs/serving.md",
        description="Serve a model: POST /v1/scene-graphs (the JSON of `egtr predict`), POST "
        "/v1/scene-graphs/drawing, GET /v1/model, /v1/schema, /healthz, /readyz and a web page at /. One process "
        "holds one model and batches requests that arrive together; run several behind a proxy for more.",
    )
    add_model(parser)
    add_runtime(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    add_prediction_options(parser)
    add_sizes(parser, PAPER_SHORTEST_EDGE, PAPER_LONGEST_EDGE, "the paper's evaluation")
    add_device(parser)
    add_dtype(parser)
    parser.add_argument(
        "--max-batch",
        type=positive_int,
        default=None,
        help="images per forward pass at most (default: 8 on a GPU, 1 on a CPU)",
    )
    parser.add_argument("--max-wait-ms", type=float, default=10.0, help="wait for a batch to fill (default 10 ms)")
    parser.add_argument("--max-queue", type=positive_int, default=32, help="images waiting; beyond: 503 (default 32)")
    parser.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body in MiB (default 20)")
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        help="seconds for a request body to arrive in full; beyond: 408 (default 30; stalled uploads)",
    )
    add_max_pixels(parser, "refuse (413)")
    parser.add_argument("--decode-workers", type=positive_int, default=2, help="threads decoding uploads (default 2)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("EGTR_API_KEY"),
        help="require 'Authorization: Bearer KEY' on /v1 (default: $EGTR_API_KEY; prefer it, a command line is "
        "visible to other users)",
    )
    parser.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without an API key")
    parser.add_argument(
        "--cors-origin",
        "--cors-origins",
        action="append",
        default=[],
        help="allow browser pages of this origin (https://app.example.org) to call the API; repeat or separate "
        "with commas. Pages of other origins are refused (403)",
    )
    parser.add_argument(
        "--allowed-hosts",
        action="append",
        default=[],
        help="Host names answered besides --host (and localhost, 127.0.0.1, [::1] on loopback): a proxy's or DNS "
        "name, '*.example.org', '*' for any; repeat or separate with commas. Other Hosts are refused (400)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    require_extra("serve", "egtr serve")  # before the model loads
    from egtr.serve.server import bind_socket, check_bind_address, serve
    from egtr.serve.settings import ServeSettings

    check_bind_address(args.host, args.api_key, args.insecure)  # before the model loads
    settings = ServeSettings(
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        body_timeout_s=args.body_timeout,
        max_pixels=args.max_pixels,
        decode_workers=args.decode_workers,
        api_key=args.api_key,
        cors_origins=comma_separated(args.cors_origin),
        host=args.host,
        allowed_hosts=comma_separated(args.allowed_hosts),
        model_name=str(args.model),
    )
    with bind_socket(args.host, args.port) as listening:  # before the model loads: a bad or busy port fails at once
        predictor = load_predictor(args)
        serve(predictor, settings, args.host, args.port, insecure=args.insecure, sock=listening)
    return 0


def comma_separated(values: list[str]) -> tuple[str, ...]:
    """`--option a,b --option c` -> ("a", "b", "c")."""
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())
