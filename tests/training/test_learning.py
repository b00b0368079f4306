"""It learns: the engine trains the tiny model on a small synthetic world; the loss falls and the detector and the
relation head beat chance on the images they were trained on (a check of the engine, not a benchmark)."""

from __future__ import annotations

import csv
import dataclasses
from collections import Counter
from pathlib import Path

import pytest
import torch
from tests.training.conftest import IMAGE_SIZE, tiny_train_config

from egtr import EGTR
from egtr.box_ops import box_cxcywh_to_xyxy, box_iou
from egtr.config import LossConfig
from egtr.data import build_dataset, collate_fn
from egtr.data.synthetic import generate_synthetic_dataset
from egtr.training import SceneGraphDataModule, build_initial_model, train_egtr

# Four scenes, one full batch per step: the tiny model memorises them in well under 100 steps.
NUM_TRAIN_IMAGES = 4
STEPS = 100
LEARNING_RATE = 2e-3


@torch.no_grad()
def scores_on(model: EGTR, dataset) -> dict[str, float]:
    """Per ground-truth object: the query whose box overlaps it most; its IoU and class; predicate of GT pairs."""
    model.eval()
    batch = collate_fn([dataset[index] for index in range(len(dataset))])
    outputs = model(batch["pixel_values"], batch["pixel_mask"])
    ious, class_hits, predicate_hits = [], [], []
    for image, target in enumerate(batch["labels"]):
        overlap = box_iou(box_cxcywh_to_xyxy(target["boxes"]), box_cxcywh_to_xyxy(outputs.pred_boxes[image]))[0]
        best_iou, query = overlap.max(dim=1)  # (objects,)
        ious.extend(best_iou.tolist())
        class_hits.extend((outputs.logits[image, query].argmax(-1) == target["class_labels"]).tolist())
        for subject, obj, predicate in target["relations"].tolist():
            scores = outputs.pred_rel[image, query[subject], query[obj]]  # (R,)
            predicate_hits.append(int(scores.argmax()) == predicate)
    return {
        "mean_iou": sum(ious) / len(ious),
        "class_accuracy": sum(class_hits) / len(class_hits),
        "predicate_accuracy": sum(predicate_hits) / len(predicate_hits),
    }


def majority_rates(dataset) -> dict[str, float]:
    """Accuracy of always answering the most frequent class / predicate (the chance level to beat)."""
    classes, predicates = Counter(), Counter()
    for target in dataset.annotation_targets():
        classes.update(target["class_labels"].tolist())
        predicates.update(target["relations"][:, 2].tolist())
    return {
        "class_accuracy": max(classes.values()) / sum(classes.values()),
        "predicate_accuracy": max(predicates.values()) / sum(predicates.values()),
    }


def train_losses(metrics_file: Path) -> list[float]:
    with open(metrics_file, newline="") as handle:
        return [float(row["train_loss"]) for row in csv.DictReader(handle) if row.get("train_loss")]


def config_data(root: Path):
    from egtr.data import DataConfig

    return DataConfig.for_synthetic(str(root), image_size=IMAGE_SIZE, train_sizes=(IMAGE_SIZE,))


@pytest.mark.slow
def test_training_reduces_the_loss_and_beats_chance(tmp_path: Path):
    root = generate_synthetic_dataset(tmp_path / "world", NUM_TRAIN_IMAGES, 2, 1, 64, seed=3)
    config = tiny_train_config(
        root,
        tmp_path / "run",
        max_epochs=STEPS,
        batch_size=NUM_TRAIN_IMAGES,
        limit_train_batches=None,
        lr=LEARNING_RATE,
        lr_backbone=0.0,
        lr_relation_head=LEARNING_RATE,
        early_stopping_patience=0,
        val_every_n_epochs=STEPS // 2,
        data=dataclasses.replace(config_data(root), horizontal_flip_prob=0.0),
        # From scratch and in a few steps the detector needs a larger share of the loss than the paper's weights
        # (tuned for a pre-trained detector) give it.
        loss=LossConfig(rel_loss_coefficient=1.0, connectivity_loss_coefficient=1.0),
    )
    train_set = build_dataset(config.data, "train", train=False)
    chance = majority_rates(train_set)
    torch.manual_seed(0)
    datamodule = SceneGraphDataModule(config.data, config.batch_size, num_workers=0)
    datamodule.setup()
    before = scores_on(build_initial_model(config, datamodule), train_set)
    assert before["class_accuracy"] <= chance["class_accuracy"] and before["mean_iou"] < 0.2
    result = train_egtr(config)
    model = EGTR.from_pretrained(tmp_path / "run" / "main" / "checkpoints" / "last.ckpt")
    after = scores_on(model, train_set)
    losses = train_losses(tmp_path / "run" / "main" / "version_0" / "metrics.csv")
    assert result.passes[0].global_step == STEPS and len(losses) == STEPS
    window = STEPS // 5
    assert sum(losses[-window:]) / window < 0.6 * sum(losses[:window]) / window  # the loss fell
    # Before training every score is near zero (checked in the first lines of the test); after it, the detector
    # finds the objects and names them, and the relation head names the predicates, well above chance.
    report = f"before {before}, after {after}, chance {chance}"
    print(report)
    assert after["mean_iou"] > 0.35, report
    assert after["class_accuracy"] > chance["class_accuracy"] + 0.25, report
    assert after["predicate_accuracy"] > chance["predicate_accuracy"] + 0.1, report
