"""Inference in three parts, any runtime: images -> model runtime -> post-processing.

| part | module |
|---|---|
| images -> `pixel_values`, `pixel_mask` (`ImageProcessor`) | `egtr.inference.processor` |
| the network in PyTorch, ONNX Runtime or OpenVINO (`ModelRuntime`) | `egtr.inference.runtimes`, `.loading` |
| ranking, selection into `SceneGraph`s (pure functions) | `egtr.inference.postprocess`, `.options`, `.scene_graph` |
| given boxes (PredCls / SGCls) and the `--boxes` file | `egtr.inference.given_boxes`, `.boxes_file` |
| the facade (`Predictor`), many files, drawings | `egtr.inference.predictor`, `.files`, `.visualize` |
| `egtr export`: ONNX / OpenVINO folders | `egtr.inference.export` |
"""

from egtr.inference.options import PredictionOptions
from egtr.inference.predictor import Predictor, batched
from egtr.inference.processor import ImageProcessor, ModelInputs, PreparedImage
from egtr.inference.runtimes import RUNTIMES, ModelOutputs, ModelRuntime, OnnxRuntimeModel, OpenVinoModel, TorchRuntime
from egtr.inference.scene_graph import SceneGraph, SceneObject, SceneRelation

__all__ = [
    "RUNTIMES",
    "ImageProcessor",
    "ModelInputs",
    "ModelOutputs",
    "ModelRuntime",
    "OnnxRuntimeModel",
    "OpenVinoModel",
    "PredictionOptions",
    "Predictor",
    "PreparedImage",
    "SceneGraph",
    "SceneObject",
    "SceneRelation",
    "TorchRuntime",
    "batched",
]
