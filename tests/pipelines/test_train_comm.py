"""The bf16 gradient all-reduce hook under real DDP (2 gloo processes) against an independent computation."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from ldeq_shared.net import free_port
from pipelines.train.comm import set_grad_allreduce
from pipelines.train.config import TrainConfig


def _inputs(rank: int) -> torch.Tensor:
    return torch.randn(9, 7, generator=torch.Generator().manual_seed(100 + rank))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))


def _rank(rank: int, port: int, mode: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    ddp = DistributedDataParallel(_model())
    set_grad_allreduce(ddp, mode)
    ddp(_inputs(rank)).pow(2).sum().backward()
    if rank == 0:
        torch.save([p.grad for p in ddp.module.parameters()], out)
    dist.destroy_process_group()


def _ddp_grads(mode: str, tmp_path) -> list[torch.Tensor]:
    port = free_port()
    out = str(tmp_path / f"grads_{mode}.pt")
    mp.start_processes(_rank, (port, mode, out), nprocs=2, start_method="spawn")
    return torch.load(out)


def _local_grads(rank: int) -> list[torch.Tensor]:
    m = _model()
    m(_inputs(rank)).pow(2).sum().backward()
    return [p.grad for p in m.parameters()]


def test_bf16_allreduce_averages_gradients_in_bfloat16(tmp_path) -> None:
    g0, g1 = _local_grads(0), _local_grads(1)
    fp32 = _ddp_grads("fp32", tmp_path)
    bf16 = _ddp_grads("bf16", tmp_path)
    for got32, got16, a, b in zip(fp32, bf16, g0, g1, strict=True):
        torch.testing.assert_close(got32, (a + b) / 2)  # DDP's own all-reduce: the fp32 mean
        # each rank sends bf16(g / 2); the sum of the two is rounded to bf16 and written back as fp32
        halves = (a / 2).to(torch.bfloat16), (b / 2).to(torch.bfloat16)
        expected = (halves[0] + halves[1]).float()
        assert torch.equal(got16, expected)
        torch.testing.assert_close(got16, got32, rtol=1e-2, atol=1e-3)
    assert any(not torch.equal(a, b) for a, b in zip(fp32, bf16, strict=True))  # it really was compressed


def test_grad_allreduce_setting_is_validated() -> None:
    with pytest.raises(ValueError, match="grad_allreduce"):
        TrainConfig(grad_allreduce="fp8")
    with pytest.raises(ValueError, match="grad_allreduce must be one of"):
        set_grad_allreduce(torch.nn.Linear(2, 2), "int8")
    set_grad_allreduce(torch.nn.Linear(2, 2), "bf16")  # one worker, no DDP: nothing to reduce, no error
