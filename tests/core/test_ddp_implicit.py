"""Implicit gradients under DistributedDataParallel (gloo, 2 processes): DDP's averaged gradient equals the mean
of the per-rank gradients computed without DDP, and nothing is left behind between steps."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from ldeq_core.config import get_preset
from ldeq_core.model import LandmarkDEQ
from ldeq_shared.net import free_port

CFG = get_preset("tiny", image_size=64, heatmap_size=16, grad={"mode": "implicit", "adjoint_max_nfe": 6})


def _inputs(rank: int) -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(100 + rank))


def _loss(model: torch.nn.Module, img: torch.Tensor) -> torch.Tensor:
    return model(img, max_nfe=4, tol=0.0).coords.square().sum()


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = LandmarkDEQ(CFG).train()
    ddp = DDP(model)
    for _ in range(2):  # two steps: a second backward must work (no stale state from the first)
        ddp.zero_grad()
        _loss(ddp, _inputs(rank)).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    torch.save(grads, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_ddp_averages_implicit_gradients(tmp_path) -> None:
    port = free_port()
    mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    g0 = torch.load(tmp_path / "rank0.pt")
    g1 = torch.load(tmp_path / "rank1.pt")
    torch.manual_seed(0)
    model = LandmarkDEQ(CFG).train()
    singles = []
    for rank in range(2):
        model.zero_grad()
        _loss(model, _inputs(rank)).backward()
        singles.append({k: p.grad.clone() for k, p in model.named_parameters()})
    for name in g0:
        assert torch.allclose(g0[name], g1[name]), name  # DDP synchronised the ranks
        mean = (singles[0][name] + singles[1][name]) / 2
        assert torch.allclose(g0[name], mean, rtol=1e-4, atol=1e-6), name
