"""Evaluate an EGTR model on a dataset split, as the original `evaluate_egtr.py` does, and record every setting.

    >>> from egtr.data import DataConfig
    >>> report = evaluate_model("path/to/model", DataConfig(kind="vg", root="data/visual_genome"), "test")
    >>> print(report.format_table()); report.save_json("metrics.json")

Per batch: forward pass (eval mode, no gradients), `egtr.inference.postprocess` into ranked triplets (graph constraint
and, by default, without it for VG; the Open Images candidates for OI) and detections, ground truth from the targets
(`ground_truth_from_target`, the original's float32 rescaling). Then `egtr.metrics.evaluate_predictions`.

The predictions can be saved (`predictions_path`) together with the ground truth used, so that the numbers can be
recomputed later without the model (`egtr evaluate --predictions`), bit for bit.

The options of an evaluation are one typed, frozen `EvaluationSettings`, used by `evaluate_model`,
`run_evaluation` and `egtr evaluate` alike; its fields may also be given one by one as keywords
(`evaluate_model(model, data, "test", top_k=50)`), as in earlier releases.
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from egtr.data import DataConfig, SceneGraphDataset, build_dataset, collate_fn
from egtr.errors import ConfigError, DataError
from egtr.inference.given_boxes import (
    GIVEN_BOXES_PROTOCOL,
    TASKS,
    GivenObjects,
    given_objects_of_ground_truths,
    postprocess_given_boxes,
)
from egtr.inference.loading import LoadedModel, load_runtime
from egtr.inference.postprocess import (
    ScenePrediction,
    postprocess_detections,
    postprocess_open_images,
    postprocess_scene_graphs,
)
from egtr.inference.processor import ModelInputs, pad_to_min_size
from egtr.inference.runtimes import ModelRuntime, TorchRuntime
from egtr.metrics import (
    EvaluationReport,
    PredictionsWriter,
    SceneGroundTruth,
    evaluate_predictions,
    ground_truth_from_target,
    save_ground_truths,
)
from egtr.models import EGTR, Checkpoint, read_checkpoint
from egtr.preprocessing import resolve_preprocessing
from egtr.runtime import resolve_device
from egtr.version import __version__

logger = logging.getLogger(__name__)

DEFAULT_MODES = {"vg": ("graph_constraint", "no_graph_constraint"), "oi": ("graph_constraint", "open_images")}


@dataclass(frozen=True)
class EvaluationSettings:
    """How a model is evaluated on a split (`evaluate_model`, `run_evaluation`, `egtr evaluate`).

    Attributes:
        split: "train", "val" or "test".
        task: "sgdet" (detect the objects), "sgcls" (the ground-truth boxes are given) or "predcls" (boxes and
            labels are given); see `egtr.inference.given_boxes`. The given-box tasks rank the graph modes only.
        modes: relation sets to evaluate, from "graph_constraint", "no_graph_constraint", "open_images"; None: both
            graph modes for VG, the graph constraint and the Open Images metrics for OI.
        top_k: triplets kept per image (100).
        detection: also compute the detection AP (SGDet only: with given boxes there is nothing to detect).
        zero_shot: also the recall of the triplets that the train split does not contain.
        max_images: evaluate only the first images of the split (for quick checks).
        batch_size, num_workers: DataLoader settings (the original evaluates with batch size 1).
        device: where the forward pass runs ("auto": CUDA when available).
        progress: show a progress bar.
    """

    split: str = "test"
    task: str = "sgdet"
    modes: tuple[str, ...] | None = None
    top_k: int = 100
    detection: bool = True
    zero_shot: bool = False
    max_images: int | None = None
    batch_size: int = 1
    num_workers: int = 0
    device: str | torch.device | None = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.modes is not None and not isinstance(self.modes, tuple):
            object.__setattr__(self, "modes", tuple(self.modes))  # a list given by a caller; frozen afterwards

    @classmethod
    def of(
        cls, settings: EvaluationSettings | None = None, split: str | None = None, **fields: Any
    ) -> EvaluationSettings:
        """`settings` (default: the defaults) with `split` and the fields given as keywords replaced; an unknown
        keyword is a TypeError naming it."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise TypeError(f"unknown evaluation setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if split is not None:
            fields["split"] = split
        return dataclasses.replace(settings or cls(), **fields)


def code_version() -> dict[str, str | None]:
    """The package version and, inside a git checkout, the commit (with `-dirty` for local changes)."""
    version: dict[str, str | None] = {"egtr": __version__, "torch": torch.__version__, "git": None}
    try:
        here = Path(__file__).parent
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            check=False,
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if commit.returncode == 0:
            version["git"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def seen_triplets_of(dataset: SceneGraphDataset) -> np.ndarray:
    """The distinct (subject class, object class, predicate) triplets of a dataset's annotations (no image decoding)."""
    keys = []
    for target in dataset.annotation_targets():
        relations, labels = np.asarray(target["relations"]).reshape(-1, 3), np.asarray(target["class_labels"])
        keys.append(np.column_stack([labels[relations[:, 0]], labels[relations[:, 1]], relations[:, 2]]))
    return np.unique(np.concatenate(keys), axis=0) if keys else np.zeros((0, 3), np.int64)


def _load_model(
    model: EGTR | ModelRuntime | LoadedModel | Checkpoint | str | Path, device: torch.device
) -> tuple[ModelRuntime, dict[str, object]]:
    """The model as a runtime (an `EGTR` or a checkpoint runs in PyTorch on `device`), and where it came from."""
    if isinstance(model, EGTR):
        return TorchRuntime(model, device), {"model": "in-memory EGTR", "checkpoint_sha256": None}
    if isinstance(model, ModelRuntime):
        return model, {"model": f"in-memory {model.name} runtime", "checkpoint_sha256": None}
    if isinstance(model, LoadedModel):
        runtime, provenance = model.runtime, model.source
    else:
        checkpoint = model if isinstance(model, Checkpoint) else read_checkpoint(model)
        runtime = TorchRuntime(EGTR.from_checkpoint(checkpoint, map_location=device), device)
        provenance = checkpoint.provenance()
    settings: dict[str, object] = {
        "model": provenance["model"],
        "model_layout": provenance["layout"],
        "weights_file": provenance["weights_file"],
        "checkpoint_sha256": provenance["weights_sha256"],
    }
    return runtime, settings


def evaluate_model(
    model: EGTR | ModelRuntime | LoadedModel | Checkpoint | str | Path,
    data_config: DataConfig,
    split: str | None = None,
    *,
    settings: EvaluationSettings | None = None,
    coco_ground_truth: str | Path | None = "auto",
    seen_triplets: np.ndarray | str | None = None,
    predictions_path: str | Path | None = None,
    **options: Any,
) -> EvaluationReport:
    """Run a model over a dataset split and compute the reference metrics.

    Why this is long: the documented arguments, and the report's metadata (every setting behind the numbers)
    written out in one dict; the steps themselves are helpers (`_load_model`, `_predict_split`,
    `evaluate_predictions`).

    Args:
        model: an `EGTR`, a `Checkpoint` already read, or a path in any layout `egtr.models.read_checkpoint` knows
            (our directory, the official artifact or its `.ckpt`, an `egtr train` run, pass or Lightning checkpoint);
            or a `ModelRuntime` / `egtr.inference.loading.LoadedModel` (ONNX Runtime, OpenVINO).
        data_config: `egtr.data.DataConfig` (dataset kind, root, evaluation resize).
        split: the split (overrides `settings.split`; default "test").
        settings: `EvaluationSettings` (task, modes, top_k, detection, max_images, batch size, device, ...).
        coco_ground_truth: VG detection ground truth: "auto" = the split's COCO json `<root>/<split>.json` when it
            exists (what the original uses), a path, or None to build it from the targets.
        seen_triplets: for zero-shot recall: an (S, 3) array, "train" (read from the train split), or None
            (default: "train" when `settings.zero_shot`).
        predictions_path: also write the predictions file here, and the ground truth next to it
            (`<name>.ground_truth.npz`).
        options: fields of `EvaluationSettings` given one by one (`top_k=50`), replacing those of `settings`.

    Returns:
        The `EvaluationReport`; `settings` records the model hash, code version, resize, K values and more.
    """
    settings = EvaluationSettings.of(settings, split, **options)
    if seen_triplets is None and settings.zero_shot:
        seen_triplets = "train"
    from torch.utils.data import DataLoader, Subset

    started = time.perf_counter()
    device = resolve_device(settings.device)
    runtime, model_settings = _load_model(model, device)
    model_settings["runtime"] = runtime.describe()
    config = runtime.config
    split = settings.split
    dataset = build_dataset(data_config, split, train=False, num_queries=config.num_queries)
    given_boxes = settings.task != "sgdet"
    modes = settings.modes if settings.modes is not None else DEFAULT_MODES["vg" if given_boxes else data_config.kind]
    if given_boxes and "open_images" in modes:
        raise ValueError(
            f"the Open Images candidates are not defined for {settings.task} (given boxes): use the graph modes"
        )
    detection = settings.detection and not given_boxes and data_config.kind == "vg"
    if dataset.num_rel_labels != config.num_rel_labels or dataset.num_labels != config.num_labels:
        raise DataError(
            f"the model predicts {config.num_labels} classes / {config.num_rel_labels} predicates but "
            f"{data_config.root} ({split}) has {dataset.num_labels} / {dataset.num_rel_labels}"
        )
    if isinstance(seen_triplets, str):
        if seen_triplets != "train":
            raise ValueError(f"seen_triplets must be an array, 'train' or None, got {seen_triplets!r}")
        train_split = build_dataset(data_config, "train", train=False, num_queries=config.num_queries)
        seen_triplets = seen_triplets_of(train_split)
    if coco_ground_truth == "auto":
        candidate = Path(data_config.root) / f"{split}.json"
        coco_ground_truth = candidate if data_config.kind == "vg" and candidate.is_file() else None
    max_images = settings.max_images
    subset = Subset(dataset, range(min(max_images, len(dataset)))) if max_images is not None else dataset
    loader = DataLoader(subset, batch_size=settings.batch_size, num_workers=settings.num_workers, collate_fn=collate_fn)

    inference_started = time.perf_counter()
    writer, ground_truths = _predict_split(runtime, loader, settings, modes, detection)
    inference_seconds = time.perf_counter() - inference_started

    writer.metadata = {
        **model_settings,
        "code_version": code_version(),
        "device": str(device),
        "dataset": {"kind": data_config.kind, "root": str(data_config.root), "split": split, "num_images": len(subset)},
        "image_size": {"shorter_side": data_config.eval_size, "max_longer_side": data_config.eval_max_size},
        "image_normalization": {"mean": list(data_config.image_mean), "std": list(data_config.image_std)},
        "batch_size": settings.batch_size,
        "top_k": settings.top_k,
        "task": settings.task,
        "given_boxes": GIVEN_BOXES_PROTOCOL if given_boxes else None,
        "modes": list(modes),
        "num_labels": config.num_labels,
        "num_rel_labels": config.num_rel_labels,
        "predicate_names": list(dataset.predicate_names),
    }
    saved = writer.to_saved_predictions()
    if predictions_path is not None:
        predictions_path = writer.save(predictions_path)
        truth_path = save_ground_truths(
            predictions_path.with_name(predictions_path.stem + ".ground_truth.npz"), ground_truths
        )
        logger.info("wrote %s and %s", predictions_path, truth_path)
    report = evaluate_predictions(
        saved,
        ground_truths,
        config.num_rel_labels,
        config.num_labels,
        seen_triplets=seen_triplets,
        coco_ground_truth=coco_ground_truth,
        detection=settings.detection and not given_boxes,
        source=f"{data_config.root} ({split})",
    )
    report.settings.update(writer.metadata)
    report.settings["predictions_file"] = None if predictions_path is None else str(predictions_path)
    report.settings["seconds"]["inference"] = inference_seconds
    report.settings["seconds"]["total"] = time.perf_counter() - started
    return report


# logits, pred_boxes, pred_rel, pred_connectivity, image sizes (h, w): what every post-processing function takes
RawOutputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _predict_split(
    runtime: ModelRuntime,
    loader: Iterable[dict[str, Any]],
    settings: EvaluationSettings,
    modes: Sequence[str],
    detection: bool,
) -> tuple[PredictionsWriter, list[SceneGroundTruth]]:
    """The forward pass over every batch: the predictions of each mode (and the VG detections when `detection`),
    and the ground truth of the targets."""
    from tqdm import tqdm

    config = runtime.config
    writer = PredictionsWriter()
    ground_truths: list[SceneGroundTruth] = []
    with torch.inference_mode():
        for batch in tqdm(loader, desc=f"evaluate {settings.split}", unit="batch", disable=not settings.progress):
            inputs = pad_to_min_size(ModelInputs(batch["pixel_values"], batch["pixel_mask"]), runtime.min_size)
            outputs = runtime(inputs)
            sizes = torch.stack([target["orig_size"] for target in batch["labels"]]).to(outputs.logits.device)
            raw: RawOutputs = (outputs.logits, outputs.pred_boxes, outputs.pred_rel, outputs.pred_connectivity, sizes)
            truths = [ground_truth_from_target(target) for target in batch["labels"]]
            given = None
            if settings.task != "sgdet":
                given = given_objects_of_ground_truths(
                    truths, sizes.tolist(), settings.task, config.num_labels, config.num_queries
                )
            scene_graphs = {mode: _scene_graphs_of_mode(raw, mode, given, settings.top_k) for mode in modes}
            detections = None
            if detection:
                detections = postprocess_detections(outputs.logits, outputs.pred_boxes, sizes, top_k=settings.top_k)
            image_ids = [int(target["image_id"]) for target in batch["labels"]]
            writer.add(image_ids, sizes.cpu().numpy(), scene_graphs, detections=detections)
            ground_truths.extend(truths)
    return writer, ground_truths


def _scene_graphs_of_mode(
    raw: RawOutputs, mode: str, given: Sequence[GivenObjects] | None, top_k: int
) -> Sequence[ScenePrediction]:
    """One batch's ranked triplets in one mode (`given`: the given boxes of PredCls / SGCls, else None)."""
    if mode == "open_images":
        return postprocess_open_images(*raw, top_k=top_k)
    graph_constraint = mode == "graph_constraint"
    if given is not None:
        predictions, _ = postprocess_given_boxes(*raw, given, top_k=top_k, graph_constraint=graph_constraint)
    else:
        predictions = postprocess_scene_graphs(*raw, top_k=top_k, graph_constraint=graph_constraint)
    for prediction in predictions:
        prediction.pair_predicate_scores = None  # (K, R) per image: too big to keep for a split
    return predictions


def ground_truths_from_dataset(
    data_config: DataConfig, split: str, max_images: int | None = None
) -> list[SceneGroundTruth]:
    """Ground truth of a split read from its annotation files only (no image decoding).

    Boxes go through the loader's target preparation (clipping, degenerate-box removal with relation remapping) and
    stay in original pixels; the model path (`evaluate_model`) instead rescales the normalised targets in float32
    like the original, which can differ in the last bits. For bit-exact re-evaluation use the ground-truth file that
    `evaluate_model(predictions_path=...)` writes.
    """
    from egtr.data.targets import prepare_target

    dataset = build_dataset(data_config, split, train=False)
    annotations = dataset.annotations[:max_images] if max_images is not None else dataset.annotations
    ground_truths = []
    for annotation in annotations:
        if annotation.width is None or annotation.height is None:
            raise ValueError(f"{annotation.source}: the annotation has no image size; use a ground-truth file")
        target = prepare_target(annotation, annotation.width, annotation.height)
        ground_truths.append(
            SceneGroundTruth(
                target["boxes"].numpy(),
                target["class_labels"].numpy(),
                target["relations"].numpy(),
                annotation.image_id,
            )
        )
    return ground_truths


def run_evaluation(
    *,
    model: str | None,
    predictions: str | None,
    data_root: str | None,
    kind: str = "vg",
    ground_truth: str | None = None,
    size: int | None = None,
    max_size: int | None = None,
    runtime: str | None = None,
    save_predictions: str | None = None,
    output: str | Path = "evaluation.json",
    settings: EvaluationSettings | None = None,
    **options: Any,
) -> tuple[EvaluationReport, Path]:
    """What `egtr evaluate` does: evaluate a model on a split, or a saved predictions file; write the JSON.

    The resize and normalisation: `size` / `max_size` when given, else those of the model directory's
    `preprocessor_config.json`, else the paper's 800 / 1333 with ImageNet normalisation (official artifacts).
    `settings` (`EvaluationSettings`) says how; `options` are its fields given one by one (`split="val"`).

    Returns:
        The report and the path of the JSON written.
    """
    from egtr.metrics import evaluate_predictions_file

    if (model is None) == (predictions is None):
        raise ConfigError("give exactly one of a model or a predictions file")
    # read once: preprocessing + weights (`runtime`: torch, onnxruntime, openvino; None: the model's own)
    settings = EvaluationSettings.of(settings, **options)
    split = settings.split
    loaded = load_runtime(model, runtime, device=settings.device) if model is not None else None
    preprocessor = resolve_preprocessing(loaded.preprocessor if loaded else None, size, max_size)
    data_config = None
    if data_root is not None:
        data_config = DataConfig.for_evaluation(preprocessor, kind=kind, root=str(data_root))
    if loaded is not None:
        if data_config is None:
            raise ConfigError("evaluating a model needs the dataset folder (--data-root)")
        report = evaluate_model(loaded, data_config, settings=settings, predictions_path=save_predictions)
        report.settings.pop("predictions_metadata", None)  # the same settings are at the top level
    else:
        assert predictions is not None  # one of model / predictions, checked above
        predictions_path = Path(predictions)
        default_truth = predictions_path.with_name(predictions_path.stem + ".ground_truth.npz")
        if ground_truth is not None:
            truths: Any = ground_truth
        elif default_truth.is_file():
            truths = default_truth
        elif data_config is not None:
            truths = ground_truths_from_dataset(data_config, split, settings.max_images)
        else:
            raise ConfigError(f"{predictions_path}: no ground truth: give a ground-truth file or the dataset folder")
        seen = None
        if settings.zero_shot:
            if data_config is None:
                raise ConfigError("zero-shot recall needs the dataset folder (the train split's triplets)")
            seen = seen_triplets_of(build_dataset(data_config, "train", train=False))
        coco = Path(data_root) / f"{split}.json" if data_root is not None and kind == "vg" else None
        report = evaluate_predictions_file(
            predictions_path,
            truths,
            seen_triplets=seen,
            detection=settings.detection,
            coco_ground_truth=coco if coco is not None and coco.is_file() else None,
        )
    output = report.save_json(output)
    return report, output
