"""ResNet backbone with frozen batch norm, feature masks and the sine position embedding.

Parameter names follow timm's ResNet (`conv1`, `bn1`, `layer1..4`, `downsample.0/1`) because the official EGTR
checkpoints were saved from timm `resnet50(features_only=True)`; the model returns C3, C4, C5 (strides 8, 16, 32).
The sine position embedding is the normalised DETR one (Carion et al., ECCV 2020, `models/position_encoding.py`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# (block type, blocks per stage) for each supported depth, as in He et al., CVPR 2016, Table 1.
RESNET_LAYOUTS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters (buffers only, never trained).

    `y = (x - running_mean) * weight / sqrt(running_var + eps) + bias`, computed as one scale and shift.
    `track_num_batches` only adds the `num_batches_tracked` buffer so that the state dict keeps the official key
    layout: the original left the four `downsample.1` norms as trainable `nn.BatchNorm2d` (reference quirk Q8);
    in eval mode both compute the same function, and we freeze them like every other norm.
    """

    # Parameters or buffers depending on `track_num_batches`, registered in __init__; tensors either way.
    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, num_features: int, eps: float = 1e-5, track_num_batches: bool = False):
        super().__init__()
        self.eps = eps
        if track_num_batches:
            # The original's downsample norms are BatchNorm2d, whose affine terms count as parameters (the
            # paper's 42,510,356 includes them); keep them parameters, but frozen.
            self.weight = nn.Parameter(torch.ones(num_features), requires_grad=False)
            self.bias = nn.Parameter(torch.zeros(num_features), requires_grad=False)
        else:
            self.register_buffer("weight", torch.ones(num_features))
            self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        if track_num_batches:
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def scale_and_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_and_shift()
        return x * scale[None, :, None, None] + shift[None, :, None, None]


def conv_frozen_bn(conv: nn.Module, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`norm(conv(x))` as one convolution: the frozen norm is a per-channel affine map, so it folds into the
    convolution's weight and bias. Same function up to float rounding, without two passes over the activations.
    Plain modules in the signature because a `downsample` Sequential hands its members out untyped; any pair other
    than (Conv2d, FrozenBatchNorm2d), i.e. a trainable BatchNorm2d (backbone_norm="batch"), runs as `norm(conv(x))`."""
    if not isinstance(norm, FrozenBatchNorm2d) or not isinstance(conv, nn.Conv2d):
        return norm(conv(x))
    scale, shift = norm.scale_and_shift()
    return F.conv2d(
        x, conv.weight * scale[:, None, None, None], shift, conv.stride, conv.padding, conv.dilation, conv.groups
    )


def make_norm(kind: str, num_features: int, track_num_batches: bool = False) -> nn.Module:
    """ "frozen": fixed statistics (for pre-trained backbones, the paper's setting); "batch": trainable
    BatchNorm2d with batch statistics, for training a backbone from scratch. Both have the same state-dict keys
    (BatchNorm2d adds `num_batches_tracked`), and in eval mode compute the same function of those values."""
    if kind == "frozen":
        return FrozenBatchNorm2d(num_features, track_num_batches=track_num_batches)
    if kind == "batch":
        return nn.BatchNorm2d(num_features)
    raise ValueError(f"backbone_norm must be 'frozen' or 'batch', got {kind!r}")


def _downsample(in_channels: int, out_channels: int, stride: int, norm: str) -> nn.Sequential:
    # A Sequential, not a single module, for the official key names `downsample.0` (conv) / `downsample.1` (norm).
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        make_norm(norm, out_channels, track_num_batches=True),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, norm: str = "frozen"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = make_norm(norm, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = make_norm(norm, channels)
        needs_projection = stride != 1 or in_channels != channels
        self.downsample = _downsample(in_channels, channels, stride, norm) if needs_projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else conv_frozen_bn(self.downsample[0], self.downsample[1], x)
        x = conv_frozen_bn(self.conv1, self.bn1, x).relu_()
        x = conv_frozen_bn(self.conv2, self.bn2, x)
        return x.add_(shortcut).relu_()


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, as in timm/torchvision "ResNet v1.5"), 1x1 expand (ResNet-50/101)."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, norm: str = "frozen"):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = make_norm(norm, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = make_norm(norm, channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = make_norm(norm, out_channels)
        needs_projection = stride != 1 or in_channels != out_channels
        self.downsample = _downsample(in_channels, out_channels, stride, norm) if needs_projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else conv_frozen_bn(self.downsample[0], self.downsample[1], x)
        x = conv_frozen_bn(self.conv1, self.bn1, x).relu_()
        x = conv_frozen_bn(self.conv2, self.bn2, x).relu_()
        x = conv_frozen_bn(self.conv3, self.bn3, x)
        return x.add_(shortcut).relu_()


class ResNet(nn.Module):
    """ResNet trunk returning the stage outputs C3, C4, C5 (no pooling head, no classifier)."""

    # The four stages, registered in __init__ with setattr (their number of blocks depends on the depth).
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, depth: str = "resnet50", norm: str = "frozen"):
        super().__init__()
        if depth not in RESNET_LAYOUTS:
            raise ValueError(f"unknown backbone {depth!r}; choose one of {sorted(RESNET_LAYOUTS)}")
        block_type, blocks_per_stage = RESNET_LAYOUTS[depth]
        block = BasicBlock if block_type == "basic" else Bottleneck
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = make_norm(norm, 64)
        in_channels = 64
        for stage, (num_blocks, channels) in enumerate(zip(blocks_per_stage, (64, 128, 256, 512)), start=1):
            stride = 1 if stage == 1 else 2
            blocks = []
            for index in range(num_blocks):
                blocks.append(block(in_channels, channels, stride if index == 0 else 1, norm))
                in_channels = channels * block.expansion
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.out_channels = [channels * block.expansion for channels in (128, 256, 512)]  # C3, C4, C5

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        if pixel_values.device.type == "cpu":
            # oneDNN's CPU convolutions are faster channels-last (ResNet-50 at 600x1000 on 2 cores: 0.64 -> 0.49 s of
            # CPU time); the features then flatten to the encoder's (B, H*W, C) without a copy.
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        x = conv_frozen_bn(self.conv1, self.bn1, pixel_values).relu_()
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        x = self.layer1(x)
        c3 = self.layer2(x)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c3, c4, c5]


class ConvEncoder(nn.Module):
    """Holds the ResNet under the attribute name `model`, giving the official key prefix `conv_encoder.model.`."""

    def __init__(self, depth: str, norm: str = "frozen"):
        super().__init__()
        self.model = ResNet(depth, norm)

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Returns [(feature (B, C_l, H_l, W_l), mask (B, H_l, W_l) bool, True = real pixel)] for C3..C5."""
        features = self.model(pixel_values)
        return [(feature, downsample_mask(pixel_mask, feature.shape[-2:])) for feature in features]


def downsample_mask(pixel_mask: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of a (B, H, W) pixel mask to `size`, as a bool mask (True = real pixel)."""
    return F.interpolate(pixel_mask[None].float(), size=tuple(size)).to(torch.bool)[0]


def sine_position_embedding(mask: torch.Tensor, num_channels: int, temperature: float = 10000.0) -> torch.Tensor:
    """Normalised 2-d sine/cosine position embedding of DETR.

    Args:
        mask: (B, H, W) bool, True = real pixel; positions count real pixels only, so padding does not shift them.
        num_channels: output channels (d_model); half encode y, half x.

    Returns:
        (B, num_channels, H, W) float32: `cat(pos_y, pos_x)` with sin on even and cos on odd channels, interleaved.
    """
    channels_per_axis = num_channels // 2
    scale = 2 * math.pi
    y_embed = mask.cumsum(1, dtype=torch.float32)
    x_embed = mask.cumsum(2, dtype=torch.float32)
    # Normalise to (0, 2*pi] by the number of real rows/columns (the last cumulative value).
    y_embed = (y_embed - 0.5) / (y_embed[:, -1:, :] + 1e-6) * scale
    x_embed = (x_embed - 0.5) / (x_embed[:, :, -1:] + 1e-6) * scale
    dim_t = torch.arange(channels_per_axis, dtype=torch.float32, device=mask.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / channels_per_axis)
    pos_x = x_embed[:, :, :, None] / dim_t  # (B, H, W, channels_per_axis)
    pos_y = y_embed[:, :, :, None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class Backbone(nn.Module):
    """ResNet features C3..C5 with their masks and sine position embeddings (key prefix `backbone.conv_encoder`)."""

    def __init__(self, depth: str, d_model: int, norm: str = "frozen"):
        super().__init__()
        self.conv_encoder = ConvEncoder(depth, norm)
        self.d_model = d_model
        self.out_channels = self.conv_encoder.model.out_channels

    def forward(
        self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[torch.Tensor]]:
        features = self.conv_encoder(pixel_values, pixel_mask)
        positions = [sine_position_embedding(mask, self.d_model).to(feature.dtype) for feature, mask in features]
        return features, positions
