"""Experiment (not the default path): compiled GroupNorm with two-stage per-channel statistics instead of ATen's
group_norm decomposition, patched in for one bench_inference.py run.

    python3 bench/gpu/gn_experiment.py channel_stats|aten  <bench_inference.py arguments>

BENCHMARKS.md section 13 records the outcome (NCHW: the reduction kernel shrank but cuDNN layout transposes
appeared, no net gain)."""

from __future__ import annotations

import sys

import torch

from ldeq_core import layers


def channel_stats_group_norm(x, groups, weight, bias, eps):  # type: ignore[no-untyped-def]
    """F.group_norm with per-channel var_mean over H x W, combined exactly over the channels of a group."""
    n, c = x.shape[:2]
    xc = x.reshape(n, groups, c // groups, -1).float()
    var_c, mean_c = torch.var_mean(xc, dim=-1, unbiased=False, keepdim=True)
    mean = mean_c.mean(dim=2, keepdim=True)
    var = (var_c + (mean_c - mean).square()).mean(dim=2, keepdim=True)
    y = ((xc - mean) * torch.rsqrt(var + eps)).reshape(x.shape).to(x.dtype)
    shape = (1, c) + (1,) * (x.dim() - 2)
    return y * weight.view(shape) + bias.view(shape)


def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    original = layers.GroupNorm.forward

    def forward(self, x):  # type: ignore[no-untyped-def]
        if mode == "channel_stats" and x.is_cuda and not self.training and torch.compiler.is_compiling():
            return channel_stats_group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return original(self, x)

    layers.GroupNorm.forward = forward  # type: ignore[method-assign]
    sys.path.insert(0, "bench")
    import bench_inference

    bench_inference.main(args)


if __name__ == "__main__":
    main()
