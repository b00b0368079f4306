"""Deformable DETR encoder-decoder (Zhu et al., "Deformable DETR", ICLR 2021) in plain PyTorch.

The configuration EGTR uses: single-scale 2-d reference points, no iterative box refinement, no two-stage. Module
names match the transformers implementation the official checkpoints were saved from (`model.encoder.layers.*`,
`model.decoder.layers.*`, `model.input_proj.*`, ...). The decoder's self-attention additionally returns its query and
key projections of (hidden + query position): EGTR's relation head is built from them (Im et al., CVPR 2024).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from egtr.config import EGTRConfig
from egtr.models.backbone import Backbone, downsample_mask, sine_position_embedding


def multi_scale_deformable_attention(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Bilinear sampling of every level at the given locations, weighted sum over levels and points.

    Args:
        value: (B, S, heads, head_dim), S = sum of H_l * W_l over levels.
        spatial_shapes: [(H_l, W_l)] per level.
        sampling_locations: (B, Q, heads, levels, points, 2) in [0, 1], (x, y).
        attention_weights: (B, Q, heads, levels, points), softmax-normalised over (levels, points).

    Returns:
        (B, Q, heads * head_dim).
    """
    batch_size, _, num_heads, head_dim = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    value_per_level = value.split([height * width for height, width in spatial_shapes], dim=1)
    # grid_sample wants [-1, 1]; (B, Q, heads, levels, points, 2) -> (B*heads, Q, levels, points, 2)
    sampling_grids = (2 * sampling_locations - 1).transpose(1, 2).flatten(0, 1)
    # (B, Q, heads, levels, points) -> (B*heads, 1, Q, levels, points)
    attention_weights = attention_weights.transpose(1, 2).reshape(
        batch_size * num_heads, 1, num_queries, num_levels, num_points
    )
    output: torch.Tensor | None = None
    for level, (height, width) in enumerate(spatial_shapes):
        # (B, H*W, heads, head_dim) -> (B*heads, head_dim, H, W)
        level_value = (
            value_per_level[level].permute(0, 2, 3, 1).reshape(batch_size * num_heads, head_dim, height, width)
        )
        sampled = F.grid_sample(
            level_value, sampling_grids[:, :, level], mode="bilinear", padding_mode="zeros", align_corners=False
        )  # (B*heads, head_dim, Q, points)
        # Accumulate level by level instead of stacking all levels: same sum, a quarter of the peak memory.
        contribution = (sampled * attention_weights[..., level, :]).sum(-1)  # (B*heads, head_dim, Q)
        output = contribution if output is None else output + contribution
    if output is None:
        raise ValueError("multi_scale_deformable_attention needs at least one level in spatial_shapes")
    return output.view(batch_size, num_heads * head_dim, num_queries).transpose(1, 2)


def multi_scale_deformable_attention_gather(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """`multi_scale_deformable_attention` as one weighted gather (`F.embedding_bag`): the same function, faster on CPU.

    Every output row (image, query, head) is a weighted sum of levels x points x 4 bilinear corners, so the corner
    weights (bilinear weight x attention weight) and the corners' row indices into a channels-last value table go
    to a single `embedding_bag(mode="sum")`, which reads each corner's head_dim values contiguously and never
    materialises the sampled tensor. Each level gets a zero border (1 pixel before, 2 after) and locations are
    clamped to [-1, size] in pixels: a corner outside the map then reads a zero, exactly like grid_sample's
    zeros padding, and the clamp only moves points whose every corner is already outside (their output and
    gradient are 0 either way). Same arguments and result as `multi_scale_deformable_attention`
    (align_corners=False), gradients included; float rounding aside.
    """
    batch_size, _, num_heads, head_dim = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    device = value.device
    tables, level_starts, start = [], [], 0
    for (height, width), level_value in zip(spatial_shapes, value.split([h * w for h, w in spatial_shapes], dim=1)):
        level_value = level_value.view(batch_size, height, width, num_heads, head_dim).permute(0, 3, 1, 2, 4)
        tables.append(F.pad(level_value, (0, 0, 1, 2, 1, 2)).flatten(2, 3))  # (B, heads, (H+3)(W+3), head_dim)
        level_starts.append(start + (width + 3) + 1)  # row of pixel (0, 0) inside the bordered level
        start += (height + 3) * (width + 3)
    table = torch.cat(tables, 2).reshape(-1, head_dim)  # (B * heads * padded S, head_dim)

    # Per-level constants laid out (levels, points, ...) so that their broadcasts are over whole contiguous rows.
    shapes = torch.tensor(spatial_shapes, device=device)  # (levels, 2) as (H, W)
    size_xy = shapes.flip(-1).to(sampling_locations.dtype)[:, None, :].expand(num_levels, num_points, 2).contiguous()
    row_stride = (shapes[:, 1] + 3)[:, None].expand(num_levels, num_points).contiguous()
    corner_offsets = torch.stack(
        [torch.zeros_like(row_stride), torch.ones_like(row_stride), row_stride, row_stride + 1], -1
    )
    head_start = (torch.arange(batch_size * num_heads, device=device) * start).view(batch_size, 1, num_heads, 1, 1)
    level_start = torch.tensor(level_starts, device=device).view(num_levels, 1)

    # Pixel coordinates (align_corners=False: pixel centres at integer + 0.5 in units of the level's size).
    pixel = torch.minimum(sampling_locations * size_xy - 0.5, size_xy).clamp_(min=-1)
    top_left = pixel.floor()
    fraction = pixel - top_left  # (B, Q, heads, levels, points, 2); a NaN location gives a NaN output, as grid_sample
    top_left = top_left.nan_to_num_(nan=-1.0).to(torch.int64)  # ...while its indices stay inside the table
    index = head_start + level_start + top_left[..., 1] * row_stride + top_left[..., 0]  # (B, Q, heads, levels, points)
    # Corners: top-left, top-right, bottom-left, bottom-right; int32 indices halve the index traffic where they fit.
    index_dtype = torch.int32 if table.shape[0] < 2**31 else torch.int64
    index = (index[..., None] + corner_offsets).to(index_dtype)
    fraction_x, fraction_y = fraction.unbind(-1)
    top, bottom = (1 - fraction_y) * attention_weights, fraction_y * attention_weights
    left_weight = 1 - fraction_x
    weights = torch.stack([top * left_weight, top * fraction_x, bottom * left_weight, bottom * fraction_x], -1)
    bags = batch_size * num_queries * num_heads  # one bag per (image, query, head): output rows already in order
    output = F.embedding_bag(
        index.view(bags, -1), table, per_sample_weights=weights.view(bags, -1).to(table.dtype), mode="sum"
    )
    return output.view(batch_size, num_queries, num_heads * head_dim)


class MultiscaleDeformableAttention(nn.Module):
    """Deformable attention: each query samples `n_points` locations around its reference point on every level.

    `form` picks the implementation of the sampling (the same function): "auto" = the gather form on CPU (5x faster
    there) and grid_sample elsewhere; "grid_sample" = `F.grid_sample` per level, which exports to ONNX's standard
    GridSample operator with symbolic sizes (`egtr.inference.export` sets it); "gather" = the gather form.
    """

    FORMS = ("auto", "grid_sample", "gather")

    def __init__(self, d_model: int, n_heads: int, n_levels: int, n_points: int):
        super().__init__()
        self.form = "auto"
        self.d_model, self.n_heads, self.n_levels, self.n_points = d_model, n_heads, n_levels, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)

    def reset_parameters(self) -> None:
        """Deformable DETR's init: offsets start on a ring of 8 directions, one radius per point."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (
            (grid / grid.abs().max(-1, keepdim=True)[0])
            .view(self.n_heads, 1, 1, 2)
            .repeat(1, self.n_levels, self.n_points, 1)
        )
        for point in range(self.n_points):
            grid[:, :, point, :] *= point + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        for linear in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.constant_(linear.bias, 0.0)

    def forward(
        self,
        queries: torch.Tensor,
        value_input: torch.Tensor,
        value_mask: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
        spatial_shapes_tensor: torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            queries: (B, Q, D), position embedding already added.
            value_input: (B, S, D) flattened multi-level features.
            value_mask: (B, S) bool, True = real position; padded positions contribute zero.
            reference_points: (B, Q, levels, 2) normalised (x, y) per level.
            spatial_shapes / spatial_shapes_tensor: [(H_l, W_l)] and the same as a (levels, 2) tensor.

        Returns:
            (B, Q, D).
        """
        batch_size, num_queries, _ = queries.shape
        head_dim = self.d_model // self.n_heads
        value = self.value_proj(value_input).masked_fill(~value_mask[..., None], 0.0)
        value = value.view(batch_size, -1, self.n_heads, head_dim)
        offsets = self.sampling_offsets(queries).view(
            batch_size, num_queries, self.n_heads, self.n_levels, self.n_points, 2
        )
        weights = self.attention_weights(queries).view(
            batch_size, num_queries, self.n_heads, self.n_levels * self.n_points
        )
        weights = weights.softmax(-1).view(batch_size, num_queries, self.n_heads, self.n_levels, self.n_points)
        # Offsets are in pixels of each level: divide by (W_l, H_l).
        offset_normalizer = torch.stack([spatial_shapes_tensor[..., 1], spatial_shapes_tensor[..., 0]], -1).to(
            offsets.dtype
        )
        locations = reference_points[:, :, None, :, None, :] + offsets / offset_normalizer[None, None, None, :, None, :]
        # The gather form is 5x faster on CPU (benchmarks/deformable_attention.py); CUDA keeps grid_sample, unmeasured.
        gather = self.form == "gather" or (self.form == "auto" and value.device.type == "cpu")
        attend = multi_scale_deformable_attention_gather if gather else multi_scale_deformable_attention
        output = attend(value, spatial_shapes, locations, weights)
        return self.output_proj(output)


class FeedForwardLayer(nn.Module):
    """Base of the encoder and decoder layers: their post-norm ReLU feed-forward block.

    The subclass calls `_add_feed_forward` after registering its attention modules, so the feed-forward modules come
    last, in the official key order; hence attributes declared here but not created in an `__init__` of this class.
    """

    fc1: nn.Linear
    fc2: nn.Linear
    final_layer_norm: nn.LayerNorm
    dropout: nn.Dropout
    activation_dropout: nn.Dropout

    def _add_feed_forward(self, config: EGTRConfig, ffn_dim: int) -> None:
        self.fc1 = nn.Linear(config.d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, config.d_model)
        self.final_layer_norm = nn.LayerNorm(config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.activation_dropout = nn.Dropout(config.activation_dropout)

    def _feed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Post-norm ReLU feed-forward block with its residual connection."""
        # In place: fc1's fresh output is not needed by autograd, and one 12,537 x 1024 buffer less per encoder layer.
        feed_forward = self.fc2(self.activation_dropout(F.relu(self.fc1(hidden_states), inplace=True)))
        return self.final_layer_norm(hidden_states + self.dropout(feed_forward))


class EncoderLayer(FeedForwardLayer):
    """Post-norm: deformable self-attention over all levels, then a ReLU feed-forward network."""

    def __init__(self, config: EGTRConfig):
        super().__init__()
        d_model = config.d_model
        self.self_attn = MultiscaleDeformableAttention(
            d_model, config.encoder_attention_heads, config.num_feature_levels, config.encoder_n_points
        )
        self.self_attn_layer_norm = nn.LayerNorm(d_model)
        self._add_feed_forward(config, config.encoder_ffn_dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: torch.Tensor,
        mask: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
        spatial_shapes_tensor: torch.Tensor,
    ) -> torch.Tensor:
        attended = self.self_attn(
            hidden_states + position_embeddings,
            hidden_states,
            mask,
            reference_points,
            spatial_shapes,
            spatial_shapes_tensor,
        )
        hidden_states = self.self_attn_layer_norm(hidden_states + self.dropout(attended))
        return self._feed_forward(hidden_states)


class DecoderSelfAttention(nn.Module):
    """Standard multi-head self-attention over the object queries that also returns its q/k projections.

    Query and key see `hidden + query_position`, the value sees `hidden` only (as in Deformable DETR).
    """

    def __init__(self, d_model: int, num_heads: int, attention_dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.q_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.attention_dropout = attention_dropout

    def forward(
        self, hidden_states: torch.Tensor, query_position: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (output (B, N, D), query (B, N, D), key (B, N, D)); q and k unscaled, heads merged."""
        batch_size, num_queries, d_model = hidden_states.shape
        with_position = hidden_states + query_position
        query = self.q_proj(with_position)
        key = self.k_proj(with_position)
        value = self.v_proj(hidden_states)

        def split_heads(x: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, heads, N, head_dim)
            return x.view(batch_size, num_queries, self.num_heads, self.head_dim).transpose(1, 2)

        scores = (split_heads(query) * self.head_dim**-0.5) @ split_heads(key).transpose(-1, -2)  # (B, heads, N, N)
        probabilities = F.dropout(scores.softmax(-1), p=self.attention_dropout, training=self.training)
        attended = (probabilities @ split_heads(value)).transpose(1, 2).reshape(batch_size, num_queries, d_model)
        return self.out_proj(attended), query, key


class DecoderLayer(FeedForwardLayer):
    """Post-norm: query self-attention, deformable cross-attention to the encoder memory, feed-forward."""

    def __init__(self, config: EGTRConfig):
        super().__init__()
        d_model = config.d_model
        self.self_attn = DecoderSelfAttention(d_model, config.decoder_attention_heads, config.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(d_model)
        self.encoder_attn = MultiscaleDeformableAttention(
            d_model, config.decoder_attention_heads, config.num_feature_levels, config.decoder_n_points
        )
        self.encoder_attn_layer_norm = nn.LayerNorm(d_model)
        self._add_feed_forward(config, config.decoder_ffn_dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        query_position: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
        spatial_shapes_tensor: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attended, query, key = self.self_attn(hidden_states, query_position)
        hidden_states = self.self_attn_layer_norm(hidden_states + self.dropout(attended))
        cross = self.encoder_attn(
            hidden_states + query_position, memory, memory_mask, reference_points, spatial_shapes, spatial_shapes_tensor
        )
        hidden_states = self.encoder_attn_layer_norm(hidden_states + self.dropout(cross))
        return self._feed_forward(hidden_states), query, key


class Encoder(nn.Module):
    def __init__(self, config: EGTRConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.encoder_layers))


class Decoder(nn.Module):
    def __init__(self, config: EGTRConfig):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.decoder_layers))


@dataclass
class TransformerOutput:
    """What the detector body hands to the heads. N = queries, L = decoder layers, S = encoder positions."""

    decoder_hidden_states: torch.Tensor  # (B, L+1, N, D): initial content queries, then every layer's output
    self_attention_queries: torch.Tensor  # (B, L, N, D): q_proj(h_{l-1} + query_pos) of every decoder layer
    self_attention_keys: torch.Tensor  # (B, L, N, D): k_proj(h_{l-1} + query_pos)
    init_reference_points: torch.Tensor  # (B, N, 2): sigmoid(reference_points(query_pos)), (x, y)
    encoder_last_hidden_state: torch.Tensor  # (B, S, D)


def sizes_tensor(spatial_shapes: list[tuple[int, int]], device: torch.device) -> torch.Tensor:
    """[(H_l, W_l)] as a (levels, 2) int64 tensor. Built with `torch.full`, not `torch.tensor`: under
    `torch.export` the sizes are symbolic, and `torch.tensor` would freeze them to the example's (no dynamic H, W)."""
    return torch.stack(
        [
            torch.stack([torch.full((), size, dtype=torch.long, device=device) for size in shape])
            for shape in spatial_shapes
        ]
    )


def encoder_reference_points(spatial_shapes: list[tuple[int, int]], valid_ratios: torch.Tensor) -> torch.Tensor:
    """Pixel centres of every level, normalised by the valid (unpadded) extent -> (B, S, levels, 2) as (x, y)."""
    points = []
    for level, (height, width) in enumerate(spatial_shapes):
        # arange + 0.5 equals linspace(0.5, size - 0.5, size) exactly, and keeps the size symbolic under torch.export.
        ref_y, ref_x = torch.meshgrid(
            torch.arange(height, dtype=valid_ratios.dtype, device=valid_ratios.device) + 0.5,
            torch.arange(width, dtype=valid_ratios.dtype, device=valid_ratios.device) + 0.5,
            indexing="ij",
        )
        ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, level, 1] * height)
        ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, level, 0] * width)
        points.append(torch.stack((ref_x, ref_y), -1))
    return torch.cat(points, 1)[:, :, None] * valid_ratios[:, None]


def valid_ratio(mask: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool mask -> (B, 2): fraction of real columns and rows, (width, height)."""
    _, height, width = mask.shape
    valid_height = mask[:, :, 0].sum(1)
    valid_width = mask[:, 0, :].sum(1)
    return torch.stack([valid_width.float() / width, valid_height.float() / height], -1)


class DeformableDetrModel(nn.Module):
    """Backbone + input projections + deformable encoder and decoder (key prefix `model.`)."""

    def __init__(self, config: EGTRConfig):
        super().__init__()
        self.config = config
        d_model = config.d_model
        self.backbone = Backbone(config.backbone, d_model, config.backbone_norm)
        projections = [
            nn.Sequential(nn.Conv2d(channels, d_model, kernel_size=1), nn.GroupNorm(32, d_model))
            for channels in self.backbone.out_channels[: config.num_feature_levels]
        ]
        in_channels = self.backbone.out_channels[-1]
        for _ in range(config.num_feature_levels - len(projections)):  # extra stride-2 levels on top of C5
            projections.append(
                nn.Sequential(
                    nn.Conv2d(in_channels, d_model, kernel_size=3, stride=2, padding=1), nn.GroupNorm(32, d_model)
                )
            )
            in_channels = d_model
        self.input_proj = nn.ModuleList(projections)
        self.query_position_embeddings = nn.Embedding(config.num_queries, 2 * d_model)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.level_embed = nn.Parameter(torch.empty(config.num_feature_levels, d_model))
        self.reference_points = nn.Linear(d_model, 2)

    def _multi_level_inputs(
        self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Project backbone features to d_model and add extra levels; returns per-level (source, mask, position)."""
        features, positions = self.backbone(pixel_values, pixel_mask)
        levels = []
        for level, ((feature, mask), position) in enumerate(zip(features, positions)):
            if level < self.config.num_feature_levels:
                levels.append((self.input_proj[level](feature), mask, position))
        previous = features[-1][0]
        for level in range(len(levels), self.config.num_feature_levels):
            source = self.input_proj[level](previous)
            mask = downsample_mask(pixel_mask, source.shape[-2:])
            levels.append((source, mask, sine_position_embedding(mask, self.config.d_model).to(source.dtype)))
            previous = source
        return levels

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> TransformerOutput:
        levels = self._multi_level_inputs(pixel_values, pixel_mask)
        spatial_shapes = [(source.shape[-2], source.shape[-1]) for source, _, _ in levels]  # [(H_l, W_l)]
        spatial_shapes_tensor = sizes_tensor(spatial_shapes, pixel_values.device)
        # Flatten every level to (B, H_l*W_l, D) and concatenate: the encoder sequence.
        sources = torch.cat([source.flatten(2).transpose(1, 2) for source, _, _ in levels], 1)
        masks = torch.cat([mask.flatten(1) for _, mask, _ in levels], 1)
        level_positions = torch.cat(
            [
                position.flatten(2).transpose(1, 2) + self.level_embed[level].view(1, 1, -1)
                for level, (_, _, position) in enumerate(levels)
            ],
            1,
        )
        valid_ratios = torch.stack([valid_ratio(mask) for _, mask, _ in levels], 1).to(sources.dtype)  # (B, levels, 2)

        hidden_states = F.dropout(sources, p=self.config.dropout, training=self.training)
        reference_points = encoder_reference_points(spatial_shapes, valid_ratios)
        for layer in self.encoder.layers:
            hidden_states = layer(
                hidden_states, level_positions, masks, reference_points, spatial_shapes, spatial_shapes_tensor
            )
        memory = hidden_states

        batch_size = pixel_values.shape[0]
        # First half of the query embedding is positional, second half the initial content.
        query_position, target = self.query_position_embeddings.weight.split(self.config.d_model, dim=1)
        query_position = query_position.unsqueeze(0).expand(batch_size, -1, -1)
        hidden_states = target.unsqueeze(0).expand(batch_size, -1, -1)
        init_reference_points = self.reference_points(query_position).sigmoid()  # fixed: no box refinement
        decoder_references = init_reference_points[:, :, None] * valid_ratios[:, None]  # (B, N, levels, 2)

        all_hidden, queries, keys = [hidden_states], [], []
        for layer in self.decoder.layers:
            hidden_states, query, key = layer(
                hidden_states, query_position, memory, masks, decoder_references, spatial_shapes, spatial_shapes_tensor
            )
            all_hidden.append(hidden_states)
            queries.append(query)
            keys.append(key)
        return TransformerOutput(
            decoder_hidden_states=torch.stack(all_hidden, 1),
            self_attention_queries=torch.stack(queries, 1),
            self_attention_keys=torch.stack(keys, 1),
            init_reference_points=init_reference_points,
            encoder_last_hidden_state=memory,
        )
