"""Inference for people: the `Predictor` that turns images into typed `SceneGraph`s.

    >>> predictor = Predictor.from_pretrained("path/to/artifact", device="cpu")
    >>> graph = predictor("photo.jpg")            # or a PIL image, an (H, W, 3) uint8 array, or a list of them
    >>> graph.relations[0]                         # subject/object index into graph.objects, predicate, score
    >>> graph.draw("photo_graph.png")

The ranking of the triplets is the one of the paper's evaluation (reference §5), computed by
`egtr.postprocess.postprocess_scene_graphs`; `egtr.scene_graph` selects, re-indexes and names the result.
`predict_files` runs a predictor over many image files and writes one JSON and one drawing per image.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from egtr.data.config import IMAGENET_MEAN, IMAGENET_STD
from egtr.scene_graph import SceneGraph, SceneObject, SceneRelation, scene_graph_from_arrays

if TYPE_CHECKING:
    from egtr.models.egtr import EGTR

__all__ = [
    "FilesReport",
    "Predictor",
    "PreparedImage",
    "SceneGraph",
    "SceneObject",
    "SceneRelation",
    "expand_image_paths",
    "predict_files",
    "scene_graph_from_arrays",
    "to_pil_image",
]

logger = logging.getLogger(__name__)

ImageInput = str | Path | Image.Image | np.ndarray | torch.Tensor
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_ALIASES = {
    "fp32": "float32",
    "bf16": "bfloat16",
    "fp16": "float16",
    "half": "float16",
    "float": "float32",
}


# ================================================================================================== Predictor
def resolve_device(device: str | torch.device | None) -> torch.device:
    """ "auto"/None -> CUDA when available, else CPU; anything else as `torch.device` understands it."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was requested but CUDA is not available (torch {torch.__version__})")
    return device


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """ "float32"/"fp32", "bfloat16"/"bf16", "float16"/"fp16" or a torch dtype -> torch dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype}")
        return dtype
    name = DTYPE_ALIASES.get(str(dtype).lower(), str(dtype).lower())
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)} (or fp32/bf16/fp16), got {dtype!r}")
    return DTYPES[name]


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

    The image pipeline is the evaluation one (`egtr.data.make_transforms(train=False)`: PIL bilinear resize of the
    shorter side to `image_size`, longer side <= `max_size`, mean/std normalisation); the ranking is the paper's
    (`egtr.postprocess.postprocess_scene_graphs`). `from_pretrained` takes the sizes and normalisation from the
    model directory's `preprocessor_config.json` when it has one.

    Precision: `dtype` float32 runs in full precision; bfloat16/float16 run the forward under `torch.autocast`
    (weights stay float32, numerically sensitive ops stay float32), which is the usual mixed-precision inference.

    Args:
        model: an `EGTR` model (moved to `device` and put in eval mode).
        device: "auto" (CUDA if available), "cpu", "cuda", "cuda:1", ...
        dtype: "float32", "bfloat16" or "float16" (or the torch dtype).
        image_size: shorter side after resize (800 = the paper's evaluation).
        max_size: cap on the longer side (1333 = the paper's evaluation); None = no cap.
        image_mean, image_std: per-channel (RGB) normalisation of pixels in [0, 1] (ImageNet's by default).
        top_k: keep at most this many relations per image (ranked by triplet score).
        score_threshold: drop relations whose triplet score is below this.
        graph_constraint: one predicate per subject/object pair (the paper's main setting); False allows several.
        object_threshold: also keep objects with score >= this that take part in no kept relation (None: only
            the objects of the kept relations).
        batch_size: images per forward pass when a list is given.
    """

    def __init__(
        self,
        model: EGTR,
        *,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype = "float32",
        image_size: int = 800,
        max_size: int | None = 1333,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        top_k: int = 20,
        score_threshold: float = 0.0,
        graph_constraint: bool = True,
        object_threshold: float | None = None,
        batch_size: int = 1,
    ) -> None:
        from egtr.data.config import DataConfig
        from egtr.data.transforms import make_transforms

        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.model = model.to(self.device).eval()
        self.config = model.config
        self.image_size = image_size
        self.max_size = max_size
        self.top_k = top_k
        self.score_threshold = score_threshold
        self.graph_constraint = graph_constraint
        self.object_threshold = object_threshold
        self.batch_size = batch_size
        self.class_names = [self.config.id2label[index] for index in range(self.config.num_labels)]
        self.predicate_names = [self.config.id2predicate[index] for index in range(self.config.num_rel_labels)]
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        data_config = DataConfig(
            root=".",
            eval_size=image_size,
            eval_max_size=max_size or 10**9,
            image_mean=self.image_mean,
            image_std=self.image_std,
        ).validate()
        self._transform = make_transforms(data_config, train=False)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype = "float32",
        **options: Any,
    ) -> Predictor:
        """Load a model saved by `EGTR.save_pretrained` or an official EGTR artifact (`config.json` +
        `checkpoints/*.ckpt`, or the `.ckpt` itself) and wrap it; `options` are the constructor's.

        Preprocessing: `image_size`, `max_size`, `image_mean` and `image_std` given in `options` win; the others
        come from the directory's `preprocessor_config.json` (written by `egtr train`), else the constructor's
        defaults (the paper's 800 / 1333 and ImageNet, which is right for the official artifacts).
        """
        from egtr.models.checkpoint import load_preprocessor_config
        from egtr.models.egtr import EGTR

        recorded = load_preprocessor_config(path)  # read first: a malformed file fails before the weights load
        model = EGTR.from_pretrained(path, map_location="cpu")
        if recorded is not None:
            options = {
                "image_size": recorded.shortest_edge,
                "max_size": recorded.longest_edge,
                "image_mean": recorded.image_mean,
                "image_std": recorded.image_std,
                **options,
            }
        return cls(model, device=device, dtype=dtype, **options)

    # ------------------------------------------------------------------ pipeline pieces
    def prepare(self, image: ImageInput) -> PreparedImage:
        """Decode (paths), convert to RGB, resize and normalise one image.

        Raises:
            egtr.data.DataError: a path that is missing or not a readable image (the message names the file).
            ValueError: an array of unsupported shape.
        """
        from egtr.data.images import load_image

        path = None
        if isinstance(image, (str, Path)):
            path = str(image)
            picture = load_image(image)
        else:
            picture = to_pil_image(image)
        empty_target = {"boxes": torch.zeros(0, 4), "class_labels": torch.zeros(0, dtype=torch.int64)}
        pixel_values, _ = self._transform(picture, empty_target)
        return PreparedImage(pixel_values, (picture.height, picture.width), path=path, image=picture)

    @torch.inference_mode()
    def forward(self, batch: Sequence[PreparedImage]) -> Any:
        """Pad the batch, run the model on `self.device` in `self.dtype`; returns the model output."""
        from egtr.data.base import collate_fn

        collated = collate_fn([(item.pixel_values, {}) for item in batch])
        pixel_values = collated["pixel_values"].to(self.device, non_blocking=True)
        pixel_mask = collated["pixel_mask"].to(self.device, non_blocking=True)
        with self.autocast_context():
            return self.model(pixel_values, pixel_mask)

    def postprocess(self, output: Any, batch: Sequence[PreparedImage], **options: Any) -> list[SceneGraph]:
        """Rank the triplets of a model output and build one `SceneGraph` per image of `batch`.

        `options` override `top_k`, `score_threshold`, `graph_constraint` and `object_threshold` for this call.
        """
        from egtr.postprocess import postprocess_scene_graphs

        settings = self._settings(**options)
        image_sizes = torch.as_tensor(
            [item.size_hw for item in batch], dtype=torch.float32, device=output.logits.device
        )
        predictions = postprocess_scene_graphs(
            output.logits.float(),
            output.pred_boxes.float(),
            output.pred_rel.float(),
            output.pred_connectivity.float(),
            image_sizes,
            top_k=settings["top_k"],
            graph_constraint=settings["graph_constraint"],
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
                top_k=settings["top_k"],
                score_threshold=settings["score_threshold"],
                object_threshold=settings["object_threshold"],
                image_path=item.path,
            )
            for prediction, item in zip(predictions, batch)
        ]

    # ------------------------------------------------------------------ the one-call API
    def __call__(self, images: ImageInput | Sequence[ImageInput], **options: Any) -> SceneGraph | list[SceneGraph]:
        """Predict the scene graph of one image, or of each image of a list (in batches of `batch_size`).

        Args:
            images: a path, PIL image, (H, W, 3) uint8 / float [0, 1] array or (3, H, W) tensor, or a list of them.
            options: per-call `top_k`, `score_threshold`, `graph_constraint`, `object_threshold`.

        Returns:
            A `SceneGraph` for a single image, a list of them for a list.
        """
        if _is_single_image(images):
            return self.predict_batch([images], **options)[0]  # type: ignore[list-item]
        results: list[SceneGraph] = []
        for chunk in _chunks(list(images), self.batch_size):  # type: ignore[arg-type]
            results.extend(self.predict_batch(chunk, **options))
        return results

    def predict_batch(self, images: Sequence[ImageInput], **options: Any) -> list[SceneGraph]:
        """One forward pass over all `images` (no splitting into `batch_size` chunks)."""
        self._settings(**options)  # fail on a misspelt option before the expensive part
        batch = [self.prepare(image) for image in images]
        return self.postprocess(self.forward(batch), batch, **options)

    # ------------------------------------------------------------------ helpers
    def _settings(self, **options: Any) -> dict[str, Any]:
        settings = {
            "top_k": self.top_k,
            "score_threshold": self.score_threshold,
            "graph_constraint": self.graph_constraint,
            "object_threshold": self.object_threshold,
        }
        unknown = set(options) - set(settings)
        if unknown:
            raise TypeError(f"unknown prediction options {sorted(unknown)}; expected some of {sorted(settings)}")
        settings.update(options)
        return settings

    def autocast_context(self) -> contextlib.AbstractContextManager:
        """`torch.autocast` for bfloat16/float16, a no-op for float32."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def __repr__(self) -> str:
        return (
            f"Predictor({self.config.backbone}, {self.config.num_labels} classes, {self.config.num_rel_labels} "
            f"predicates, device={self.device}, dtype={str(self.dtype).removeprefix('torch.')}, "
            f"image_size={self.image_size}, max_size={self.max_size}, top_k={self.top_k})"
        )


def to_pil_image(image: Image.Image | np.ndarray | torch.Tensor) -> Image.Image:
    """RGB PIL image from a PIL image, an (H, W, 3|4) / (H, W) array (uint8, or float in [0, 1]) or a (3, H, W)
    tensor (float in [0, 1] or uint8)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        if tensor.dim() == 3 and tensor.shape[0] in (1, 3) and tensor.shape[-1] not in (3, 4):
            tensor = tensor.permute(1, 2, 0)  # (C, H, W) -> (H, W, C)
        image = tensor.numpy()
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or 0 in array.shape:
        raise ValueError(f"expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating):
            if np.nanmin(array) < 0 or np.nanmax(array) > 1:
                raise ValueError("float image arrays must hold values in [0, 1]; pass uint8 for 0..255")
            array = np.rint(np.nan_to_num(array) * 255)
        elif array.min() < 0 or array.max() > 255:
            raise ValueError(f"integer image arrays must hold values in 0..255, got {array.min()}..{array.max()}")
        array = array.astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def _is_single_image(images: Any) -> bool:
    # A stacked array/tensor counts as one image: a batch must be given as a list.
    return isinstance(images, (str, Path, Image.Image, np.ndarray, torch.Tensor))


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last may be shorter), consuming `items` lazily."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


# ================================================================================================== many files
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def expand_image_paths(inputs: Sequence[str | Path], recursive: bool = False) -> tuple[list[Path], list[str]]:
    """Turn command-line inputs into image files.

    A file is taken as given (whatever its suffix, so that a misnamed image is still tried); a folder gives the
    files with an image suffix inside it (sorted; with `recursive`, also in sub-folders); anything else is tried as
    a glob pattern (for shells that pass patterns through unexpanded).

    Returns:
        (unique files in input order, inputs that matched nothing).
    """
    import glob

    paths: list[Path] = []
    unmatched: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            found = [path]
        elif path.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found = sorted(Path(match) for match in glob.glob(str(item), recursive=recursive) if Path(match).is_file())
        if not found:
            unmatched.append(str(item))
        paths.extend(found)
    unique = list(dict.fromkeys(paths))  # keep the first occurrence of a file named twice
    return unique, unmatched


@dataclass
class FilesReport:
    """What `predict_files` did: one JSON (and drawings) per processed image, and the files it skipped."""

    outputs: dict[str, list[Path]]  # image path -> files written for it
    failures: dict[str, str]  # image path -> why it was skipped


def predict_files(
    predictor: Predictor,
    paths: Sequence[Path],
    out_dir: str | Path,
    *,
    draw_formats: Sequence[str] = ("png",),
    max_draw_relations: int | None = 40,
    dpi: int = 120,
    progress: bool = True,
    decode_workers: int = 2,
) -> FilesReport:
    """Predict every image file, writing `<out_dir>/<name>.json` and `<out_dir>/<name>.<format>` drawings.

    Images that cannot be read are logged and recorded in the report; the others are still processed. Output
    names are the image stems, made unique with the parent folder name (and a counter) where two images share one.

    Args:
        predictor: the model wrapper; its `batch_size` images go through one forward pass.
        paths: image files (see `expand_image_paths`).
        out_dir: created if missing.
        draw_formats: drawing formats ("png", "svg", "pdf"); empty = JSON only.
        max_draw_relations: relations shown in a drawing (the JSON keeps all of them).
        dpi: resolution of raster drawings.
        progress: show a tqdm progress bar.
        decode_workers: threads that decode and resize the next images while the model runs (PIL releases the
            GIL while decoding and resizing, so this keeps a second core busy); 0 decodes in the calling thread.
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    formats = [fmt.lower().lstrip(".") for fmt in draw_formats]
    if formats:
        _require_drawing_libraries()
    stems = _unique_stems(paths)
    report = FilesReport(outputs={}, failures={})
    # logging_redirect_tqdm: warnings about skipped files print above the bar instead of breaking it
    with (
        logging_redirect_tqdm(),
        tqdm(total=len(paths), unit="image", disable=not progress, dynamic_ncols=True) as bar,
    ):
        # Decoding runs ahead in threads while the model works on the current chunk.
        for chunk in _chunks(_prepare_ahead(predictor, paths, decode_workers), predictor.batch_size):
            prepared = []
            for path, item in chunk:
                if isinstance(item, Exception):
                    report.failures[str(path)] = str(item)
                    logger.warning("skipped %s", item)
                    bar.update(1)
                else:
                    prepared.append(item)
            if not prepared:
                continue
            graphs = predictor.postprocess(predictor.forward(prepared), prepared)
            for item, graph in zip(prepared, graphs):
                stem = stems[Path(item.path)]  # type: ignore[arg-type]
                written = [out_dir / f"{stem}.json"]
                graph.to_json(written[0])
                for fmt in formats:
                    written.append(out_dir / f"{stem}.{fmt}")
                    graph.draw(written[-1], image=item.image, max_relations=max_draw_relations, dpi=dpi)
                report.outputs[str(item.path)] = written
                bar.update(1)
    return report


def _prepare_ahead(
    predictor: Predictor, paths: Sequence[Path], workers: int
) -> Iterator[tuple[Path, PreparedImage | Exception]]:
    """Yield (path, prepared image or the error that made it unreadable) in input order, decoding up to
    `2 * workers` images ahead in a thread pool."""
    from egtr.data.errors import DataError

    def prepare(path: Path) -> PreparedImage | Exception:
        try:
            return predictor.prepare(path)
        except (DataError, OSError, ValueError) as error:
            return error

    if workers <= 0:
        yield from ((path, prepare(path)) for path in paths)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="egtr-decode") as pool:
        pending: deque = deque()
        for path in paths:
            pending.append((path, pool.submit(prepare, path)))
            if len(pending) > 2 * workers:
                done_path, future = pending.popleft()
                yield done_path, future.result()
        while pending:
            done_path, future = pending.popleft()
            yield done_path, future.result()


def _require_drawing_libraries() -> None:
    import importlib.util

    missing = [name for name in ("matplotlib", "networkx") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"drawing needs {' and '.join(missing)}: pip install 'egtr[viz]' (or skip drawings)")


def _unique_stems(paths: Sequence[Path]) -> dict[Path, str]:
    """Output name per image: the stem, or `<parent>_<stem>` / `<stem>_<n>` where stems collide."""
    counts: dict[str, int] = {}
    for path in paths:
        counts[path.stem] = counts.get(path.stem, 0) + 1
    names: dict[Path, str] = {}
    taken: set[str] = set()
    for path in paths:
        name = path.stem if counts[path.stem] == 1 else f"{path.parent.name}_{path.stem}{path.suffix.replace('.', '_')}"
        candidate, number = name, 1
        while candidate in taken:
            number += 1
            candidate = f"{name}_{number}"
        taken.add(candidate)
        names[path] = candidate
    return names
