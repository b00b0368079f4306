"""A human-readable summary of a model, optionally with one timed forward pass on an image (`egtr info`)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from egtr.config import EGTRConfig
from egtr.data.transforms import make_eval_transform
from egtr.images import load_image
from egtr.models import EGTR, read_checkpoint
from egtr.preprocessing import PreprocessorConfig


def describe_model(model_path: str | Path | None = None, image_path: str | Path | None = None) -> str:
    """Describe the model at `model_path` (default: the paper's VG configuration with random weights).

    With `image_path`, the image goes through the evaluation pipeline (the model directory's
    `preprocessor_config.json` when it has one, else shorter side 800, longer <= 1333) and one forward pass; the
    summary then lists the output shapes, the time taken and the most confident objects.
    """
    model = EGTR.from_checkpoint(read_checkpoint(model_path)) if model_path else EGTR(EGTRConfig()).eval()
    config = model.config
    total = sum(parameter.numel() for parameter in model.parameters())
    trainable = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
    lines = [
        f"model: {model_path or 'EGTR (VG configuration, random weights)'}",
        (
            f"backbone {config.backbone}, d_model {config.d_model}, {config.encoder_layers}+{config.decoder_layers} "
            f"layers, {config.num_queries} queries, {config.num_labels} classes, {config.num_rel_labels} predicates"
        ),
        f"parameters: {total:,} ({trainable:,} trainable)",
    ]
    if image_path is None:
        return "\n".join(lines)

    preprocessing = model.preprocessor or PreprocessorConfig()
    image = load_image(image_path)
    empty_target = {"boxes": torch.zeros(0, 4), "class_labels": torch.zeros(0, dtype=torch.long)}
    pixel_values, _ = make_eval_transform(preprocessing)(image, empty_target)
    start = time.perf_counter()
    with torch.no_grad():
        output = model(pixel_values[None])
    elapsed = time.perf_counter() - start
    # Object confidence as the evaluation ranks it: softmax over the class logits (reference §5).
    scores, labels = output.logits[0].softmax(-1).max(-1)
    top = scores.argsort(descending=True)[:5]
    names = config.id2label
    lines += [
        (
            f"image: {image_path} {image.size[0]}x{image.size[1]} -> input {tuple(pixel_values.shape[1:])}, "
            f"forward {elapsed:.2f} s on {torch.get_num_threads()} CPU threads"
        ),
        (
            f"outputs: logits {tuple(output.logits.shape)}, pred_boxes {tuple(output.pred_boxes.shape)}, "
            f"pred_rel {tuple(output.pred_rel.shape)}, pred_connectivity {tuple(output.pred_connectivity.shape)}"
        ),
        "most confident queries: " + ", ".join(f"{names[int(labels[i])]} {float(scores[i]):.2f}" for i in top),
    ]
    return "\n".join(lines)
