"""DDP training-step throughput on 1..N GPUs of one host, without Ray or the data path.

Each rank runs the trainer's own optimiser step (``pipelines.train.loop._train_step``) on a device-resident batch,
the model wrapped in ``DistributedDataParallel`` with the trainer's gradient all-reduce setting
(``train.grad_allreduce``). Also times a bare NCCL all-reduce of the gradient size (fp32 and bf16) and reports
whether the GPUs can reach each other's memory directly (P2P). Scaling efficiency = per-GPU images/s over the
1-GPU images/s of the same run.

    python3 bench/bench_ddp_step.py --gpus 1,2,4 --allreduce fp32,bf16 --out ddp_step.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from bench_train_step import setup_step
from torch.nn.parallel import DistributedDataParallel

from ldeq_shared.net import free_port
from pipelines.train.comm import set_grad_allreduce
from pipelines.train.config import TrainConfig
from pipelines.train.loop import _train_step


def _rank_main(rank: int, world: int, port: int, args: argparse.Namespace, mode: str, out: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world, device_id=torch.device("cuda", rank))
    device = torch.device("cuda", rank)
    cfg = TrainConfig.from_dict(
        {
            "model": {"preset": "paper", "n_landmarks": args.landmarks, "image_size": 256, "heatmap_size": 64},
            "grad_mode": "one_step",
            "train_max_nfe": 4,
            "bf16": not args.compile,
            "compile": args.compile,
            "grad_allreduce": mode,
            "compile_ddp_split": args.compile_ddp_split,
        }
    )
    raw, opt, sched, x, target = setup_step(cfg, args.batch, device, data_seed=rank)  # each rank its own batch
    model: torch.nn.Module = raw
    if world > 1:
        model = DistributedDataParallel(raw, device_ids=[rank])
        set_grad_allreduce(model, mode)
    for _ in range(3):
        _train_step(model, opt, sched, x, target, cfg, 64, 4, device)
    torch.cuda.synchronize()
    if world > 1:
        dist.barrier()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        _train_step(model, opt, sched, x, target, cfg, 64, 4, device)
    torch.cuda.synchronize()
    step_s = (time.perf_counter() - t0) / args.steps
    row: dict[str, Any] = {
        "world": world,
        "allreduce": mode,
        "compile": args.compile,
        "compile_ddp_split": args.compile_ddp_split,
        "step_ms": step_s * 1e3,
    }
    row["images_per_s"] = args.batch * world / step_s
    if world > 1:
        n = sum(p.numel() for p in raw.parameters())
        for dtype in (torch.float32, torch.bfloat16):
            buf = torch.ones(n, device=device, dtype=dtype)
            for _ in range(3):
                dist.all_reduce(buf)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(10):
                dist.all_reduce(buf)
            torch.cuda.synchronize()
            row[f"allreduce_{str(dtype).removeprefix('torch.')}_ms"] = (time.perf_counter() - t0) / 10 * 1e3
        row["grad_mb_fp32"] = n * 4 / 1e6
    if rank == 0:
        out.put(row)
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpus", default="1,2,4")
    p.add_argument("--allreduce", default="fp32,bf16")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--landmarks", type=int, default=68)
    p.add_argument("--compile", action="store_true", help="compiled cell, fp32/TF32 (train.compile: true)")
    p.add_argument("--compile-ddp-split", action="store_true", help="torch per-bucket DDP graph split")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    n_dev = torch.cuda.device_count()
    peers = {f"{i}->{j}": torch.cuda.can_device_access_peer(i, j) for i in range(n_dev) for j in range(n_dev) if i != j}
    print(json.dumps({"device": torch.cuda.get_device_name(), "gpus": n_dev, "p2p": peers}), flush=True)
    rows: list[dict[str, Any]] = []
    ctx = mp.get_context("spawn")
    for world in (int(g) for g in args.gpus.split(",")):
        if world > n_dev:
            continue
        for mode in args.allreduce.split(",") if world > 1 else ["fp32"]:
            queue = ctx.SimpleQueue()
            mp.start_processes(_rank_main, (world, free_port(), args, mode, queue), nprocs=world, start_method="spawn")
            row = queue.get()
            base = next((r for r in rows if r["world"] == 1), None)
            if base is not None:
                row["efficiency"] = row["images_per_s"] / world / base["images_per_s"]
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "p2p": peers, "rows": rows}))
    return rows


if __name__ == "__main__":
    main()
