"""EGTR training criterion: detection, smoothed relation and connectivity losses, and their weighted total.

Follows the structure of DETR's `SetCriterion` (Carion et al., ECCV 2020): a separate Hungarian matcher, one
`loss_<name>` method per term, and the weights applied once from `weight_dict`. The terms are those of EGTR
(Im et al., CVPR 2024, paper §3 "relation smoothing" and "connectivity prediction"); see reference §3.

Differences from the original code, all documented choices:
  * relation targets are built on the fly from `target["relations"]` (M, 3) directly in query space (the
    loader provides no dense N x N x R tensor); the losses are the original's up to the permutation of
    queries, which none of the terms depends on (sampled negatives are chosen by logit, so ties have identical
    losses);
  * `num_boxes` is the local batch count as in the original (quirk Q9); `all_reduce_num_boxes=True` averages
    it over the DDP ranks instead (DETR's behaviour) when `torch.distributed` is initialised;
  * `cardinality_error` (quirk Q10): the original counted queries whose argmax is not the last class, which
    means nothing for a sigmoid head. Here it is the mean absolute difference between the number of queries
    whose best class probability exceeds 0.5 and the number of ground-truth objects. It is logged only;
  * `eos_coefficient` does not exist here (quirk Q11: unused by the focal loss);
  * a batch without any relation gives `loss_rel` = 0 and `uncertainty` = 0 instead of the original's NaN.

No host-device synchronisation happens per step apart from the matching (`match`: the matcher's copy of the cost
matrices to the CPU, and the copy of the assignment back to the device right after it): no `.item()`, no
data-dependent shapes (boolean masks, `nonzero`), no tensor built from Python data on the device. Targets are
expected on the outputs' device (Lightning moves the batch there); CPU targets with device outputs cost a
host-to-device copy per use. `tests/losses/test_no_host_sync.py` checks this.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from egtr.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from egtr.config import LossConfig
from egtr.losses.functional import (
    relation_targets_in_query_space,
    sample_relation_entries,
    sigmoid_focal_loss,
)
from egtr.losses.matcher import HungarianMatcher, MatchIndices

logger = logging.getLogger(__name__)

DETECTION_LOSSES = ("loss_ce", "loss_bbox", "loss_giou")


@dataclass
class Matching:
    """The Hungarian assignment of one decoder layer, with its tensors laid out per query.

    Attributes:
        indices: B pairs (query indices, target indices), int64 CPU tensors (matcher order).
        matching_costs: B float32 tensors of the matched pairs' shifted costs.
        matched: (B, N) bool, queries matched to a ground-truth object.
        query_costs: (B, N) float32 shifted matching cost per query, `nonmatching_cost` for unmatched queries.
        target_to_query: (B, T_max) int64, matched query of every ground-truth object, -1 if none.
        pair_index: (3, K) int64 over the K matched pairs of the batch: image, query, and the target's row in
            the batch-concatenated targets.
        target_counts: (B,) float32 number of ground-truth objects per image.
    """

    indices: MatchIndices
    matching_costs: list[torch.Tensor]
    matched: torch.Tensor
    query_costs: torch.Tensor
    target_to_query: torch.Tensor
    pair_index: torch.Tensor
    target_counts: torch.Tensor


def _field(outputs: object, name: str, required: bool = True) -> Any:
    """Read `name` from a model-output dataclass or a dict."""
    value = outputs.get(name) if isinstance(outputs, Mapping) else getattr(outputs, name, None)
    if value is None and required:
        raise ValueError(f"EGTRCriterion: the model outputs have no '{name}'")
    return value


class EGTRCriterion(nn.Module):
    """The EGTR loss (or the plain detector loss when `use_relation_losses=False`, for detector pre-training).

    Args:
        loss_config: weights, focal parameters, smoothing and relation sampling (VG defaults;
            `LossConfig.for_open_images()` for Open Images).
        num_labels: number of object classes C.
        num_rel_labels: number of predicates R.
        use_relation_losses: False computes only the detection losses (no relations needed in the targets).
        num_decoder_layers: decoder depth; with `loss_config.auxiliary_loss` the layers 0..L-2 get their own
            losses with keys suffixed `_{i}`.
        all_reduce_num_boxes: normalise by the box count averaged over DDP ranks (DETR) instead of the local
            count (original EGTR, quirk Q9). Ignored unless `torch.distributed` is initialised.
        matcher: a custom matcher; by default the one EGTR builds from `loss_config`.
        generator: random generator of the random relation sampling modes (must be on the outputs' device).
    """

    def __init__(
        self,
        loss_config: LossConfig,
        num_labels: int,
        num_rel_labels: int,
        use_relation_losses: bool = True,
        num_decoder_layers: int = 6,
        all_reduce_num_boxes: bool = False,
        matcher: HungarianMatcher | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.loss_config = loss_config
        self.num_labels = num_labels
        self.num_rel_labels = num_rel_labels
        self.use_relation_losses = use_relation_losses
        self.num_decoder_layers = num_decoder_layers
        self.all_reduce_num_boxes = all_reduce_num_boxes
        self.matcher = matcher if matcher is not None else HungarianMatcher.from_loss_config(loss_config)
        self.generator = generator
        self.weight_dict = self._build_weight_dict()

    def _build_weight_dict(self) -> dict[str, float]:
        config = self.loss_config
        weights = {
            "loss_ce": config.ce_loss_coefficient,
            "loss_bbox": config.bbox_loss_coefficient,
            "loss_giou": config.giou_loss_coefficient,
        }
        if self.use_relation_losses:
            weights["loss_rel"] = config.rel_loss_coefficient
            weights["loss_connectivity"] = config.connectivity_loss_coefficient
        if config.auxiliary_loss:
            # Relation and connectivity losses exist for the final layer only (reference §3.5).
            for layer in range(self.num_decoder_layers - 1):
                weights.update({f"{name}_{layer}": weights[name] for name in DETECTION_LOSSES})
        return weights

    # ------------------------------------------------------------------ matching
    def match(self, logits: torch.Tensor, pred_boxes: torch.Tensor, targets: Sequence[Mapping]) -> Matching:
        """Run the matcher and lay its result out per query (see `Matching`)."""
        batch_size, num_queries = logits.shape[:2]
        indices, matching_costs = self.matcher(logits, pred_boxes, targets)
        target_counts = [len(target["class_labels"]) for target in targets]
        # Built on the CPU, where the assignment lives, and copied to the device in one int64 buffer right after
        # the matcher's device-to-host copy (the one synchronisation point), so the copy waits on no queued work.
        matched = torch.zeros(batch_size, num_queries, dtype=torch.int64)
        target_to_query = torch.full((batch_size, max([*target_counts, 1])), -1, dtype=torch.int64)
        pair_rows, offset = [], 0
        for image_index, (query_indices, target_indices) in enumerate(indices):
            matched[image_index, query_indices] = 1
            target_to_query[image_index, target_indices] = query_indices
            image_column = torch.full_like(query_indices, image_index)
            pair_rows.append(torch.stack([image_column, query_indices, target_indices + offset]))  # (3, k_b)
            offset += target_counts[image_index]
        device = logits.device
        host_parts = [
            torch.cat(pair_rows, dim=1),  # (3, K)
            target_to_query,
            matched,
            torch.tensor(target_counts, dtype=torch.int64),
        ]
        device_buffer = torch.cat([part.flatten() for part in host_parts]).to(device)
        pair_index, target_to_query, matched, counts = (
            flat.view(part.shape)
            for flat, part in zip(device_buffer.split([part.numel() for part in host_parts]), host_parts)
        )
        query_costs = torch.full((batch_size, num_queries), self.matcher.nonmatching_cost, device=device)
        query_costs[pair_index[0], pair_index[1]] = torch.cat(matching_costs)
        return Matching(
            indices, matching_costs, matched.bool(), query_costs, target_to_query, pair_index, counts.float()
        )

    def _num_boxes(self, targets: Sequence[Mapping], device: torch.device) -> torch.Tensor:
        """Normaliser of the detection losses: ground-truth box count, clamped >= 1 (a tensor: no sync)."""
        # A fill kernel, not `torch.tensor(...)`: a tensor built from Python data is a host-to-device copy.
        num_boxes = torch.full((), float(sum(len(target["class_labels"]) for target in targets)), device=device)
        if self.all_reduce_num_boxes and dist.is_available() and dist.is_initialized():
            dist.all_reduce(num_boxes)
            num_boxes = num_boxes / dist.get_world_size()
        return num_boxes.clamp(min=1)

    # ------------------------------------------------------------------ detection terms
    def loss_labels(
        self, logits: torch.Tensor, targets: Sequence[Mapping], matching: Matching, num_boxes: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Sigmoid focal classification loss, summed over queries and classes, divided by `num_boxes`.

        Unmatched queries have an all-zero target (no "no-object" class). Original: `.mean(1).sum() /
        num_boxes * N`.
        """
        batch_index, query_index, matched_classes = self._matched_targets(targets, matching, "class_labels")
        # Scattered into zeros (F.one_hot checks its input's range with `.item()` on some devices); the value is
        # a device tensor, as a Python scalar would be copied from the host.
        one_hot = torch.zeros_like(logits).index_put_(
            (batch_index, query_index, matched_classes.long()), logits.new_ones(())
        )  # (B, N, C), all zeros for unmatched queries
        loss = sigmoid_focal_loss(logits, one_hot, self.loss_config.focal_alpha, self.loss_config.focal_gamma)
        return {"loss_ce": loss.sum() / num_boxes}

    def _matched_boxes(
        self, pred_boxes: torch.Tensor, targets: Sequence[Mapping], matching: Matching
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted and ground-truth cxcywh boxes of the matched pairs, (num_matched, 4) each, prediction dtype."""
        batch_index, query_index, target_boxes = self._matched_targets(targets, matching, "boxes")
        source_boxes = pred_boxes[batch_index, query_index]
        return source_boxes, target_boxes.to(source_boxes.dtype)

    def loss_boxes(
        self,
        pred_boxes: torch.Tensor,
        targets: Sequence[Mapping],
        matching: Matching,
        num_boxes: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """L1 loss between matched predicted and ground-truth cxcywh boxes, divided by `num_boxes`."""
        source_boxes, target_boxes = self._matched_boxes(pred_boxes, targets, matching)
        return {"loss_bbox": F.l1_loss(source_boxes, target_boxes, reduction="none").sum() / num_boxes}

    def loss_giou(
        self,
        pred_boxes: torch.Tensor,
        targets: Sequence[Mapping],
        matching: Matching,
        num_boxes: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Sum of (1 - GIoU) over matched pairs, divided by `num_boxes`."""
        source_boxes, target_boxes = self._matched_boxes(pred_boxes, targets, matching)
        giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(source_boxes), box_cxcywh_to_xyxy(target_boxes)))
        return {"loss_giou": (1 - giou).sum() / num_boxes}

    @torch.no_grad()
    def log_cardinality(self, logits: torch.Tensor, matching: Matching) -> dict[str, torch.Tensor]:
        """|#queries with best sigmoid score > 0.5 - #objects|, mean over images (logged only; Q10)."""
        predicted_count = (logits.sigmoid().amax(-1) > 0.5).sum(1).float()  # (B,)
        return {"cardinality_error": (predicted_count - matching.target_counts).abs().mean()}

    # ------------------------------------------------------------------ relation terms
    def relation_targets(self, targets: Sequence[Mapping], matching: Matching, num_queries: int) -> torch.Tensor:
        """(B, N, N, R) multi-hot relation targets in query space, built from `target["relations"]` (M, 3)."""
        device = matching.target_to_query.device
        relation_list, batch_list = [], []
        for image_index, target in enumerate(targets):
            relations = target.get("relations")
            if relations is None:
                raise ValueError(f"target {image_index}: no 'relations' field (needed by the relation losses)")
            if relations.ndim != 2 or relations.shape[1] != 3:
                raise ValueError(f"target {image_index}: 'relations' must be (M, 3), got {tuple(relations.shape)}")
            self._check_cpu_relation_ranges(image_index, relations, len(target["class_labels"]))
            relation_list.append(relations.to(device=device, dtype=torch.int64))
            batch_list.append(torch.full((len(relations),), image_index, dtype=torch.int64, device=device))
        return relation_targets_in_query_space(
            torch.cat(relation_list),
            torch.cat(batch_list),
            matching.target_to_query,
            len(targets),
            num_queries,
            self.num_rel_labels,
        )

    def _check_cpu_relation_ranges(self, image_index: int, relations: torch.Tensor, num_objects: int) -> None:
        """Range checks of CPU-resident relations (free there; skipped on a device, where they would sync)."""
        if relations.device.type != "cpu" or not len(relations):
            return
        if relations.min() < 0 or relations[:, :2].max() >= num_objects:
            raise ValueError(f"target {image_index}: 'relations' refers to objects outside 0..{num_objects - 1}")
        if relations[:, 2].max() >= self.num_rel_labels:
            raise ValueError(f"target {image_index}: 'relations' has a predicate >= {self.num_rel_labels}")

    def query_weights(self, matching: Matching) -> torch.Tensor:
        """Relation-smoothing weight per query, (B, N): `1 - sigmoid(shifted cost)`, 0 for unmatched queries.

        With smoothing 0 (off) matched queries get weight 1 (hard labels).
        """
        if self.matcher.smoothing == 0:
            return matching.matched.float()
        weights = 1.0 - matching.query_costs.sigmoid()
        return torch.where(matching.matched, weights, torch.zeros_like(weights))

    def loss_relation(
        self,
        relation_logits: torch.Tensor,
        relation_targets: torch.Tensor,
        matching: Matching,
        training: bool,
    ) -> dict[str, torch.Tensor]:
        """Relation BCE with smoothed labels `Y[i, j, p] w_i w_j`.

        Training: mean over the sampled entries of the whole batch (`sample_relation_entries`).
        Evaluation: mean over all B N N R entries (the original's per-pair mean over R, then mean over pairs,
        is the same number).
        """
        weights = self.query_weights(matching)  # (B, N)
        smoothed = relation_targets * (weights[:, :, None, None] * weights[:, None, :, None])  # (B, N, N, R)
        per_entry = F.binary_cross_entropy_with_logits(relation_logits, smoothed, reduction="none")
        if not training:
            return {"loss_rel": per_entry.mean()}
        config = self.loss_config
        selected = sample_relation_entries(
            relation_logits,
            relation_targets,
            matching.matched,
            config.rel_sample_negatives,
            config.rel_sample_nonmatching,
            config.rel_sample_negatives_largest,
            config.rel_sample_nonmatching_largest,
            self.generator,
        )
        count = selected.sum().clamp(min=1)
        return {"loss_rel": (per_entry * selected).sum() / count}

    def loss_connectivity(
        self, connectivity_logits: torch.Tensor, relation_targets: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Unsmoothed, unsampled BCE of "this pair has any predicate", mean over B N N pairs."""
        connected = relation_targets.amax(dim=-1)  # (B, N, N)
        logits = connectivity_logits.reshape(connected.shape)  # (B, N, N, 1) -> (B, N, N)
        return {"loss_connectivity": F.binary_cross_entropy_with_logits(logits, connected)}

    @torch.no_grad()
    def log_uncertainty(self, relation_targets: torch.Tensor, matching: Matching) -> dict[str, torch.Tensor]:
        """Mean over ground-truth relation entries of sigmoid(C'_subject) sigmoid(C'_object) (logged)."""
        uncertainty = matching.query_costs.sigmoid()  # (B, N)
        pair_uncertainty = uncertainty[:, :, None, None] * uncertainty[:, None, :, None]  # (B, N, N, 1)
        total = (relation_targets * pair_uncertainty).sum()
        return {"uncertainty": total / relation_targets.sum().clamp(min=1)}

    # ------------------------------------------------------------------ helpers and forward
    @staticmethod
    def _matched_targets(
        targets: Sequence[Mapping], matching: Matching, key: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(batch index, query index, target[key] row) of every matched pair, concatenated over the batch."""
        batch_index, query_index, target_row = matching.pair_index
        values = torch.cat([target[key] for target in targets]).to(matching.pair_index.device)
        return batch_index, query_index, values[target_row]

    def _detection_losses(
        self,
        logits: torch.Tensor,
        pred_boxes: torch.Tensor,
        targets: Sequence[Mapping],
        num_boxes: torch.Tensor,
    ) -> tuple[dict[str, torch.Tensor], Matching]:
        matching = self.match(logits, pred_boxes, targets)
        losses = self.loss_labels(logits, targets, matching, num_boxes)
        losses.update(self.loss_boxes(pred_boxes, targets, matching, num_boxes))
        losses.update(self.loss_giou(pred_boxes, targets, matching, num_boxes))
        return losses, matching

    def forward(
        self, outputs: object, targets: Sequence[Mapping[str, torch.Tensor]], training: bool
    ) -> dict[str, torch.Tensor]:
        """Compute every loss term and the weighted total.

        Args:
            outputs: model output (attributes, as `EGTROutput`, or dict keys) with `logits` (B, N, C),
                `pred_boxes` (B, N, 4) normalised cxcywh, and unless `use_relation_losses=False`: `rel_logits`
                (B, N, N, R) (frequency bias included) and `connectivity_logits` (B, N, N, 1). With
                `auxiliary_loss`: `aux_logits` and `aux_pred_boxes`, lists over the intermediate decoder layers
                0..L-2 of (B, N, C) / (B, N, 4).
            targets: B dicts with `class_labels` (n,) int64, `boxes` (n, 4) normalised cxcywh and `relations`
                (M, 3) int64 [subject, object, predicate].
            training: True uses the sampled relation loss, False the dense (validation) one.

        Returns:
            dict with `loss_ce`, `loss_bbox`, `loss_giou` (+ `loss_rel`, `loss_connectivity`), the aux terms
            `<name>_{i}`, the logged `cardinality_error` (+ `uncertainty`, and `rel_gate_{slot}` when the outputs
            have `rel_gates`), and `loss` = Σ weight_dict[k] · term_k.
        """
        logits = _field(outputs, "logits").float()
        pred_boxes = _field(outputs, "pred_boxes").float()
        if len(targets) != logits.shape[0]:
            raise ValueError(f"EGTRCriterion: {len(targets)} targets for a batch of {logits.shape[0]} images")
        if logits.shape[-1] != self.num_labels:
            raise ValueError(f"EGTRCriterion: logits have {logits.shape[-1]} classes, expected {self.num_labels}")
        num_boxes = self._num_boxes(targets, logits.device)
        losses, matching = self._detection_losses(logits, pred_boxes, targets, num_boxes)
        losses.update(self.log_cardinality(logits, matching))

        if self.use_relation_losses:
            relation_logits = _field(outputs, "rel_logits").float()
            if relation_logits.shape[-1] != self.num_rel_labels:
                raise ValueError(
                    f"EGTRCriterion: rel_logits have {relation_logits.shape[-1]} predicates, "
                    f"expected {self.num_rel_labels}"
                )
            connectivity_logits = _field(outputs, "connectivity_logits").float()
            relation_targets = self.relation_targets(targets, matching, logits.shape[1])
            losses.update(self.loss_relation(relation_logits, relation_targets, matching, training))
            losses.update(self.loss_connectivity(connectivity_logits, relation_targets))
            losses.update(self.log_uncertainty(relation_targets, matching))

        if self.loss_config.auxiliary_loss:
            aux_logits = _field(outputs, "aux_logits")
            aux_boxes = _field(outputs, "aux_pred_boxes")
            if len(aux_logits) != self.num_decoder_layers - 1 or len(aux_boxes) != len(aux_logits):
                raise ValueError(
                    f"EGTRCriterion: expected {self.num_decoder_layers - 1} intermediate layers in "
                    f"aux_logits/aux_pred_boxes, got {len(aux_logits)}/{len(aux_boxes)}"
                )
            for layer, (layer_logits, layer_boxes) in enumerate(zip(aux_logits, aux_boxes)):
                layer_losses, _ = self._detection_losses(layer_logits.float(), layer_boxes.float(), targets, num_boxes)
                losses.update({f"{name}_{layer}": value for name, value in layer_losses.items()})

        gates = _field(outputs, "rel_gates", required=False)
        if gates is not None:
            # Logged like the original's loss dict: mean gate value of each relation-source slot.
            losses.update({f"rel_gate_{slot}": gate for slot, gate in enumerate(gates.detach().float())})
        weighted = [losses[name] * weight for name, weight in self.weight_dict.items()]  # never empty: 3+ terms
        # Summed from the first term (not from the int 0, which would type the total as `Tensor | int`): same value.
        losses["loss"] = sum(weighted[1:], start=weighted[0])
        return losses
