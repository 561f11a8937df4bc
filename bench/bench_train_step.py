"""GPU-side training throughput: images/s of the trainer's own optimiser step on device-resident batches.

This isolates the model step (forward solve, gradient, AdamW) from the data path, so it bounds what the full
``ldeq train`` can reach per GPU; compare with the trainer's ``train_images_per_s``.

    python bench/bench_train_step.py --device cuda --preset paper --batch 32 --out train_step.json
    python bench/bench_train_step.py --device cpu --quick          # CPU smoke (tiny preset)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from ldeq_core.model import LandmarkDEQ
from pipelines.train.config import TrainConfig
from pipelines.train.loop import _train_step, compile_cell, parameter_groups

VARIANTS = {  # name -> TrainConfig overrides
    "fp32": {"bf16": False, "channels_last": False, "compile": False},
    "fp32+compile": {"bf16": False, "channels_last": False, "compile": True},
    "bf16": {"bf16": True, "channels_last": False, "compile": False},
    "bf16+cl": {"bf16": True, "channels_last": True, "compile": False},
    "fp32+cl+compile": {"bf16": False, "channels_last": True, "compile": True},
    # bf16 + compile is refused by TrainConfig: NaN gradients on an H100 (bench/gpu/train_compile_check.py)
}


def setup_step(
    cfg: TrainConfig, batch: int, device: torch.device, data_seed: int = 0
) -> tuple[LandmarkDEQ, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, torch.Tensor, torch.Tensor]:
    """What the trainer's ``_train_step`` needs, without the data path: the model (seed 0, ``cfg``'s memory format,
    compiled cell if ``cfg.compile``), AdamW, a constant schedule and one random device-resident batch."""
    torch.manual_seed(0)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = LandmarkDEQ(cfg.model_config()).to(device).train().to(memory_format=fmt)
    if cfg.compile:
        compile_cell(model, cfg)  # the trainer's compile, with its DDP graph-splitting setting
    opt = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    gen = torch.Generator(device=device).manual_seed(data_seed)
    size = model.cfg.image_size
    x = torch.randn(batch, 3, size, size, device=device, generator=gen).contiguous(memory_format=fmt)
    target = torch.rand(batch, model.cfg.n_landmarks, 2, device=device, generator=gen) * 0.5 + 0.25
    return model, opt, sched, x, target


def bench_variant(
    name: str,
    preset: str,
    image_size: int,
    heatmap_size: int,
    batch: int,
    device: torch.device,
    steps: int,
    grad_mode: str,
    train_nfe: int,
) -> dict[str, Any]:
    """Median-free simple timing: ``steps`` optimiser steps after 3 warm-up steps (compile happens in warm-up)."""
    cfg = TrainConfig.from_dict(
        {
            "model": {"preset": preset, "image_size": image_size, "heatmap_size": heatmap_size},
            "grad_mode": grad_mode,
            "train_max_nfe": train_nfe,
            **VARIANTS[name],
        }
    )
    model, opt, sched, x, target = setup_step(cfg, batch, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    for _ in range(3):
        _train_step(model, opt, sched, x, target, cfg, heatmap_size, cfg.effective_train_nfe, device)
    sync()
    warmup_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    losses = [
        _train_step(model, opt, sched, x, target, cfg, heatmap_size, cfg.effective_train_nfe, device)[0]
        for _ in range(steps)
    ]
    sync()
    sec = (time.perf_counter() - t0) / steps
    row = {
        "variant": name,
        "preset": preset,
        "batch": batch,
        "grad_mode": grad_mode,
        "train_nfe": train_nfe,
        "step_ms": sec * 1e3,
        "images_per_s": batch / sec,
        "warmup_s": warmup_s,
        "loss_first": float(losses[0]),
        "loss_last": float(losses[-1]),
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
    }
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="paper")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--heatmap-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--grad-mode", default="one_step")
    p.add_argument("--train-nfe", type=int, default=4)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--quick", action="store_true", help="tiny preset at 64 px, batch 4, 2 steps, no compile")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.quick:
        args.preset, args.image_size, args.heatmap_size, args.batch, args.steps = "tiny", 64, 16, 4, 2
    names = [v for v in args.variants.split(",") if not (args.quick and "compile" in v)]
    unknown = set(names) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)} (known: {list(VARIANTS)})")
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "rows": [],
    }
    for name in names:
        result["rows"].append(
            bench_variant(
                name,
                args.preset,
                args.image_size,
                args.heatmap_size,
                args.batch,
                device,
                args.steps,
                args.grad_mode,
                args.train_nfe,
            )
        )
        if args.out:
            args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
