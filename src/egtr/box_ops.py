"""Box conversions and overlaps shared by the model, losses, data and inference (torch tensors).

Boxes are (..., 4). "cxcywh" = centre x, centre y, width, height; "xyxy" = corners. Formulas follow DETR's
`util/box_ops.py` (GIoU: Rezatofighi et al., CVPR 2019).
"""

from __future__ import annotations

import torch


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    center_x, center_y, width, height = boxes.unbind(-1)
    return torch.stack(
        [center_x - 0.5 * width, center_y - 0.5 * height, center_x + 0.5 * width, center_y + 0.5 * height], dim=-1
    )


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairwise IoU of xyxy boxes (N, 4) x (M, 4) -> (N, M); also returns the union areas."""
    area1, area2 = box_area(boxes1), box_area(boxes2)
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2)
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(-1)  # (N, M)
    union = area1[:, None] + area2[None, :] - intersection
    return intersection / union, union


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise generalised IoU of xyxy boxes (N, 4) x (M, 4) -> (N, M)."""
    iou, union = box_iou(boxes1, boxes2)
    top_left = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    enclosing_area = (bottom_right - top_left).clamp(min=0).prod(-1)
    return iou - (enclosing_area - union) / enclosing_area


def scale_boxes_to_pixels(boxes_cxcywh: torch.Tensor, image_sizes_hw: torch.Tensor) -> torch.Tensor:
    """Normalised cxcywh (B, N, 4) -> absolute xyxy pixels given each image's (height, width) (B, 2)."""
    height, width = image_sizes_hw.unbind(-1)
    scale = torch.stack([width, height, width, height], dim=-1).to(boxes_cxcywh.dtype)  # (B, 4)
    return box_cxcywh_to_xyxy(boxes_cxcywh) * scale[:, None, :]
