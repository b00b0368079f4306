"""A model as a Hugging Face Hub repository: the folder (`write_hub_folder`), its card, and the upload.

The folder holds what `EGTR.from_pretrained("org/name")` reads back (`egtr.models.hub`): `config.json` (the
architecture and the class and predicate names), `model.safetensors`, `preprocessor_config.json`, plus `README.md`,
a model card written from them and from the model's evaluation reports when there are any (`evaluation_*.json` of
an `egtr train` run, or a report of `egtr evaluate` passed in). `egtr convert` writes such a folder from any layout
`read_checkpoint` knows (the released artifacts included); `push_to_hub` / `egtr hub push` / `EGTR.push_to_hub`
write it to a temporary folder and upload it with `huggingface_hub.HfApi.upload_folder`.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from egtr.errors import CheckpointError, HubError
from egtr.extras import require_extra
from egtr.models.checkpoint import RUN_MODEL_DIR, RUN_SUMMARY_NAME
from egtr.version import __version__

if TYPE_CHECKING:  # EGTR.push_to_hub calls this module: no import back at run time
    from egtr.models.egtr import EGTR

logger = logging.getLogger(__name__)

CARD_NAME = "README.md"
# egtr's license and that of the original code (naver-ai/egtr); models under other terms pass theirs.
DEFAULT_LICENSE = "apache-2.0"


@dataclass
class EvaluationSummary:
    """The headline numbers of one evaluation report (`EvaluationReport.save_json`) and what they were measured on."""

    source: str  # the report's file name
    metrics: dict[str, float]  # `<group>/<metric>` names only (the original's duplicate keys left out)
    dataset: str  # "vg test (100 images)"

    @classmethod
    def read(cls, path: Path) -> EvaluationSummary:
        try:
            report = json.loads(path.read_text())
            metrics = {k: v for k, v in report["metrics"].items() if "/" in k and isinstance(v, (int, float))}
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as error:
            raise CheckpointError(f"{path}: not an evaluation report of egtr ({error})") from error
        dataset = report.get("settings", {}).get("dataset") or {}
        described = f"{dataset.get('kind', '?')} {dataset.get('split', '?')} ({dataset.get('num_images', '?')} images)"
        return cls(path.name, metrics, described)


def find_evaluation_reports(model_path: Path) -> list[Path]:
    """The evaluation reports that travel with a model: `evaluation_*.json` of its training run (the run folder
    itself, or the run around its exported `model/`) and of the model folder."""
    run = model_path.parent if model_path.name == RUN_MODEL_DIR else model_path
    folders = [run] if (run / RUN_SUMMARY_NAME).is_file() else []
    folders += [model_path] if model_path.is_dir() and model_path not in folders else []
    return sorted(path for folder in folders for path in folder.glob("evaluation_*.json"))


def write_hub_folder(
    network: EGTR,
    folder: str | Path,
    *,
    repo_id: str | None = None,
    evaluations: Sequence[str | Path] = (),
    dtype: torch.dtype | None = None,
    license: str = DEFAULT_LICENSE,
) -> Path:
    """Write `network` (e.g. `EGTR.from_pretrained` of any layout) as a Hub-ready folder with its card.

    `evaluations`: reports to quote besides those found with the model it was loaded from; `dtype`: store the
    weights in this precision (e.g. torch.float16, half the size; they load back as float32); `repo_id`: the name
    the card's examples use.
    """
    reports = [Path(path) for path in evaluations]
    if network.source is not None:
        reports += [path for path in find_evaluation_reports(network.source) if path not in reports]
    origin = f"`{network.source.name}`" if network.source is not None else "an in-memory EGTR model"
    summaries = [EvaluationSummary.read(path) for path in reports]
    folder = Path(folder)
    stored = network if dtype is None else copy.deepcopy(network).to(dtype)
    stored.save_pretrained(folder, preprocessor=network.preprocessor)
    card = model_card(network, repo_id=repo_id, evaluations=summaries, origin=origin, license=license, dtype=dtype)
    (folder / CARD_NAME).write_text(card, encoding="utf-8")
    return folder


def push_to_hub(
    network: EGTR,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    evaluations: Sequence[str | Path] = (),
    license: str = DEFAULT_LICENSE,
) -> str:
    """Upload `network` with its card to the Hub repository `repo_id` (created if missing); returns the commit's URL.

    Raises:
        MissingExtraError: huggingface_hub is not installed (the hub extra).
        HubError: the Hub refused (no token, no permission, no such branch) or could not be reached.
    """
    require_extra("hub", "pushing a model to the Hugging Face Hub")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    with tempfile.TemporaryDirectory(prefix="egtr-push-") as staging:
        folder = write_hub_folder(network, staging, repo_id=repo_id, evaluations=evaluations, license=license)
        api = HfApi(token=token)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                revision=revision,
                commit_message=commit_message or f"EGTR model (egtr {__version__})",
            )
        except (HfHubHTTPError, OSError) as error:
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise HubError(f"{repo_id}: the upload failed: {first_line}") from error
    return str(getattr(commit, "commit_url", commit))


# ---------------------------------------------------------------------- the model card
def model_card(
    network: EGTR,
    *,
    repo_id: str | None,
    evaluations: Sequence[EvaluationSummary],
    origin: str,
    license: str = DEFAULT_LICENSE,
    dtype: torch.dtype | None = None,
) -> str:
    """The README.md of a Hub repository: metadata, architecture, use, training data, evaluation, names."""
    config = network.config
    name = repo_id or "path/to/this/folder"
    sections = [
        _front_matter(license),
        f'# {repo_id or "EGTR scene graph model"}\n\nA scene graph generation model: EGTR (Im et al., "EGTR: '
        'Extracting Graph from Transformer for Scene Graph Generation", CVPR 2024), in the format of the '
        f"[egtr](https://pypi.org/project/egtr/) library (written by egtr {__version__} from {origin}).",
        _architecture(network, dtype),
        _usage(name),
        _training_data(config.num_labels, config.num_rel_labels, evaluations),
        _evaluation(evaluations),
        _names("Class names", config.class_names or [config.id2label[i] for i in range(config.num_labels)]),
        _names(
            "Predicate names", config.predicate_names or [config.id2predicate[i] for i in range(config.num_rel_labels)]
        ),
        f"## License\n\n{license}.",
    ]
    return "\n\n".join(sections) + "\n"


def _front_matter(license: str) -> str:
    tags = ["scene-graph-generation", "egtr", "deformable-detr", "object-detection", "pytorch"]
    lines = ["---", "library_name: egtr", f"license: {license}", "tags:", *[f"- {tag}" for tag in tags], "---"]
    return "\n".join(lines)


def _architecture(network: EGTR, dtype: torch.dtype | None) -> str:
    config = network.config
    parameters = sum(parameter.numel() for parameter in network.parameters())
    stored = "float32" if dtype is None else str(dtype).removeprefix("torch.")
    rows = [
        ("backbone", config.backbone),
        ("d_model", config.d_model),
        ("encoder / decoder layers", f"{config.encoder_layers} / {config.decoder_layers}"),
        ("object queries", config.num_queries),
        ("classes / predicates", f"{config.num_labels} / {config.num_rel_labels}"),
        ("parameters", f"{parameters:,}"),
        ("weights", f"model.safetensors, {stored} (loaded as float32)"),
    ]
    preprocessing = network.preprocessor
    if preprocessing is not None:
        rows.append(
            ("input size", f"shorter side {preprocessing.shortest_edge}, longer <= {preprocessing.longest_edge}")
        )
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    return f"## Architecture\n\nDeformable DETR with EGTR's relation head.\n\n| | |\n|---|---|\n{table}"


def _usage(name: str) -> str:
    return (
        '## How to use\n\n```bash\npip install "egtr[hub]"\n'
        f"egtr predict photo.jpg --model {name} --out graphs/\n```\n\n"
        "```python\nfrom egtr import Predictor\n\n"
        f'predictor = Predictor.from_pretrained("{name}")\n'
        'graph = predictor("photo.jpg")\nprint(graph.triplets()[:5])\n```'
    )


def _training_data(num_labels: int, num_rel_labels: int, evaluations: Sequence[EvaluationSummary]) -> str:
    from egtr.names import guess_names

    known = {150: "Visual Genome (VG150 split of Neural Motifs)", 601: "Open Images V6"}
    if guess_names(num_labels, num_rel_labels) is not None:
        text = f"{known[num_labels]}: {num_labels} object classes, {num_rel_labels} predicates."
    else:
        text = f"A dataset of {num_labels} object classes and {num_rel_labels} predicates (names below)."
    measured = sorted({summary.dataset for summary in evaluations})
    return "## Training data\n\n" + text + (f" Evaluated on: {', '.join(measured)}." if measured else "")


def _evaluation(evaluations: Sequence[EvaluationSummary]) -> str:
    if not evaluations:
        return "## Evaluation\n\nNo evaluation report came with this model (`egtr evaluate` writes one)."
    blocks = []
    for summary in evaluations:
        rows = "\n".join(f"| {key} | {_number(value)} |" for key, value in sorted(summary.metrics.items()))
        blocks.append(f"{summary.dataset}, from `{summary.source}`:\n\n| metric | value |\n|---|---|\n{rows}")
    return "## Evaluation\n\n" + "\n\n".join(blocks)


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _names(title: str, names: Sequence[str]) -> str:
    return f"## {title} ({len(names)})\n\n" + ", ".join(f"`{name}`" for name in names)
