"""`egtr convert` (a model in any layout -> a Hub-ready folder with its card) and `egtr hub push` (upload one).

Both write the folder of `egtr.models.publish.write_hub_folder`: config.json (architecture, class and predicate
names), model.safetensors, preprocessor_config.json and README.md, the model card (docs/hub.md).
"""

from __future__ import annotations

import argparse

from egtr.cli.options import Subparsers, check_out
from egtr.errors import OutputError
from egtr.extras import require_extra

# What `--dtype` of `egtr convert` stores (the weights load back as float32 whatever their stored precision).
_STORED_DTYPES = ("float32", "float16", "bfloat16")


def add_command(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    convert = subparsers.add_parser(
        "convert",
        parents=[common],
        help="write a model (the released artifact, any layout) as a Hub-ready folder with a model card",
        description="Read a model in any layout egtr loads (the released EGTR artifact or one of its .ckpt files, "
        "our folder, an `egtr train` run) and write config.json, model.safetensors, preprocessor_config.json and "
        "a README.md model card: the folder `egtr hub push` uploads and `--model` reads (docs/hub.md).",
    )
    convert.add_argument("model", metavar="MODEL", help="the model to convert (any layout egtr loads)")
    convert.add_argument("--out", required=True, help="the folder to write (must not exist, or be empty)")
    convert.add_argument(
        "--dtype", choices=_STORED_DTYPES, default="float32", help="precision of the stored weights (default float32)"
    )
    _add_card_options(convert)
    convert.add_argument("--repo-id", default=None, help="the Hub name the card's examples use (org/name)")
    convert.set_defaults(run=run_convert)

    hub = subparsers.add_parser("hub", parents=[common], help="the Hugging Face Hub: upload a model (hub extra)")
    commands = hub.add_subparsers(dest="hub_command", required=True, metavar="COMMAND")
    push = commands.add_parser(
        "push",
        parents=[common],
        help="upload a model with a generated model card to a Hub repository (created if missing)",
        description="Upload config.json, model.safetensors, preprocessor_config.json and a generated README.md "
        "model card to the Hugging Face Hub repository REPO_ID. Log in first (hf auth login) or set HF_TOKEN.",
    )
    push.add_argument("model", metavar="MODEL", help="the model to upload (any layout egtr loads)")
    push.add_argument("repo_id", metavar="REPO_ID", help="the Hub repository, org/name")
    push.add_argument("--revision", default=None, help="the branch to commit to (default main)")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--message", default=None, help="the commit message")
    _add_card_options(push)
    push.set_defaults(run=run_push)


def _add_card_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--evaluation",
        action="append",
        default=[],
        metavar="FILE",
        help="an `egtr evaluate` report to quote in the card (repeatable; a run's evaluation_*.json are found)",
    )
    parser.add_argument("--license", default="apache-2.0", help="the card's license (default apache-2.0)")


def run_convert(args: argparse.Namespace) -> int:
    import torch

    from egtr.models import EGTR
    from egtr.models.publish import write_hub_folder

    out = check_out(args.out, "new-folder")
    if out.is_dir() and any(out.iterdir()):
        raise OutputError(f"--out {out}: already exists and is not an empty folder")
    folder = write_hub_folder(
        EGTR.from_pretrained(args.model),
        out,
        repo_id=args.repo_id,
        evaluations=args.evaluation,
        dtype=None if args.dtype == "float32" else getattr(torch, args.dtype),
        license=args.license,
    )
    files = ", ".join(sorted(path.name for path in folder.iterdir()))
    print(f"converted {args.model} to {folder} ({files}); upload it with: egtr hub push {folder} ORG/NAME")
    return 0


def run_push(args: argparse.Namespace) -> int:
    require_extra("hub", "egtr hub push")
    from egtr.models import EGTR
    from egtr.models.publish import push_to_hub

    url = push_to_hub(
        EGTR.from_pretrained(args.model),
        args.repo_id,
        revision=args.revision,
        private=args.private or None,
        commit_message=args.message,
        evaluations=args.evaluation,
        license=args.license,
    )
    print(f"pushed {args.model} to {args.repo_id}: {url}")
    return 0
