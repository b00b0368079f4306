"""Models by name: `org/name` on the Hugging Face Hub, through huggingface_hub and its standard cache.

`resolve_model_path` is the one place a model name becomes a folder; `read_checkpoint` and
`egtr.inference.loading.load_runtime` call it first, so `EGTR.from_pretrained`, `Predictor.from_pretrained` and
every command's `--model` take names:

| `model`                          | what is read                                                          |
|----------------------------------|-----------------------------------------------------------------------|
| an existing file or folder       | itself: a local path always wins                                      |
| `hf://org/name`                  | the Hub repository, even where a local folder `org/name` exists        |
| `org/name` (no such local path)  | the Hub repository                                                    |

A revision (branch, tag or commit) is `revision=` in Python, or `@revision` after the name (`org/name@v1`), which
is how `--model` spells it. Only egtr's files are downloaded (`HUB_FILES`), into huggingface_hub's cache
(`$HF_HOME/hub`, `$HF_HUB_CACHE`); a model already there loads without the network, and with `HF_HUB_OFFLINE=1`
nothing is asked of the network at all. Every failure is a `HubError`: one line naming the model and the cause.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from egtr.errors import HubError
from egtr.extras import require_extra

logger = logging.getLogger(__name__)

HUB_SCHEME = "hf://"
# What a model repository of ours holds: config.json, preprocessor_config.json, model.safetensors, an
# `egtr export` folder's export.json and graph files, and the model card.
HUB_FILES = ["*.json", "*.safetensors", "model.onnx", "model.xml", "model.bin", "README.md"]
# Hugging Face repository ids: one `/`, names of letters, digits, `-`, `_`, `.`; then an optional `@revision`.
_NAME = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>[\w./-]+))?$")


def parse_model_name(model: str | Path) -> tuple[str, str | None] | None:
    """(repo id, revision written after `@`) of a model name, or None when `model` is not one."""
    text = str(model)
    match = _NAME.match(text.removeprefix(HUB_SCHEME))
    return (match["repo"], match["revision"]) if match else None


def resolve_model_path(model: str | Path, revision: str | None = None) -> Path:
    """The local path of `model`: itself when it exists (or is not a name), else the Hub snapshot of the name.

    Raises:
        HubError: the name cannot be provided (unknown, no such revision, not cached while offline, no network).
        MissingExtraError: `model` needs the Hub and huggingface_hub is not installed (the hub extra).
    """
    text = str(model)
    forced = text.startswith(HUB_SCHEME)
    if not forced and (os.path.lexists(text) or (revision is None and parse_model_name(text) is None)):
        return Path(model)
    name = parse_model_name(text)
    if name is None:
        raise HubError(f"{text}: not a Hugging Face model name (hf://org/name or hf://org/name@revision)")
    repo_id, named_revision = name
    if named_revision is not None and revision is not None and named_revision != revision:
        raise HubError(f"{text}: two revisions given ({named_revision} in the name, {revision} as revision)")
    require_extra("hub", text if forced else f"{text}: no such file or folder; loading it by name from the Hub")
    return download_model(repo_id, named_revision or revision)


def hub_offline() -> bool:
    """`HF_HUB_OFFLINE` as huggingface_hub reads it, but read now (huggingface_hub reads it once, at import)."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def download_model(repo_id: str, revision: str | None) -> Path:
    """The cached snapshot of `repo_id` at `revision` (None: main), downloaded first unless offline."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id} (revision {revision})" if revision else repo_id
    offline = hub_offline()
    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=HUB_FILES, local_files_only=offline)
    except RevisionNotFoundError as error:
        raise HubError(f"{repo_id}: the Hugging Face Hub has no revision {revision!r} of it") from error
    except GatedRepoError as error:
        raise HubError(
            f"{repo_id}: a gated repository; accept its terms on the Hub and log in (hf auth login)"
        ) from error
    except RepositoryNotFoundError as error:
        raise HubError(
            f"{repo_id}: no such model on the Hugging Face Hub (or a private one: log in with hf auth login)"
        ) from error
    except LocalEntryNotFoundError as error:
        why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face Hub cannot be reached"
        raise HubError(f"{where}: not in the Hugging Face cache and {why} (cache: {_cache_folder()})") from error
    except HfHubHTTPError as error:
        raise HubError(f"{where}: the Hugging Face Hub answered {_first_line(error)}") from error
    logger.info("%s: %s", where, folder)
    return Path(folder)


def _cache_folder() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
