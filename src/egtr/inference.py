"""Inference for people: the `Predictor` that turns images into typed `SceneGraph`s.

    >>> predictor = Predictor.from_pretrained("path/to/artifact", device="cpu")
    >>> graph = predictor("photo.jpg")            # or bytes, a PIL image, an array, a tensor, or a list of them
    >>> graph.relations[0]                         # subject/object index into graph.objects, predicate, score
    >>> graph.draw("photo_graph.png")

Every input goes through `egtr.images.load_image` (EXIF orientation, 16-bit, CMYK, palette, pixel limit) and the
model's evaluation pipeline (`egtr.data.transforms.make_eval_transform`); the ranking of the triplets is the one of
the paper's evaluation (reference §5), computed by `egtr.postprocess.postprocess_scene_graphs`; `egtr.scene_graph`
selects, re-indexes and names the result. `egtr.predict_files` runs a predictor over many image files.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from PIL import Image

from egtr.data.base import collate_fn
from egtr.data.transforms import make_eval_transform
from egtr.errors import ImageError
from egtr.images import DEFAULT_MAX_PIXELS, ImageSource, load_image
from egtr.models import EGTR, EGTROutput, read_checkpoint
from egtr.postprocess import postprocess_scene_graphs
from egtr.preprocessing import PreprocessorConfig, resolve_preprocessing
from egtr.runtime import autocast_context, resolve_device, resolve_dtype
from egtr.scene_graph import SceneGraph, scene_graph_from_arrays

if TYPE_CHECKING:
    from egtr.given_boxes import GivenObjects

__all__ = ["PredictionOptions", "Predictor", "PreparedImage", "batched"]

logger = logging.getLogger(__name__)

# Per-call options of `Predictor.__call__` / `predict_batch` / `postprocess` (the constructor's defaults otherwise).
PREDICTION_OPTIONS = ("top_k", "score_threshold", "graph_constraint", "object_threshold")
PredictionOptions = dict[str, int | float | bool | None]
T = TypeVar("T")
BoxesInput = np.ndarray | torch.Tensor | Sequence[Sequence[float]]  # (M, 4) xyxy pixels
LabelsInput = np.ndarray | torch.Tensor | Sequence[int] | Sequence[str]  # (M,) class indices or class names


@dataclass
class PreparedImage:
    """An image ready for the model: `pixel_values` (3, h, w) normalised and resized, `size_hw` of the original,
    and the decoded original `image` (kept for drawing)."""

    pixel_values: torch.Tensor
    size_hw: tuple[int, int]
    path: str | None = None
    image: Image.Image | None = None


class Predictor:
    """Turn images into `SceneGraph`s with an EGTR model.

    The image pipeline is the model's evaluation one (`preprocessor`: PIL bilinear resize of the shorter side,
    longer side capped, mean/std normalisation); the ranking is the paper's (`postprocess_scene_graphs`).

    Precision: `dtype` float32 runs in full precision; bfloat16/float16 run the forward under `torch.autocast`
    (weights stay float32, numerically sensitive ops stay float32), the usual mixed-precision inference.

    Args:
        model: an `EGTR` model (moved to `device` and put in eval mode).
        preprocessor: resize and normalisation; default: the model's own (`model.preprocessor`), else the paper's
            (800 / 1333, ImageNet).
        device: "auto" (CUDA if available), "cpu", "cuda", "cuda:1", ...
        dtype: "float32", "bfloat16" or "float16" (or the torch dtype, or fp32/bf16/fp16).
        top_k: keep at most this many relations per image (ranked by triplet score).
        score_threshold: drop relations whose triplet score is below this.
        graph_constraint: one predicate per subject/object pair (the paper's main setting); False allows several.
        object_threshold: also keep objects with score >= this that take part in no kept relation (None: only
            the objects of the kept relations).
        batch_size: images per forward pass when a list is given.
        max_pixels: refuse larger images (decompression bombs; None: no limit).
        source: where the model came from (`Checkpoint.provenance()`), for reports; set by `from_pretrained`.
    """

    def __init__(
        self,
        model: EGTR,
        *,
        preprocessor: PreprocessorConfig | None = None,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype = "float32",
        top_k: int = 20,
        score_threshold: float = 0.0,
        graph_constraint: bool = True,
        object_threshold: float | None = None,
        batch_size: int = 1,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        source: dict[str, str] | None = None,
    ) -> None:
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.model = model.to(self.device).eval()
        self.config = model.config
        self.preprocessor = preprocessor or model.preprocessor or PreprocessorConfig()
        self.top_k = top_k
        self.score_threshold = score_threshold
        self.graph_constraint = graph_constraint
        self.object_threshold = object_threshold
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.source = source
        self.class_names = [self.config.id2label[index] for index in range(self.config.num_labels)]
        self.predicate_names = [self.config.id2predicate[index] for index in range(self.config.num_rel_labels)]
        self._transform = make_eval_transform(self.preprocessor)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        size: int | None = None,
        max_size: int | None = None,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype = "float32",
        **options: int | float | bool | None,
    ) -> Predictor:
        """Load a model in any layout `egtr.models.read_checkpoint` knows and wrap it; `options` are the
        constructor's (top_k, score_threshold, graph_constraint, object_threshold, batch_size, max_pixels).

        Preprocessing: `size` / `max_size` given here win; the rest comes from the model directory's
        `preprocessor_config.json` (written by `egtr train` and `save_pretrained`), else the paper's 800 / 1333 with
        ImageNet normalisation (right for the official artifacts).
        """
        checkpoint = read_checkpoint(path)  # a malformed preprocessor file fails here, before building the model
        preprocessor = resolve_preprocessing(checkpoint.preprocessor, size, max_size)
        model = EGTR.from_checkpoint(checkpoint)
        return cls(
            model,
            preprocessor=preprocessor,
            device=device,
            dtype=dtype,
            source=checkpoint.provenance(),
            **options,  # type: ignore[arg-type]
        )

    # ------------------------------------------------------------------ pipeline pieces
    def prepare(self, image: ImageSource) -> PreparedImage:
        """Decode (paths, bytes) or convert (PIL, arrays, tensors) one image to RGB, resize and normalise it.

        Raises:
            egtr.errors.ImageError: a missing or unreadable file, an unsupported array, an image over the pixel
                limit or one too thin to resize; the message names the image.
        """
        path = os.path.abspath(image) if isinstance(image, (str, Path)) else None
        picture = load_image(image, max_pixels=self.max_pixels)
        empty_target = {"boxes": torch.zeros(0, 4), "class_labels": torch.zeros(0, dtype=torch.int64)}
        try:
            pixel_values, _ = self._transform(picture, empty_target)
        except (ValueError, ZeroDivisionError) as error:  # e.g. 4000x3: the shorter side rounds to nothing
            raise ImageError(f"{path or type(image).__name__}: cannot be resized for the model ({error})") from error
        return PreparedImage(pixel_values, (picture.height, picture.width), path=path, image=picture)

    @torch.inference_mode()
    def forward(self, batch: Sequence[PreparedImage]) -> EGTROutput:
        """Pad the batch, run the model on `self.device` in `self.dtype`; returns the model output."""
        collated = collate_fn([(item.pixel_values, {}) for item in batch])
        pixel_values = collated["pixel_values"].to(self.device, non_blocking=True)
        pixel_mask = collated["pixel_mask"].to(self.device, non_blocking=True)
        with self.autocast_context():
            return self.model(pixel_values, pixel_mask)

    def postprocess(
        self,
        output: EGTROutput,
        batch: Sequence[PreparedImage],
        given: Sequence[GivenObjects] | None = None,
        **options: int | float | bool | None,
    ) -> list[SceneGraph]:
        """Rank the triplets of a model output and build one `SceneGraph` per image of `batch`.

        `given`: per image, checked given boxes (`self.check_given`): the graphs are then over exactly those
        objects (`egtr.given_boxes`). `options` override `top_k`, `score_threshold`, `graph_constraint` and
        `object_threshold` for this call.
        """
        settings = self._settings(**options)
        if given is not None:
            from egtr.given_boxes import given_box_scene_graphs

            return given_box_scene_graphs(self, output, batch, given, settings)
        top_k = int(settings["top_k"])  # type: ignore[arg-type]
        image_sizes = torch.as_tensor(
            [item.size_hw for item in batch], dtype=torch.float32, device=output.logits.device
        )
        predictions = postprocess_scene_graphs(
            output.logits.float(),
            output.pred_boxes.float(),
            output.pred_rel.float(),
            output.pred_connectivity.float(),
            image_sizes,
            top_k=top_k,
            graph_constraint=bool(settings["graph_constraint"]),
        )
        return [
            scene_graph_from_arrays(
                prediction.boxes,
                prediction.labels,
                prediction.scores,
                prediction.relations,
                prediction.relation_scores,
                prediction.predicate_scores,
                class_names=self.class_names,
                predicate_names=self.predicate_names,
                image_size=item.size_hw,
                top_k=top_k,
                score_threshold=float(settings["score_threshold"] or 0.0),
                object_threshold=None if settings["object_threshold"] is None else float(settings["object_threshold"]),
                image_path=item.path,
            )
            for prediction, item in zip(predictions, batch)
        ]

    # ------------------------------------------------------------------ the one-call API
    def __call__(
        self,
        images: ImageSource | Sequence[ImageSource],
        boxes: BoxesInput | Sequence[BoxesInput] | None = None,
        labels: LabelsInput | Sequence[LabelsInput] | None = None,
        **options: int | float | bool | None,
    ) -> SceneGraph | list[SceneGraph]:
        """Predict the scene graph of one image, or of each image of a list (in batches of `batch_size`).

        Args:
            images: a path, encoded bytes, PIL image, (H, W, 3) uint8 / float [0, 1] array or (3, H, W) tensor, or a
                list of them.
            boxes: given objects instead of detected ones: (M, 4) xyxy pixel boxes of the image (a list of them
                for a list of images). The graph is then over exactly these objects, in this order
                (`egtr.given_boxes`): SGCls, or PredCls with `labels`.
            labels: with `boxes`: (M,) class indices of the given boxes (a list of them for a list of images).
            options: per-call `top_k`, `score_threshold`, `graph_constraint`, `object_threshold`.

        Returns:
            A `SceneGraph` for a single image, a list of them for a list.
        """
        if labels is not None and boxes is None:
            raise ValueError("labels need boxes: give the boxes the labels belong to")
        if _is_single_image(images):
            # _is_single_image narrowed `images` (and so `boxes`/`labels`) to one image, which mypy cannot see.
            single: list[ImageSource] = [images]  # type: ignore[list-item]
            per_call: dict[str, Any] = dict(options)
            if boxes is None:
                return self.predict_batch(single, **per_call)[0]
            given_labels = None if labels is None else [labels]
            return self.predict_batch(single, [boxes], given_labels, **per_call)[0]  # type: ignore[list-item,arg-type]
        if not isinstance(images, (list, tuple)):
            raise ImageError(
                f"<{type(images).__name__}>: not an image; expected a path, bytes, a PIL image, an array, a tensor "
                "or a list of them"
            )
        per_image_boxes = _per_image(boxes, len(images), "boxes")
        per_image_labels = _per_image(labels, len(images), "labels")
        results: list[SceneGraph] = []
        for start in range(0, len(images), self.batch_size):
            stop = start + self.batch_size
            results.extend(
                self.predict_batch(
                    images[start:stop],
                    None if per_image_boxes is None else per_image_boxes[start:stop],
                    None if per_image_labels is None else per_image_labels[start:stop],
                    **options,
                )
            )
        return results

    def predict_batch(
        self,
        images: Sequence[ImageSource],
        boxes: Sequence[BoxesInput] | None = None,
        labels: Sequence[LabelsInput] | None = None,
        **options: int | float | bool | None,
    ) -> list[SceneGraph]:
        """One forward pass over all `images` (no splitting into `batch_size` chunks); `boxes` / `labels`: one
        entry per image, as in `__call__`."""
        self._settings(**options)  # fail on a misspelt option before the expensive part
        batch = [self.prepare(image) for image in images]
        given = None if boxes is None else self.check_given(batch, boxes, labels)  # before the forward pass
        return self.postprocess(self.forward(batch), batch, given, **options)

    def check_given(
        self, batch: Sequence[PreparedImage], boxes: Sequence[BoxesInput], labels: Sequence[LabelsInput] | None
    ) -> list[GivenObjects]:
        """Validate given boxes (and labels), one entry per image of `batch` (`egtr.given_boxes`)."""
        from egtr.given_boxes import check_given_objects

        if len(boxes) != len(batch) or (labels is not None and len(labels) != len(batch)):
            raise ValueError(f"give one set of boxes (and labels) per image: {len(batch)} images")
        return [
            check_given_objects(
                image_boxes,
                None if labels is None else labels[index],
                item.size_hw,
                self.config.num_labels,
                source=item.path or f"image {index}",
                num_queries=self.config.num_queries,
                class_names=self.class_names,
            )
            for index, (item, image_boxes) in enumerate(zip(batch, boxes))
        ]

    # ------------------------------------------------------------------ helpers
    def _settings(self, **options: int | float | bool | None) -> PredictionOptions:
        settings: PredictionOptions = {
            "top_k": self.top_k,
            "score_threshold": self.score_threshold,
            "graph_constraint": self.graph_constraint,
            "object_threshold": self.object_threshold,
        }
        unknown = set(options) - set(PREDICTION_OPTIONS)
        if unknown:
            raise TypeError(f"unknown prediction options {sorted(unknown)}; expected some of {sorted(settings)}")
        settings.update(options)
        return settings

    def autocast_context(self) -> contextlib.AbstractContextManager[object]:
        """`torch.autocast` for bfloat16/float16, a no-op for float32."""
        return autocast_context(self.device, self.dtype)

    def __repr__(self) -> str:
        return (
            f"Predictor({self.config.backbone}, {self.config.num_labels} classes, {self.config.num_rel_labels} "
            f"predicates, device={self.device}, dtype={str(self.dtype).removeprefix('torch.')}, "
            f"size={self.preprocessor.shortest_edge}, max_size={self.preprocessor.longest_edge}, top_k={self.top_k})"
        )


def _per_image(values: object, num_images: int, name: str) -> list | None:
    """A list of images takes a list of per-image boxes (or labels), one entry per image."""
    if values is None:
        return None
    if isinstance(values, (np.ndarray, torch.Tensor)) or len(values) != num_images:  # type: ignore[arg-type]
        raise ValueError(f"for a list of {num_images} images, give {name} as a list with one entry per image")
    return list(values)  # type: ignore[call-overload]


def _is_single_image(images: object) -> bool:
    # A stacked array/tensor counts as one image: a batch must be given as a list.
    return isinstance(images, (str, Path, bytes, bytearray, Image.Image, np.ndarray, torch.Tensor))


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter), consuming `items` lazily."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
