"""Throughput, latency and memory of LDEQ inference (RwR fixed-budget step and per-frame full solve) and training.

Run on a GPU:  python bench/bench_inference.py --device cuda --out results.json
Quick CPU smoke (what the test suite runs):  python bench/bench_inference.py --device cpu --quick

Every variant is compared with the plain baseline (eager fp32, the straightforward solver) on the same inputs:
the speed ratio and the largest landmark difference in crop pixels are reported.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ldeq_core.config import SolverConfig, get_preset
from ldeq_core.inference import InferenceEngine, InferencePolicy
from ldeq_core.model import LandmarkDEQ
from ldeq_core.profiling import model_cost


def timed(fn: Callable[[], object], device: torch.device, min_time: float = 0.4, warmup: int = 3) -> float:
    """Mean seconds per call of ``fn`` (CUDA-synchronised), over at least ``min_time`` seconds."""
    for _ in range(warmup):
        fn()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time and n >= 3:
            return elapsed / n


def matmul_peak_tflops(device: torch.device, n: int = 8192) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    sec = timed(lambda: a @ b, device, min_time=1.0)
    return 2 * n**3 / sec / 1e12


class Variant:
    """One way to run the RwR step: dtype, memory format, and optional compile / CUDA graph."""

    def __init__(self, name: str, dtype: str, channels_last: bool, mode: str = "eager") -> None:
        self.name, self.dtype, self.channels_last, self.mode = name, dtype, channels_last, mode


VARIANTS = [
    Variant("fp32", "fp32", False),
    Variant("fp32+graph", "fp32", False, "graph"),
    Variant("tf32", "tf32", False),
    Variant("tf32+graph", "tf32", False, "graph"),
    Variant("tf32+compile", "tf32", False, "compile"),
    Variant("tf32+cl", "tf32", True),
    Variant("tf32+cl+graph", "tf32", True, "graph"),
    Variant("tf32+cl+compile", "tf32", True, "compile"),
    Variant("bf16", "bf16", False),
    Variant("bf16+cl", "bf16", True),
    Variant("bf16+cl+graph", "bf16", True, "graph"),
    Variant("bf16+cl+compile", "bf16", True, "compile"),
    Variant("default", "auto", False, "engine"),  # InferenceEngine with the default policy: what eval/serve run
]
PARITY_PX_AT_256 = 0.1  # issue target: landmarks within 0.1 px (256x256 crop) of fp32 eager


def make_step(model: LandmarkDEQ, v: Variant, img: torch.Tensor, z0: torch.Tensor, nfe: int, device: torch.device):
    if v.mode == "engine":
        engine = InferenceEngine(model, InferencePolicy())

        def engine_step() -> torch.Tensor:
            return engine.fixed_steps(img, z0, nfe)[0]

        return engine_step
    torch.backends.cuda.matmul.allow_tf32 = v.dtype == "tf32"
    torch.backends.cudnn.allow_tf32 = v.dtype == "tf32"
    fmt = torch.channels_last if v.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    img = img.contiguous(memory_format=fmt)
    z0 = z0.contiguous(memory_format=fmt)
    use_bf16 = v.dtype == "bf16"

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16, cache_enabled=False):
            return model.forward_fixed(img, z0, nfe)[0]

    if v.mode == "compile":
        compiled = torch.compile(model.forward_fixed)

        def step() -> torch.Tensor:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                return compiled(img, z0, nfe)[0]

    if v.mode == "graph" and device.type == "cuda":
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = step()

        def replay() -> torch.Tensor:
            graph.replay()
            return static_out

        return replay
    return step


@torch.no_grad()
def _trained_setup(checkpoint: Path, inputs: Path, b: int, device: torch.device):
    """A trained model, real face crops (tiled to batch ``b``) and their fp32 equilibria as the warm start."""
    import numpy as np

    from ldeq_core.checkpoints import load_checkpoint
    from ldeq_core.geometry import to_model_input

    model = load_checkpoint(checkpoint).model.to(device).eval()
    crops = np.load(inputs)["crops"]
    img = to_model_input(crops[np.arange(b) % len(crops)], device)
    z0 = model(img).z_star  # the model's own full solve: RwR steps then start near the fixed point
    return model, img, z0


@torch.no_grad()
def bench_rwr(
    preset: str,
    batches: list[int],
    variants: list[Variant],
    device: torch.device,
    nfe: int = 2,
    checkpoint: Path | None = None,
    inputs: Path | None = None,
) -> list[dict]:
    cfg = get_preset(preset) if checkpoint is None else None
    rows = []
    for b in batches:
        torch.manual_seed(0)
        if checkpoint is not None and inputs is not None:
            model, img, z0 = _trained_setup(checkpoint, inputs, b, device)
            cfg = model.cfg
        else:
            model = LandmarkDEQ(cfg).to(device).eval()
            img = torch.randn(b, 3, cfg.image_size, cfg.image_size, device=device)
            z0 = model.cell.norm(torch.randn(model.z_shape(b), device=device))  # a heatmap-like warm start
        cost = model_cost(cfg)
        base_fn = make_step(model, Variant("baseline", "fp32", False), img, z0, nfe, device)
        reference = base_fn().float().clone()
        base_sec = None
        for v in variants:
            if v.mode == "graph" and device.type != "cuda":
                continue
            try:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                fn = make_step(model, v, img, z0, nfe, device)
                out = fn().float()
                sec = timed(fn, device)
            except Exception as exc:  # record and go on: one failing variant must not lose the others
                rows.append({"preset": preset, "batch": b, "variant": v.name, "error": repr(exc)[:300]})
                continue
            base_sec = sec if v.name == "fp32" else base_sec
            flops = 2 * cost.macs_per_frame(nfe) * b
            rows.append(
                {
                    "preset": preset,
                    "batch": b,
                    "variant": v.name,
                    "nfe": nfe,
                    "ms_per_batch": sec * 1e3,
                    "ms_per_frame": sec * 1e3 / b,
                    "frames_per_s": b / sec,
                    "tflops": flops / sec / 1e12,
                    "speedup_vs_fp32_eager": (base_sec / sec) if base_sec else None,
                    "max_landmark_diff_px": float((out - reference).abs().max()) * cfg.image_size,
                    "max_landmark_diff_px_at_256": float((out - reference).abs().max()) * 256,
                    "parity_ok": float((out - reference).abs().max()) * 256 <= PARITY_PX_AT_256,
                    "policy": InferencePolicy().resolve(device).describe() if v.mode == "engine" else None,
                    "state_bytes_per_stream": z0[0].numel() * z0.element_size(),
                    "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        del model
    return rows


@torch.no_grad()
def bench_full_solve(preset: str, batches: list[int], device: torch.device) -> list[dict]:
    """Per-frame inference: the model's own solver from zeros, ours (per-sample) vs upstream (batch-mean)."""
    cfg = get_preset(preset)
    rows = []
    for b in batches:
        model = LandmarkDEQ(cfg).to(device).eval()
        img = torch.randn(b, 3, cfg.image_size, cfg.image_size, device=device)
        for name, solver in (
            ("ours", cfg.solver),
            (
                "upstream",
                SolverConfig(
                    method=cfg.solver.method,
                    upstream=True,
                    upstream_max_iters=cfg.solver.max_nfe - 3,
                    tol=cfg.solver.tol,
                ),
            ),
        ):
            out = model(img, solver=solver)
            sec = timed(lambda solver=solver, model=model, img=img: model(img, solver=solver), device)
            rows.append(
                {
                    "preset": preset,
                    "batch": b,
                    "variant": f"full_solve_{name}",
                    "nfe_mean": float(out.stats.nfe.float().mean()),
                    "ms_per_frame": sec * 1e3 / b,
                    "frames_per_s": b / sec,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_training_memory(preset: str, batch: int, budgets: list[int], device: torch.device) -> list[dict]:
    """Peak memory of one training step (forward + backward) for implicit vs unrolled gradients."""
    rows = []
    cfg = get_preset(preset)
    for mode in ("implicit", "unrolled"):
        for nfe in budgets:
            model = LandmarkDEQ(cfg.replace(grad={"mode": mode}, solver={"method": "fpi"})).to(device).train()
            img = torch.randn(batch, 3, cfg.image_size, cfg.image_size, device=device)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            out = model(img, max_nfe=nfe, tol=0.0)
            out.coords.sum().backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            rows.append(
                {
                    "preset": preset,
                    "batch": batch,
                    "grad": mode,
                    "forward_nfe": nfe,
                    "step_s": time.perf_counter() - start,
                    "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            del model, out
    return rows


@torch.no_grad()
def profile_kernels(preset: str, batch: int, device: torch.device, nfe: int = 2, top: int = 12) -> dict:
    """torch.profiler over the default inference path's RwR step: the top GPU kernels and their share of time."""
    from torch.profiler import ProfilerActivity, profile

    cfg = get_preset(preset)
    model = LandmarkDEQ(cfg).to(device).eval()
    img = torch.randn(batch, 3, cfg.image_size, cfg.image_size, device=device)
    z0 = model.cell.norm(torch.randn(model.z_shape(batch), device=device))
    step = make_step(model, Variant("default", "auto", False, "engine"), img, z0, nfe, device)
    for _ in range(3):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    reps = 10
    with profile(activities=activities) as prof:
        for _ in range(reps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "self_device_time_total", 0) if device.type == "cuda" else e.self_cpu_time_total
        if t > 0:
            rows.append((e.key, float(t), int(e.count)))
    total = sum(t for _, t, _ in rows) or 1.0
    rows.sort(key=lambda r: -r[1])
    kernels = [
        {"name": k[:120], "share": t / total, "us_per_step": t / reps, "calls_per_step": c / reps}
        for k, t, c in rows[:top]
    ]
    result = {"preset": preset, "batch": batch, "nfe": nfe, "device_us_per_step": total / reps, "top": kernels}
    print(json.dumps(result, indent=1), flush=True)
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--presets", default="paper,tiny")
    p.add_argument("--batches", default="1,8,32,128,256,512")
    p.add_argument("--variants", default=",".join(v.name for v in VARIANTS))
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--quick", action="store_true", help="tiny preset, batch 2, no compile: a smoke run")
    p.add_argument("--checkpoint", type=Path, default=None, help="a trained checkpoint (parity on real inputs)")
    p.add_argument("--inputs", type=Path, default=None, help="npz with uint8 'crops' (N, S, S, 3) for --checkpoint")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--profile", default="", help="batch sizes to profile the default path at, e.g. 1,256")
    p.add_argument("--only-rwr", action="store_true", help="skip the full-solve and training-memory parts")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    presets = ["tiny"] if args.quick else args.presets.split(",")
    batches = [2] if args.quick else [int(b) for b in args.batches.split(",")]
    wanted = set(args.variants.split(","))
    variants = [v for v in VARIANTS if v.name in wanted and not (args.quick and v.mode == "compile")]
    result: dict = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        result["bf16_matmul_peak_tflops"] = matmul_peak_tflops(device)
        print("bf16 matmul peak TFLOP/s:", result["bf16_matmul_peak_tflops"], flush=True)
    result["rwr"] = []
    result["full_solve"] = []
    result["training_memory"] = []
    if args.profile:
        result["profile"] = [profile_kernels(presets[0], int(b), device) for b in args.profile.split(",") if b.strip()]
    if args.checkpoint is not None:
        # Parity and speed of the variants on a trained model and real crops; nothing else.
        result["rwr"] = bench_rwr(
            "checkpoint", batches, variants, device, checkpoint=args.checkpoint, inputs=args.inputs
        )
        if args.out:
            args.out.write_text(json.dumps(result, indent=1))
        return result
    for preset in presets:
        result["rwr"] += bench_rwr(preset, batches, variants, device)
        if not args.only_rwr:
            result["full_solve"] += bench_full_solve(preset, batches[:1] if args.quick else [1, 32], device)
        if args.out:
            args.out.write_text(json.dumps(result, indent=1))
    if args.only_rwr:
        return result
    budgets = [2] if args.quick else [4, 8, 16, 32]
    result["training_memory"] = bench_training_memory(
        presets[0], 1 if args.quick else args.train_batch, budgets, device
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
