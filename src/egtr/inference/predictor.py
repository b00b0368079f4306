"""Inference for people: the `Predictor` that turns images into typed `SceneGraph`s.

    >>> predictor = Predictor.from_pretrained("path/to/artifact", device="cpu")
    >>> graph = predictor("photo.jpg")            # or bytes, a PIL image, an array, a tensor, or a list of them
    >>> graph.relations[0]                         # subject/object index into graph.objects, predicate, score
    >>> graph.draw("photo_graph.png")
    >>> Predictor.from_pretrained("exported_onnx/")            # an `egtr export` folder: ONNX Runtime
    >>> Predictor.from_pretrained("path/to/artifact", runtime="openvino", dtype="bfloat16")

A `Predictor` is a facade over inference's three parts, each usable alone:

1. `egtr.inference.processor.ImageProcessor`: images -> padded, normalised `pixel_values` + `pixel_mask`;
2. `egtr.inference.runtimes.ModelRuntime`: the network in PyTorch, ONNX Runtime or OpenVINO -> `ModelOutputs`;
3. `egtr.inference.postprocess.scene_graphs_from_outputs` (and `given_boxes.given_box_scene_graphs`): the paper's
   ranking (reference §5), selected and named into `SceneGraph`s by `egtr.inference.PredictionOptions`.

`egtr.inference.files` runs a predictor over many image files.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from PIL import Image

from egtr.config import EGTRConfig
from egtr.errors import ImageError
from egtr.images import DEFAULT_MAX_PIXELS, ImageSource
from egtr.inference.options import PredictionOptions
from egtr.inference.postprocess import scene_graphs_from_outputs
from egtr.inference.processor import ImageProcessor, PreparedImage
from egtr.inference.runtimes import ModelOutputs, ModelRuntime, TorchRuntime
from egtr.inference.scene_graph import SceneGraph
from egtr.models import EGTR
from egtr.preprocessing import PreprocessorConfig, resolve_preprocessing

if TYPE_CHECKING:
    from egtr.inference.given_boxes import GivenObjects

__all__ = ["Predictor", "PreparedImage", "batched"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
BoxesInput = np.ndarray | torch.Tensor | Sequence[Sequence[float]]  # (M, 4) xyxy pixels
LabelsInput = np.ndarray | torch.Tensor | Sequence[int] | Sequence[str]  # (M,) class indices or class names
OptionValue = int | float | bool | None


class Predictor:
    """Turn images into `SceneGraph`s with an EGTR model, in any runtime.

    The image pipeline is the model's evaluation one (`processor`: PIL bilinear resize of the shorter side, longer
    side capped, mean/std normalisation); the ranking is the paper's (`postprocess_scene_graphs`).

    Precision: `dtype` float32 runs in full precision; in PyTorch, bfloat16/float16 run the forward under
    `torch.autocast` (weights stay float32), the usual mixed-precision inference; OpenVINO takes them as its
    inference precision.

    Args:
        model: an `EGTR` model (run in PyTorch on `device` in `dtype`), or a `ModelRuntime` (then `device` and
            `dtype` are the runtime's own).
        preprocessor: resize and normalisation; default: the model's own (`model.preprocessor`), else the paper's
            (800 / 1333, ImageNet).
        device: "auto" (CUDA if available), "cpu", "cuda", "cuda:1", ...
        dtype: "float32", "bfloat16" or "float16" (or the torch dtype, or fp32/bf16/fp16).
        top_k: relations kept per image; with `score_threshold`, `graph_constraint` and `object_threshold`, the
            fields of `PredictionOptions` (or give `options`, one `PredictionOptions`, instead).
        score_threshold: drop relations with a lower triplet score.
        graph_constraint: one predicate per subject/object pair.
        object_threshold: also keep objects with at least this score that are in no kept relation.
        batch_size: images per forward pass when a list is given.
        max_pixels: refuse larger images (decompression bombs; None: no limit).
        source: where the model came from (`Checkpoint.provenance()`), for reports; set by `from_pretrained`.
    """

    def __init__(
        self,
        model: EGTR | ModelRuntime,
        *,
        preprocessor: PreprocessorConfig | None = None,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype = "float32",
        top_k: int = 20,
        score_threshold: float = 0.0,
        graph_constraint: bool = True,
        object_threshold: float | None = None,
        options: PredictionOptions | None = None,
        batch_size: int = 1,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        source: dict[str, str] | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.options = options or PredictionOptions(top_k, score_threshold, graph_constraint, object_threshold)
        self.runtime = model if isinstance(model, ModelRuntime) else TorchRuntime(model, device, dtype)
        own_preprocessor = model.preprocessor if isinstance(model, EGTR) else None
        self.processor = ImageProcessor(preprocessor or own_preprocessor or PreprocessorConfig(), max_pixels)
        self.batch_size = batch_size
        self.source = source
        self.config: EGTRConfig = self.runtime.config
        self.class_names = [self.config.id2label[index] for index in range(self.config.num_labels)]
        self.predicate_names = [self.config.id2predicate[index] for index in range(self.config.num_rel_labels)]

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        size: int | None = None,
        max_size: int | None = None,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype = "float32",
        runtime: str | None = None,
        threads: int | None = None,
        revision: str | None = None,
        **options: OptionValue,
    ) -> Predictor:
        """Load a model and wrap it; `options` are the constructor's (top_k, score_threshold, graph_constraint,
        object_threshold, batch_size, max_pixels).

        `path`: any layout `egtr.models.read_checkpoint` knows, an `egtr export` folder, or a model on the Hugging
        Face Hub by name (`"org/name"`, at `revision`; an existing local path wins: `egtr.models.hub`).
        `runtime`: "torch", "onnxruntime" or "openvino"; default: torch for a checkpoint, the folder's own for an
        export. A checkpoint asked to run elsewhere is exported once into the cache
        (`egtr.inference.loading.load_runtime`).
        `threads`: the runtime's CPU threads (None: its default).

        Preprocessing: `size` / `max_size` given here win; the rest comes from the model directory's
        `preprocessor_config.json` (written by `egtr train`, `save_pretrained` and `egtr export`), else the paper's
        800 / 1333 with ImageNet normalisation (right for the official artifacts).
        """
        from egtr.inference.loading import load_runtime

        loaded = load_runtime(path, runtime, device=device, dtype=dtype, threads=threads, revision=revision)
        return cls(
            loaded.runtime,
            preprocessor=resolve_preprocessing(loaded.preprocessor, size, max_size),
            source=loaded.source,
            **options,  # type: ignore[arg-type]
        )

    # ------------------------------------------------------------------ the parts' settings, read-only
    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def dtype(self) -> torch.dtype:
        return self.runtime.dtype

    @property
    def model(self) -> EGTR:
        """The PyTorch network (torch runtime only: an exported graph has no module)."""
        if not isinstance(self.runtime, TorchRuntime):
            raise AttributeError(f"a predictor on the {self.runtime.name} runtime has no PyTorch model")
        return self.runtime.model

    @property
    def preprocessor(self) -> PreprocessorConfig:
        return self.processor.config

    @property
    def max_pixels(self) -> int | None:
        return self.processor.max_pixels

    @property
    def top_k(self) -> int:
        return self.options.top_k

    @property
    def score_threshold(self) -> float:
        return self.options.score_threshold

    @property
    def graph_constraint(self) -> bool:
        return self.options.graph_constraint

    @property
    def object_threshold(self) -> float | None:
        return self.options.object_threshold

    # ------------------------------------------------------------------ pipeline pieces
    def prepare(self, image: ImageSource) -> PreparedImage:
        """Decode or convert one image, resize and normalise it (`ImageProcessor.prepare`)."""
        return self.processor.prepare(image)

    def forward(self, batch: Sequence[PreparedImage]) -> ModelOutputs:
        """Pad the batch and run the runtime on it."""
        return self.runtime(self.processor.collate(batch, self.runtime.min_size))

    def postprocess(
        self,
        output: ModelOutputs,
        batch: Sequence[PreparedImage],
        given: Sequence[GivenObjects] | None = None,
        **options: OptionValue,
    ) -> list[SceneGraph]:
        """Rank the triplets of a model output and build one `SceneGraph` per image of `batch`.

        `given`: per image, checked given boxes (`self.check_given`): the graphs are then over exactly those
        objects (`egtr.inference.given_boxes`). `options` override the `PredictionOptions` for this call.
        """
        settings = self.options.replace(**options)
        sizes, paths = [item.size_hw for item in batch], [item.path for item in batch]
        if given is not None:
            from egtr.inference.given_boxes import given_box_scene_graphs

            return given_box_scene_graphs(output, sizes, given, settings, self.class_names, self.predicate_names, paths)
        return scene_graphs_from_outputs(output, sizes, settings, self.class_names, self.predicate_names, paths)

    # ------------------------------------------------------------------ the one-call API
    def __call__(
        self,
        images: ImageSource | Sequence[ImageSource],
        boxes: BoxesInput | Sequence[BoxesInput] | None = None,
        labels: LabelsInput | Sequence[LabelsInput] | None = None,
        **options: OptionValue,
    ) -> SceneGraph | list[SceneGraph]:
        """Predict the scene graph of one image, or of each image of a list (in batches of `batch_size`).

        Args:
            images: a path, encoded bytes, PIL image, (H, W, 3) uint8 / float [0, 1] array or (3, H, W) tensor, or a
                list of them.
            boxes: given objects instead of detected ones: (M, 4) xyxy pixel boxes of the image (a list of them
                for a list of images). The graph is then over exactly these objects, in this order
                (`egtr.inference.given_boxes`): SGCls, or PredCls with `labels`.
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
        **options: OptionValue,
    ) -> list[SceneGraph]:
        """One forward pass over all `images` (no splitting into `batch_size` chunks); `boxes` / `labels`: one
        entry per image, as in `__call__`."""
        self.options.replace(**options)  # fail on a misspelt option before the expensive part
        batch = [self.prepare(image) for image in images]
        given = None if boxes is None else self.check_given(batch, boxes, labels)  # before the forward pass
        return self.postprocess(self.forward(batch), batch, given, **options)

    def check_given(
        self, batch: Sequence[PreparedImage], boxes: Sequence[BoxesInput], labels: Sequence[LabelsInput] | None
    ) -> list[GivenObjects]:
        """Validate given boxes (and labels), one entry per image of `batch` (`egtr.inference.given_boxes`)."""
        from egtr.inference.given_boxes import check_given_objects

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

    def __repr__(self) -> str:
        return (
            f"Predictor({self.config.backbone}, {self.config.num_labels} classes, {self.config.num_rel_labels} "
            f"predicates, runtime={self.runtime.name}, device={self.device}, "
            f"dtype={str(self.dtype).removeprefix('torch.')}, size={self.preprocessor.shortest_edge}, "
            f"max_size={self.preprocessor.longest_edge}, top_k={self.top_k})"
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
