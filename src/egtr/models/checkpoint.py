"""The one reader of every model layout egtr knows, and the writer of ours (reference §2.8).

`read_checkpoint(path)` resolves any of these to a `Checkpoint` (config, state dict, preprocessing, provenance),
reading each file once (the weights' SHA-256 is computed from the same bytes that are parsed):

| layout                | what `path` is                                                                     |
|-----------------------|------------------------------------------------------------------------------------|
| `egtr-directory`      | ours: `config.json` (key `egtr_config`) + `model.safetensors` (+ preprocessor file) |
| `official-artifact`   | the released EGTR artifact: HF-style `config.json` + `checkpoints/epoch=EE-*.ckpt`  |
|                       | (Lightning 1.6, keys prefixed `model.`, float16); the largest epoch is the best one |
| `checkpoint-file`     | one `.ckpt` of either kind: ours carry their model config inside                   |
|                       | (`egtr_model_config`), official ones find `config.json` next to them or one up      |
| `training-pass`       | an `egtr train` pass folder (`main/`, `finetune/`): config + its best checkpoint   |
| `training-run`        | an `egtr train` run folder (`summary.json` + `model/`): its exported final model    |

The released pre-trained detector (`config.json` + `pytorch_model.bin`, no relation head) is no EGTR model: it is
refused with a message that says so, and `egtr.training.initialization` reads it to initialise training.

Pickled files are only read with `torch.load(weights_only=True)`, so reading never runs code from the file and
never needs Lightning installed.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_model
from torch import nn

from egtr.config import EGTRConfig
from egtr.errors import CheckpointError
from egtr.fileio import atomic_write, write_json
from egtr.models.hub import resolve_model_path
from egtr.preprocessing import PreprocessorConfig, load_preprocessor_config

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
DETECTOR_WEIGHTS_NAME = "pytorch_model.bin"
RUN_SUMMARY_NAME = "summary.json"
RUN_MODEL_DIR = "model"
# The state dict entries of the relation head and of the class-dependent frequency tables: what a detector
# checkpoint lacks and what detector initialisation leaves as initialised.
RELATION_HEAD_PREFIXES = (
    "proj_q.",
    "proj_k.",
    "final_sub_proj.",
    "final_obj_proj.",
    "rel_predictor_gate.",
    "rel_predictor.",
    "connectivity_layer.",
    "triplet_dist",
    "rel_dist",
)
StateDict = dict[str, torch.Tensor]


@dataclass
class LoadReport:
    """What a non-strict load did: keys loaded, keys the file lacked, keys it had extra, shapes that did not fit."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"loaded {len(self.loaded)} tensors; new (not in file) {len(self.missing)}; "
            f"ignored (not in model) {len(self.unexpected)}; shape mismatch {len(self.mismatched)}"
        )


@dataclass
class Checkpoint:
    """A model as read from disk: everything needed to build it and to say where it came from."""

    config: EGTRConfig
    state_dict: StateDict
    weights_file: Path
    weights_sha256: str
    layout: str  # see the module docstring's table
    source: Path  # the path the user gave
    preprocessor: PreprocessorConfig | None = None  # recorded preprocessing; None: the paper's (official artifacts)

    def provenance(self) -> dict[str, str]:
        """JSON-ready description for reports, manifests and the service's /v1/model."""
        return {
            "model": str(self.source),
            "layout": self.layout,
            "weights_file": str(self.weights_file),
            "weights_sha256": self.weights_sha256,
        }


# ---------------------------------------------------------------------- reading one weights file
def _parse_weights(path: Path, data: bytes) -> tuple[StateDict, dict[str, object]]:
    """(state dict, the rest of the payload) of a `.safetensors`, Lightning `.ckpt` or `.bin`/`.pth`/`.pt` file."""
    if path.suffix == ".safetensors":
        try:
            return load_safetensors_bytes(data), {}
        except Exception as error:  # safetensors raises its own SafetensorError for any malformed header
            raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from error
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors, truncated files, code-carrying pickles refused by weights_only
        raise CheckpointError(f"{path}: {_why_unreadable(data, error)}") from error
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: holds a {type(payload).__name__}, not a state dict")
    if isinstance(payload.get("state_dict"), dict):
        state_dict = payload["state_dict"]
        # Lightning stores the wrapped module under the attribute `model`: strip that first prefix.
        if state_dict and all(key.startswith("model.") for key in state_dict):
            state_dict = {key[len("model.") :]: value for key, value in state_dict.items()}
        extra = {key: value for key, value in payload.items() if key != "state_dict"}
    elif isinstance(payload.get("model"), dict):
        state_dict, extra = payload["model"], {}  # DETR/torchvision-style {"model": state_dict}
    else:
        state_dict, extra = payload, {}
    return state_dict, extra


# Files people pass as a model by mistake, by their first bytes.
_FILE_SIGNATURES = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
)


def _why_unreadable(data: bytes, error: Exception) -> str:
    """What a file that `torch.load(weights_only=True)` refused is, in words.

    PyTorch's own message advises `weights_only=False`, i.e. running code from the file: egtr never does that, so
    the message must not suggest it (issue #23).
    """
    kind = next((name for signature, name in _FILE_SIGNATURES if data.startswith(signature)), None)
    if kind is not None:
        return f"{kind}, not a model checkpoint"
    text = str(error)
    if "GLOBAL" in text or data.startswith(b"\x80"):  # a pickle (protocol 2+) weights_only refused to run
        return "a pickle that needs code execution to load; egtr only reads weights_only pickles"
    # Keep PyTorch's diagnosis, never its advice to load with weights_only=False.
    detail = text.split("WeightsUnpickler error:")[-1].split("Check the documentation")[0]
    detail = " ".join(detail.split())
    if "weights_only" in detail:
        detail = ""
    return f"not a PyTorch checkpoint ({type(error).__name__}: {detail})" if detail else "not a PyTorch checkpoint"


def _read_weights(path: Path) -> tuple[StateDict, dict[str, object], str]:
    """Read a weights file once: (state dict with floats upcast to float32, other payload entries, SHA-256)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"{path}: cannot be read ({error.strerror or error})") from error
    state_dict, extra = _parse_weights(path, data)
    if not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
        raise CheckpointError(f"{path}: not every entry is a tensor; is this a state dict?")
    # The released checkpoints store float16 values that are exactly the float32 weights.
    upcast = {key: value.float() if value.is_floating_point() else value for key, value in state_dict.items()}
    return upcast, extra, hashlib.sha256(data).hexdigest()


def state_dict_sha256(model: nn.Module) -> str:
    """SHA-256 over the model's state dict (names, dtypes, shapes and bytes, in order), for a model that came from
    no file: the same number whichever dtype its tensors are in memory as bytes (bfloat16 included) and whichever
    layout the weights were loaded from (an official .ckpt in float16 gives the float32 model's). A model read from a
    file is identified by the file's SHA-256 instead (`Checkpoint.weights_sha256`)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_state_dict(path: str | Path) -> StateDict:
    """The state dict of one weights file (`.safetensors`, Lightning `.ckpt`, `.bin`/`.pth`/`.pt`)."""
    return _read_weights(Path(path))[0]


def describe_state_dict(state_dict: StateDict) -> str:
    """A one-line guess of what a state dict is, for error messages."""
    keys = list(state_dict)
    has_relation_head = any(key.startswith(("proj_q.", "rel_predictor.")) for key in keys)
    has_detector = any(key.startswith("model.encoder.") for key in keys)
    if has_detector and not has_relation_head:
        return "a Deformable DETR detector checkpoint without EGTR's relation head (e.g. the released pre-trained DETR)"
    if has_detector and has_relation_head:
        return "an EGTR checkpoint"
    if any(key.startswith(("layer1.", "conv1.")) for key in keys):
        return "a bare ResNet (ImageNet backbone) checkpoint"
    if any("transformer." in key for key in keys):
        return "a checkpoint of another DETR implementation (keys like 'transformer.*')"
    return f"an unknown state dict ({len(keys)} tensors, first key {keys[0]!r})" if keys else "an empty state dict"


# ---------------------------------------------------------------------- resolving layouts
def _best_checkpoint_in(directory: Path) -> Path:
    """The best `.ckpt` of `directory/checkpoints`: the largest epoch (ModelCheckpoint keeps the best + last)."""
    candidates = sorted((directory / "checkpoints").glob("*.ckpt"))
    by_epoch = [(int(match.group(1)), path) for path in candidates if (match := re.search(r"epoch=(\d+)", path.name))]
    if by_epoch:
        return max(by_epoch)[1]
    if candidates:
        return candidates[-1]
    raise CheckpointError(f"{directory}: has a config.json but no checkpoints/*.ckpt")


def _config_next_to(weights_file: Path) -> Path | None:
    """The `config.json` of a single checkpoint file: next to it, or one folder up (`checkpoints/*.ckpt`)."""
    candidates = [weights_file.parent / CONFIG_NAME, weights_file.parent.parent / CONFIG_NAME]
    return next((candidate for candidate in candidates if candidate.is_file()), None)


def _read_config(path: Path) -> EGTRConfig:
    try:
        return EGTRConfig.from_json(path).with_dataset_names()
    except CheckpointError:
        raise
    except ValueError as error:
        raise CheckpointError(str(error) if str(path) in str(error) else f"{path}: {error}") from error


def is_training_run(path: Path) -> bool:
    """An `egtr train` / `egtr pretrain-detector` run folder (it stands for its exported `model/`)."""
    return path.is_dir() and (path / RUN_SUMMARY_NAME).is_file() and (path / RUN_MODEL_DIR / CONFIG_NAME).is_file()


def read_checkpoint(path: str | Path, revision: str | None = None) -> Checkpoint:
    """Read a model in any layout of the module docstring, or by name from the Hugging Face Hub (`org/name`,
    `hf://org/name`, at `revision`: see `egtr.models.hub`; an existing local path wins).

    Raises:
        FileNotFoundError: `path` does not exist.
        CheckpointError: anything else that is not a readable EGTR model; the message says what the path looks like.
        HubError: a model name the Hub or its cache cannot provide.
    """
    source = resolve_model_path(path, revision)
    _check_exists(source)
    if source.is_file():
        return _read_checkpoint_file(source, source)
    if is_training_run(source):
        logger.info("%s is a training run: loading its exported model %s/", source, RUN_MODEL_DIR)
        return _read_directory(source / RUN_MODEL_DIR, source, "training-run")
    return _read_directory(source, source, None)


def _check_exists(source: Path) -> None:
    """`Path.exists()` is False for a symlink loop and a dangling link alike: both were "no such file"."""
    try:
        os.stat(source)
    except FileNotFoundError:
        if source.is_symlink():
            raise FileNotFoundError(f"{source}: a symlink to {os.readlink(source)}, which does not exist") from None
        raise FileNotFoundError(f"{source}: no such file or directory") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise CheckpointError(f"{source}: symlink loop (following its links never reaches a file)") from None
        raise CheckpointError(f"{source}: cannot be read ({error.strerror or error})") from error


def _read_directory(directory: Path, source: Path, layout: str | None) -> Checkpoint:
    if not (directory / CONFIG_NAME).is_file():
        raise CheckpointError(
            f"{directory}: not a model directory: no {CONFIG_NAME} (expected an egtr model directory, an official "
            "EGTR artifact, a .ckpt file or an `egtr train` run)"
        )
    config = _read_config(directory / CONFIG_NAME)  # a malformed config.json fails before any weights are read
    if (directory / WEIGHTS_NAME).is_file():
        weights = directory / WEIGHTS_NAME
    elif (directory / "checkpoints").is_dir():
        weights = _best_checkpoint_in(directory)
    elif (directory / DETECTOR_WEIGHTS_NAME).is_file():
        raise CheckpointError(
            f"{directory}: this is a pre-trained detector (config.json + pytorch_model.bin, no relation head), not an "
            "EGTR model. Use it to initialise relation training (`egtr train --detector-weights`), or load the "
            "EGTR artifact (config.json + checkpoints/*.ckpt)."
        )
    elif (directory / "export.json").is_file():
        raise CheckpointError(
            f"{directory}: an `egtr export` folder (a graph for ONNX Runtime / OpenVINO, no PyTorch weights): "
            "predict, serve, evaluate and benchmark run it; training and `egtr info` need the original model"
        )
    else:
        raise CheckpointError(f"{directory}: config.json found but no model.safetensors or checkpoints/*.ckpt")
    checkpoint, config_inside = _read_weights_with_config(weights, source, config)
    if layout is None and weights.name == WEIGHTS_NAME:
        layout = "egtr-directory"
    elif layout is None:
        layout = "training-pass" if config_inside else "official-artifact"
    checkpoint.layout = layout
    return checkpoint


def _read_checkpoint_file(weights: Path, source: Path) -> Checkpoint:
    return _read_weights_with_config(weights, source)[0]


def _read_weights_with_config(weights: Path, source: Path, config: EGTRConfig | None = None) -> tuple[Checkpoint, bool]:
    """The checkpoint of one weights file, and whether its model config came from inside the file (else `config`,
    else the `config.json` next to the file or one folder up)."""
    if weights.name == CONFIG_NAME:
        raise CheckpointError(
            f"{weights}: this is the model's configuration, not its weights; pass the folder that holds it"
        )
    state_dict, extra, digest = _read_weights(weights)
    config_path = _config_next_to(weights)
    embedded = extra.get("egtr_model_config")
    if isinstance(embedded, dict):  # one of our Lightning checkpoints: the config travels inside
        try:
            config = EGTRConfig.from_dict(embedded).with_dataset_names()
        except ValueError as error:
            raise CheckpointError(f"{weights}: its egtr_model_config is invalid ({error})") from error
    elif config is None and config_path is not None:
        config = _read_config(config_path)
    elif config is None:
        raise CheckpointError(
            f"{weights}: no {CONFIG_NAME} next to it or one folder up, and no model config inside "
            f"(it looks like {describe_state_dict(state_dict)})"
        )
    model_dir = config_path.parent if config_path is not None else None
    preprocessor = load_preprocessor_config(model_dir)
    checkpoint = Checkpoint(config, state_dict, weights, digest, "checkpoint-file", source, preprocessor)
    return checkpoint, isinstance(embedded, dict)


# ---------------------------------------------------------------------- strict checks and loading
def _aliases(model: nn.Module) -> dict[str, set[str]]:
    """For each state dict key, the other keys naming the same tensor (the shared detection heads are listed once
    per decoder layer, `class_embed.0..L-1`; safetensors files keep one copy)."""
    by_storage: dict[int, set[str]] = {}
    state = model.state_dict(keep_vars=True)
    for key, value in state.items():
        by_storage.setdefault(value.data_ptr(), set()).add(key)
    return {key: by_storage[value.data_ptr()] - {key} for key, value in state.items()}


def unaliased_missing(model: nn.Module, state_dict: StateDict, missing: list[str]) -> list[str]:
    """The keys of `missing` that are not another name of a tensor `state_dict` provides."""
    aliases = _aliases(model)
    return [key for key in missing if not any(alias in state_dict for alias in aliases.get(key, ()))]


def check_state_dict(model: nn.Module, state_dict: StateDict, source: str) -> None:
    """Strict key and shape check; raises CheckpointError listing missing, unexpected and mismatched keys."""
    expected = model.state_dict()
    missing = unaliased_missing(model, state_dict, [key for key in expected if key not in state_dict])
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [
        f"{key}: file {tuple(state_dict[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in state_dict and state_dict[key].shape != expected[key].shape
    ]
    if missing or unexpected or mismatched:
        # One line (the command line prints one): the shapes first, since they say which sizes differ.
        listings = [
            _listing(title, items)
            for title, items in (
                ("shape mismatches", mismatched),
                ("missing keys", missing),
                ("unexpected keys", unexpected),
            )
            if items
        ]
        raise CheckpointError(
            f"{source} does not fit the EGTR model (it looks like {describe_state_dict(state_dict)}): "
            + "; ".join(listings)
        )


def _listing(title: str, items: list[str], shown: int = 8) -> str:
    """`title (N): a, b, ... and K more`: a long list is cut after `shown` entries, with its count."""
    rest = f", ... and {len(items) - shown} more" if len(items) > shown else ""
    return f"{title} ({len(items)}): " + ", ".join(items[:shown]) + rest


def load_state_dict_strictly(model: nn.Module, state_dict: StateDict, source: str) -> None:
    """Check, then load every tensor (aliased names are filled through the name the file kept)."""
    check_state_dict(model, state_dict, source)
    model.load_state_dict(state_dict, strict=False)


def load_weights_non_strict(model: nn.Module, state_dict: StateDict) -> LoadReport:
    """Load every tensor whose key and shape fit; report the rest. Used for detector and backbone initialisation."""
    own = model.state_dict()
    report = LoadReport()
    fitting = {}
    for key, value in state_dict.items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.mismatched.append(f"{key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}")
        else:
            fitting[key] = value
            report.loaded.append(key)
    report.missing = [key for key in own if key not in state_dict]
    model.load_state_dict(fitting, strict=False)
    return report


# ---------------------------------------------------------------------- writing our layout
def save_model_directory(
    model: nn.Module, config: EGTRConfig, directory: str | Path, preprocessor: PreprocessorConfig
) -> Path:
    """Write `model.safetensors`, `preprocessor_config.json` and `config.json`, each atomically.

    Shared head copies are stored once. `config.json` is written last, so its presence means the directory is
    complete. The preprocessing is always written: a model reloaded from the directory prepares images as before.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / WEIGHTS_NAME, lambda temporary: save_model(model, str(temporary)))
    preprocessor.save(directory)
    write_json(directory / CONFIG_NAME, {"egtr_config": config.to_dict()})
    return directory
