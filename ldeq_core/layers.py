"""Building blocks of the Landmark DEQ (spec §1.2-1.5): conv blocks, the stem and the depth-4 hourglass."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ldeq_core.config import NormKind

# Below this many (sample, group) rows, CUDA inference computes GroupNorm statistics with a general reduction:
# ATen's group_norm kernel gives each row one thread block, so with gn_groups=1 a batch of one reduces a whole
# (C, H, W) map in a single block (69 % of the paper model's batch-1 RwR step on an H100, BENCHMARKS.md).
FAST_GN_MAX_ROWS = 64


def group_norm_by_reduction(
    x: torch.Tensor, groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """GroupNorm as var_mean over each (sample, group) + affine: the same function as ``F.group_norm``, with
    statistics from torch's general (multi-block) reduction."""
    n, c = x.shape[:2]
    xg = x.reshape(n, groups, -1)
    var, mean = torch.var_mean(xg.float(), dim=-1, unbiased=False, keepdim=True)
    y = ((xg - mean) * torch.rsqrt(var + eps)).reshape(x.shape).to(x.dtype)
    shape = (1, c) + (1,) * (x.dim() - 2)
    if weight is not None:
        y = y * weight.view(shape)
    if bias is not None:
        y = y + bias.view(shape)
    return y


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters and state dict) whose CUDA inference on few rows uses
    :func:`group_norm_by_reduction`; training and CPU use ATen's kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and not self.training and x.shape[0] * self.num_groups < FAST_GN_MAX_ROWS:
            return group_norm_by_reduction(x, self.num_groups, self.weight, self.bias, self.eps)
        return super().forward(x)


def make_norm(kind: NormKind, channels: int, gn_groups: int = 1) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        return GroupNorm(gn_groups, channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


class ConvBlock(nn.Module):
    """Conv2d(k, stride, same padding, bias) -> LeakyReLU(0.01) -> Norm. The norm comes after the activation."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        k: int,
        stride: int = 1,
        norm: NormKind = "gn",
        gn_groups: int = 1,
        relu: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=(k - 1) // 2, bias=True)
        self.act = nn.LeakyReLU(0.01) if relu else nn.Identity()
        self.norm = make_norm(norm, c_out, gn_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.conv(x)))


class Stem(nn.Module):
    """Injection path computed once per image: 256 -> 128 -> 64 px, W channels (spec §1.3)."""

    def __init__(self, width: int, norm: NormKind = "bn") -> None:
        super().__init__()
        self.conv1 = ConvBlock(3, width // 4, 7, stride=2, norm=norm)
        self.conv2 = ConvBlock(width // 4, width // 2, 3, norm=norm)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = ConvBlock(width // 2, width, 3, norm=norm)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.pool(self.conv2(self.conv1(img))))


class _UpStage(nn.Module):
    """Decoder stage: conv to the lower width, upsample x2, concat [skip, up], 1x1 back, then d + conv5(d)."""

    def __init__(self, c_high: int, c_low: int, norm: NormKind, groups: int) -> None:
        super().__init__()
        self.reduce = ConvBlock(c_high, c_low, 3, norm=norm, gn_groups=groups)
        self.merge = ConvBlock(2 * c_low, c_low, 1, norm=norm, gn_groups=groups)
        self.refine = ConvBlock(c_low, c_low, 5, norm=norm, gn_groups=groups)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.reduce(x), scale_factor=2.0, mode="nearest")
        d = self.merge(torch.cat([skip, up], dim=1))
        return self.refine(d) + d


class Hourglass(nn.Module):
    """Explicit depth-4 hourglass with widths w, w+i, w+2i, w+3i, w+4i (spec §1.5)."""

    depth = 4

    def __init__(self, width: int, increment: int, norm: NormKind = "gn", groups: int = 1) -> None:
        super().__init__()
        widths = [width + level * increment for level in range(self.depth + 1)]
        self.same = nn.ModuleList(
            ConvBlock(widths[lv], widths[lv], 3, norm=norm, gn_groups=groups) for lv in range(self.depth)
        )
        self.upchan = nn.ModuleList(
            ConvBlock(widths[lv], widths[lv + 1], 3, norm=norm, gn_groups=groups) for lv in range(self.depth)
        )
        self.bottleneck = ConvBlock(widths[-1], widths[-1], 3, norm=norm, gn_groups=groups)
        self.up = nn.ModuleList(
            _UpStage(widths[lv + 1], widths[lv], norm, groups) for lv in reversed(range(self.depth))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for same, upchan in zip(self.same, self.upchan, strict=True):
            x = same(x)
            skips.append(x)
            x = upchan(F.avg_pool2d(x, 2))
        x = self.bottleneck(x)
        for stage, skip in zip(self.up, reversed(skips), strict=True):
            x = stage(x, skip)
        return x
