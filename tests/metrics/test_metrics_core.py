"""Box overlaps (+1-pixel and PySGG conventions), the ground-truth record and its construction from a target."""

import numpy as np
import pytest
import torch

from egtr.metrics import SceneGroundTruth, ground_truth_from_target, unique_relations
from egtr.metrics.core import paired_iou_inclusive, paired_iou_open_images, pairwise_iou_inclusive


def test_inclusive_iou_matches_the_cython_check():
    # The reference's own check of `bbox_overlaps`: 25 / 175.
    assert paired_iou_inclusive(np.array([[0, 0, 9, 9]]), np.array([[5, 5, 14, 14]]))[0] == 25 / 175
    # Boxes that share one pixel column overlap in the inclusive convention; disjoint ones give 0.
    assert paired_iou_inclusive(np.array([[0, 0, 9, 9]]), np.array([[9, 0, 18, 9]]))[0] == 10 / 190
    assert paired_iou_inclusive(np.array([[0, 0, 9, 9]]), np.array([[10, 0, 19, 9]]))[0] == 0.0


def test_pairwise_agrees_with_paired():
    generator = np.random.default_rng(0)
    corners = generator.uniform(0, 50, (6, 2))
    boxes = np.concatenate([corners, corners + generator.uniform(1, 40, (6, 2))], 1)
    matrix = pairwise_iou_inclusive(boxes[:4], boxes[4:])
    assert matrix.shape == (4, 2)
    assert matrix[3, 1] == paired_iou_inclusive(boxes[3:4], boxes[5:6])[0]


def test_open_images_iou_quirk():
    # +1 on the intersection but not on the areas: identical boxes give 121 / 79 > 1 (kept from PySGG).
    box = np.array([[0, 0, 10, 10]], np.float32)
    assert paired_iou_open_images(box, box)[0] == np.float32(121) / np.float32(79)
    assert paired_iou_open_images(box, box).dtype == np.float32


def test_unique_relations_sorts_and_deduplicates():
    relations = np.array([[2, 0, 1], [0, 1, 3], [2, 0, 1], [0, 1, 0]])
    assert unique_relations(relations).tolist() == [[0, 1, 0], [0, 1, 3], [2, 0, 1]]
    assert unique_relations(np.zeros((0, 3))).shape == (0, 3)


def test_ground_truth_from_target_reproduces_the_reference_pixels(vg_ground_truth_json):
    for image in vg_ground_truth_json["images"]:
        target = {
            "boxes": torch.tensor(image["boxes_cxcywh_normalized"], dtype=torch.float32),
            "class_labels": torch.tensor(image["gt_classes"]),
            "relations": torch.tensor(image["gt_relations"][::-1]),  # any order: sorted again
            "orig_size": torch.tensor(image["orig_size_hw"]),
            "image_id": torch.tensor(7),
        }
        truth = ground_truth_from_target(target)
        np.testing.assert_array_equal(truth.boxes, np.asarray(image["gt_boxes_xyxy"], np.float32))
        assert truth.relations.tolist() == image["gt_relations"] and truth.image_id == 7


def test_validate_names_the_field():
    good = SceneGroundTruth(np.zeros((2, 4)), np.zeros(2, np.int64), np.array([[0, 1, 0]]))
    assert good.validate() is good
    with pytest.raises(ValueError, match="image 3: field 'relations'"):
        SceneGroundTruth(np.zeros((2, 4)), np.zeros(2, np.int64), np.array([[0, 2, 0]])).validate("image 3")
    with pytest.raises(ValueError, match="field 'labels'"):
        SceneGroundTruth(np.zeros((2, 4)), np.zeros(3, np.int64), np.zeros((0, 3))).validate()
