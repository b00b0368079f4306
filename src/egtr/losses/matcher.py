"""Hungarian matching between object queries and ground-truth objects, with EGTR's shifted matching costs.

The matcher follows Deformable DETR (Zhu et al., ICLR 2021; DETR: Carion et al., ECCV 2020): a focal-style
class cost, an L1 box cost and a GIoU cost (Rezatofighi et al., CVPR 2019), solved per image with
`scipy.optimize.linear_sum_assignment`. EGTR (Im et al., CVPR 2024, "relation smoothing") also needs the cost
of each matched pair: the cost matrix is shifted by a per-matrix constant so that a perfect match costs
`logit(smoothing)`, and `1 - sigmoid(cost)` then turns a cost into a label weight. The shift does not change
the assignment.

See reference §3.1 (and quirk Q6: the class-cost weight is `ce_loss_coefficient` = 2, not the
config's unused `class_cost` = 1).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from egtr.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from egtr.config import LossConfig

logger = logging.getLogger(__name__)

# The epsilon inside the logs of the focal class cost (as in the original matcher).
CLASS_COST_EPSILON = 1e-8

MatchIndices = list[tuple[torch.Tensor, torch.Tensor]]


def focal_class_cost(probabilities: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Focal-loss-shaped classification cost of assigning each query to each class.

    `cost = alpha (1-p)^gamma (-log(p + 1e-8)) - (1-alpha) p^gamma (-log(1 - p + 1e-8))`, i.e. the focal loss
    of a positive minus the focal loss of a negative (Deformable DETR's matcher).

    Args:
        probabilities: (..., C) sigmoid class probabilities.
        alpha: focal alpha.
        gamma: focal gamma.

    Returns:
        (..., C) cost; lowest (best) when p -> 1.
    """
    negative_cost = (1 - alpha) * (probabilities**gamma) * (-(1 - probabilities + CLASS_COST_EPSILON).log())
    positive_cost = alpha * ((1 - probabilities) ** gamma) * (-(probabilities + CLASS_COST_EPSILON).log())
    return positive_cost - negative_cost


class HungarianMatcher:
    """One-to-one assignment of object queries to ground-truth objects, per image.

    Args:
        class_cost: weight of the focal class cost (EGTR uses `ce_loss_coefficient` = 2, quirk Q6).
        bbox_cost: weight of the L1 cost between normalised cxcywh boxes.
        giou_cost: weight of the negative GIoU cost.
        smoothing: relation-smoothing constant; when > 0, every cost matrix is shifted by
            `-c_min + logit(smoothing)` where `c_min = class_cost (1-alpha) log(1e-8) - giou_cost` is the cost
            of a perfect match. 0 disables the shift.
        focal_alpha: alpha of the class cost.
        focal_gamma: gamma of the class cost.
    """

    def __init__(
        self,
        class_cost: float = 2.0,
        bbox_cost: float = 5.0,
        giou_cost: float = 2.0,
        smoothing: float = 1e-14,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        if class_cost == 0 and bbox_cost == 0 and giou_cost == 0:
            raise ValueError("HungarianMatcher: class_cost, bbox_cost and giou_cost cannot all be 0")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"HungarianMatcher: smoothing must be in [0, 1), got {smoothing}")
        self.class_cost = class_cost
        self.bbox_cost = bbox_cost
        self.giou_cost = giou_cost
        self.smoothing = smoothing
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    @classmethod
    def from_loss_config(cls, loss_config: LossConfig) -> HungarianMatcher:
        """The matcher EGTR builds: cost weights = loss coefficients (class weight = ce coefficient, Q6)."""
        return cls(
            class_cost=loss_config.ce_loss_coefficient,
            bbox_cost=loss_config.bbox_loss_coefficient,
            giou_cost=loss_config.giou_loss_coefficient,
            smoothing=loss_config.smoothing,
            focal_alpha=loss_config.focal_alpha,
            focal_gamma=loss_config.focal_gamma,
        )

    # ------------------------------------------------------------------ constants of the shift
    @property
    def minimum_cost(self) -> float:
        """`c_min`: cost of a perfect match (p -> 1, L1 = 0, GIoU = 1), in float32 (-29.63102 by default)."""
        log_epsilon = torch.log(torch.tensor(CLASS_COST_EPSILON, dtype=torch.float32))
        return float(self.class_cost * (1 - self.focal_alpha) * log_epsilon - self.giou_cost)

    @property
    def logit_smoothing(self) -> float:
        """`logit(smoothing) = -log(1/smoothing - 1)`, float32 (-32.23619 for 1e-14); smoothing > 0."""
        return float(-torch.log(torch.tensor(1.0 / self.smoothing - 1.0, dtype=torch.float32)))

    @property
    def nonmatching_cost(self) -> float:
        """The cost given to unmatched queries, an upper bound of any shifted cost (28.605171 by default).

        `-log(1e-8) class_cost + 4 bbox_cost + 2 giou_cost + logit(smoothing)`; `1 - sigmoid` of it is exactly
        0 in float32, so unmatched queries get relation weight 0. Infinite when smoothing is off.
        """
        if self.smoothing == 0:
            return math.inf
        log_epsilon = torch.log(torch.tensor(CLASS_COST_EPSILON, dtype=torch.float32))
        return float(-log_epsilon * self.class_cost + 4 * self.bbox_cost + 2 * self.giou_cost + self.logit_smoothing)

    # ------------------------------------------------------------------ costs and assignment
    @torch.no_grad()
    def cost_matrices(
        self, logits: torch.Tensor, pred_boxes: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]]
    ) -> list[torch.Tensor]:
        """Shifted cost matrices, one per image, on the device of the predictions.

        Args:
            logits: (B, N, C) class logits (sigmoid head).
            pred_boxes: (B, N, 4) normalised cxcywh boxes.
            targets: B dicts with `class_labels` (n_b,) int64 and `boxes` (n_b, 4) normalised cxcywh.

        Returns:
            B tensors of shape (N, n_b), float32: `C' = bbox_cost L1 + class_cost focal + giou_cost (-GIoU)`
            shifted by `-c_min + logit(smoothing)` when smoothing > 0.
        """
        if len(targets) != logits.shape[0]:
            raise ValueError(f"HungarianMatcher: {len(targets)} targets for a batch of {logits.shape[0]} predictions")
        probabilities = logits.float().sigmoid()  # (B, N, C)
        boxes = pred_boxes.float()
        class_costs = focal_class_cost(probabilities, self.focal_alpha, self.focal_gamma)  # (B, N, C)
        matrices = []
        for image_index, target in enumerate(targets):
            target_classes = target["class_labels"].to(logits.device)
            target_boxes = target["boxes"].to(device=logits.device, dtype=torch.float32)
            if target_boxes.ndim != 2 or target_boxes.shape[-1] != 4 or len(target_boxes) != len(target_classes):
                raise ValueError(
                    f"target {image_index}: 'boxes' must be (n, 4) and match 'class_labels' (n,), got "
                    f"{tuple(target_boxes.shape)} and {tuple(target_classes.shape)}"
                )
            class_cost = class_costs[image_index][:, target_classes]  # (N, n_b)
            bbox_cost = torch.cdist(boxes[image_index], target_boxes, p=1)  # (N, n_b)
            giou_cost = -generalized_box_iou(
                box_cxcywh_to_xyxy(boxes[image_index]), box_cxcywh_to_xyxy(target_boxes)
            )  # (N, n_b)
            cost = self.bbox_cost * bbox_cost + self.class_cost * class_cost + self.giou_cost * giou_cost
            if self.smoothing:
                # Two separate float32 steps, in the original's order, so the costs are bit-comparable.
                cost = cost - self.minimum_cost
                cost = cost + self.logit_smoothing
            matrices.append(cost)
        return matrices

    @torch.no_grad()
    def __call__(
        self, logits: torch.Tensor, pred_boxes: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]]
    ) -> tuple[MatchIndices, list[torch.Tensor]]:
        """Match queries to targets in every image.

        Args:
            logits: (B, N, C) class logits.
            pred_boxes: (B, N, 4) normalised cxcywh boxes.
            targets: B dicts with `class_labels` (n_b,) and `boxes` (n_b, 4).

        Returns:
            indices: B pairs `(query_indices, target_indices)`, int64 CPU tensors of length min(N, n_b), query
                indices ascending (scipy's order).
            matching_costs: B float32 tensors (min(N, n_b),) on the device of `logits`: the shifted cost of
                each matched pair, in the order of `indices`.
        """
        matrices = self.cost_matrices(logits, pred_boxes, targets)
        sizes = [matrix.shape[1] for matrix in matrices]
        # One device-to-host copy for the whole batch: the assignment itself runs on the CPU.
        all_costs = torch.cat(matrices, dim=1).cpu() if matrices else torch.zeros(0, 0)
        indices: MatchIndices = []
        matching_costs: list[torch.Tensor] = []
        for image_index, cost in enumerate(all_costs.split(sizes, dim=1)):
            cost_array = cost.numpy()
            if not np.isfinite(cost_array).all():
                raise ValueError(
                    f"HungarianMatcher: image {image_index} has a non-finite matching cost (NaN/inf in the "
                    "predicted logits or boxes, or a degenerate target box)"
                )
            query_indices, target_indices = linear_sum_assignment(cost_array)
            query_tensor = torch.as_tensor(query_indices, dtype=torch.int64)
            target_tensor = torch.as_tensor(target_indices, dtype=torch.int64)
            indices.append((query_tensor, target_tensor))
            matching_costs.append(cost[query_tensor, target_tensor].to(logits.device))
        return indices, matching_costs
