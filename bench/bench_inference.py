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
    """One way to run the RwR step, named ``<precision>[+cl][+compile[+static]][+graph]`` (e.g. ``fp16+compile+graph``).

    ``fp32`` is the plain baseline (eager, the model called directly); every other variant runs through
    :class:`InferenceEngine` with the matching :class:`InferencePolicy`, i.e. exactly the code evaluation and
    serving would run with that policy. ``default`` is the engine with the default policy.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        if name in ("default", "baseline"):
            self.dtype = "auto" if name == "default" else "fp32"
            self.channels_last = self.compile = self.graph = self.static = False
            return
        dtype, *flags = name.split("+")
        unknown = set(flags) - {"cl", "compile", "static", "graph"}
        if dtype not in ("fp32", "tf32", "bf16", "fp16") or unknown:
            raise ValueError(f"unknown variant {name!r}")
        self.dtype = dtype
        self.channels_last, self.compile, self.graph = "cl" in flags, "compile" in flags, "graph" in flags
        self.static = "static" in flags  # compile specialised to the batch size (default: dynamic batch)

    def policy(self, batch: int) -> InferencePolicy:
        if self.name == "default":
            return InferencePolicy()
        return InferencePolicy(
            precision=self.dtype,  # type: ignore[arg-type]
            channels_last=self.channels_last,
            cuda_graphs=self.graph,
            compile=self.compile,
            dynamic_batch=not self.static,
            graph_batches=(batch,),
        )


VARIANTS = [
    Variant(n)
    for n in (
        "fp32",
        "fp32+graph",
        "tf32",
        "tf32+graph",
        "tf32+compile",
        "tf32+compile+graph",
        "tf32+cl+graph",
        "bf16",
        "bf16+graph",
        "bf16+cl+graph",
        "bf16+compile+graph",
        "fp16",
        "fp16+graph",
        "fp16+cl+graph",
        "fp16+compile+graph",
        "fp16+cl+compile+graph",
        "default",
    )
]
PARITY_PX_AT_256 = 0.1  # issue target: landmarks within 0.1 px (256x256 crop) of fp32 eager


def make_step(model: LandmarkDEQ, v: Variant, img: torch.Tensor, z0: torch.Tensor, nfe: int, device: torch.device):
    """A zero-argument callable running ``nfe`` RwR steps of ``v`` on (img, z0) and returning the landmarks."""
    torch._dynamo.reset()  # each compiled variant starts from a clean cache (no recompilation limits)
    if v.name in ("fp32", "baseline"):
        model = model.to(memory_format=torch.contiguous_format)
        img, z0 = img.contiguous(), z0.contiguous()
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        return lambda: model.forward_fixed(img, z0, nfe)[0]
    engine = InferenceEngine(model, v.policy(img.shape[0]))
    return lambda: engine.fixed_steps(img, z0, nfe)[0]


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
    sink: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """RwR step speed and parity of each variant at each batch size; ``sink`` gets the rows so far after each one
    (so a run cut short by a time limit keeps what it measured)."""
    cfg = get_preset(preset) if checkpoint is None else None
    rows: list[dict] = []
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
        base_fn = make_step(model, Variant("baseline"), img, z0, nfe, device)
        reference = base_fn().float().clone()
        base_sec = None
        for v in variants:
            if v.graph and device.type != "cuda":
                continue
            try:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                fn = make_step(model, v, img, z0, nfe, device)
                out = fn().float()
                sec = timed(fn, device)
            except Exception as exc:  # record and go on: one failing variant must not lose the others
                rows.append({"preset": preset, "batch": b, "variant": v.name, "error": repr(exc)[:300]})
                print(json.dumps(rows[-1]), flush=True)
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
                    "policy": v.policy(b).resolve(device).describe() if v.name != "fp32" else "fp32 eager (baseline)",
                    "state_bytes_per_stream": z0[0].numel() * z0.element_size(),
                    "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            if sink is not None:
                sink(rows)
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
def profile_kernels(
    preset: str, batch: int, device: torch.device, nfe: int = 2, top: int = 12, variant: Variant | None = None
) -> dict:
    """torch.profiler over one variant's RwR step (the default inference path unless given): the top GPU
    kernels and their share of time."""
    variant = variant or Variant("default")
    from torch.profiler import ProfilerActivity, profile

    cfg = get_preset(preset)
    model = LandmarkDEQ(cfg).to(device).eval()
    img = torch.randn(batch, 3, cfg.image_size, cfg.image_size, device=device)
    z0 = model.cell.norm(torch.randn(model.z_shape(batch), device=device))
    step = make_step(model, variant, img, z0, nfe, device)
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
    result = {
        "preset": preset,
        "batch": batch,
        "variant": variant.name,
        "nfe": nfe,
        "device_us_per_step": total / reps,
        "kernels_per_step": sum(c for _, _, c in rows) / reps,
        "top": kernels,
    }
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
    p.add_argument("--profile-variants", default="default", help="variants to profile at each --profile batch")
    p.add_argument("--only-rwr", action="store_true", help="skip the full-solve and training-memory parts")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    presets = ["tiny"] if args.quick else args.presets.split(",")
    batches = [2] if args.quick else [int(b) for b in args.batches.split(",")]
    variants = [Variant(n) for n in args.variants.split(",") if n]
    if args.quick:
        variants = [v for v in variants if not v.compile]
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
        result["profile"] = [
            profile_kernels(presets[0], int(b), device, variant=Variant(n))
            for b in args.profile.split(",")
            if b.strip()
            for n in args.profile_variants.split(",")
        ]

    def save(rwr_rows: list[dict]) -> None:
        """Write the result so far (with ``rwr_rows`` as its RwR rows): a time-out keeps what was measured."""
        if args.out:
            args.out.write_text(json.dumps({**result, "rwr": rwr_rows}, indent=1))

    if args.checkpoint is not None:
        # Parity and speed of the variants on a trained model and real crops; nothing else.
        result["rwr"] = bench_rwr(
            "checkpoint", batches, variants, device, checkpoint=args.checkpoint, inputs=args.inputs, sink=save
        )
        save(result["rwr"])
        return result
    for preset in presets:
        done = list(result["rwr"])
        result["rwr"] += bench_rwr(preset, batches, variants, device, sink=lambda rows, done=done: save(done + rows))
        if not args.only_rwr:
            result["full_solve"] += bench_full_solve(preset, batches[:1] if args.quick else [1, 32], device)
        save(result["rwr"])
    if args.only_rwr:
        return result
    budgets = [2] if args.quick else [4, 8, 16, 32]
    result["training_memory"] = bench_training_memory(
        presets[0], 1 if args.quick else args.train_batch, budgets, device
    )
    save(result["rwr"])
    return result


if __name__ == "__main__":
    main()
