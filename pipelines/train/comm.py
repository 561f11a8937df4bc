"""Gradient communication for DDP: the bucket all-reduce in bfloat16 (``train.grad_allreduce: bf16``).

DDP averages gradients with one all-reduce per bucket after each backward pass. With the paper preset that is
66 MB of fp32 gradients per step; where the GPUs' all-reduce is slow compared with the step (BENCHMARKS.md 14),
sending them as bfloat16 halves the bytes. Each rank divides by the world size before the cast (so the sum
cannot overflow), the sum is taken in bfloat16 and written back into the fp32 gradient bucket. Works with NCCL and
gloo (PyTorch's own ``bf16_compress_hook`` needs NCCL).
"""

from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

GRAD_ALLREDUCE = ("fp32", "bf16")


def bf16_allreduce_hook(process_group: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: average the bucket's gradients over the group in bfloat16."""
    group = process_group if process_group is not None else dist.group.WORLD
    buffer = bucket.buffer()
    compressed = buffer.div(dist.get_world_size(group)).to(torch.bfloat16)
    fut = dist.all_reduce(compressed, group=group, async_op=True).get_future()

    def write_back(done: torch.futures.Future) -> torch.Tensor:
        buffer.copy_(done.value()[0])
        return buffer

    return fut.then(write_back)


def set_grad_allreduce(model: torch.nn.Module, mode: str) -> None:
    """Install the gradient all-reduce ``mode`` (``fp32``: DDP's own; ``bf16``: :func:`bf16_allreduce_hook`) on a
    DDP-wrapped model; a model without DDP (one worker) has nothing to reduce."""
    if mode not in GRAD_ALLREDUCE:
        raise ValueError(f"train.grad_allreduce must be one of {GRAD_ALLREDUCE}, got {mode!r}")
    if mode == "bf16" and isinstance(model, DistributedDataParallel):
        model.register_comm_hook(None, bf16_allreduce_hook)
