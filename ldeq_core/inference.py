"""The inference fast path: numeric precision, memory format, torch.compile and CUDA-graph capture of the RwR step.

:class:`InferencePolicy` says how a model runs at inference; ``precision="auto"`` / ``compile=None`` pick, per
device, the fastest setting that passed the accuracy-parity check of ``bench/bench_inference.py`` (landmarks within
0.1 px at 256 px of the fp32 eager result on a trained model; BENCHMARKS.md sections 9 and 13):

* CUDA (compute capability >= 8.0): fp16 autocast, contiguous (NCHW) memory format, the fixed-budget RwR step
  compiled with ``torch.compile`` (inductor; the batch dimension dynamic, so one compilation serves every batch
  bucket >= 2, except the ``static_batches`` bucket 512, compiled for its exact size: 39 % of the bf16 peak
  there) and captured once per (budget, batch bucket) as a CUDA graph (batches are zero-padded up to the
  bucket). Measured on an H100 with the trained 300-W paper model: 1.38 ms/frame at batch 1, 10x fp32 eager at
  batch 8 and 256 (34.9 % of the bf16 peak), within 0.026 px of fp32; bf16 fails parity (0.10-0.43 px),
  channels_last is not faster.
* Older GPUs: fp32 with the CUDA graph (and compile from sm70).
* CPU: plain fp32, eager (the fallback; compile is available on request, CUDA graphs and TF32 do not exist there).

:class:`InferenceEngine` applies a policy to one model: ``full_solve`` (the model's own solver, any options, eager
under the policy's precision), ``fixed_steps`` (exactly ``nfe`` cell evaluations from a warm start, the RwR hot
path) and ``warmup`` (compile and capture ahead of the first request).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch

from ldeq_core.model import LandmarkDEQ, LDEQOutput

Precision = Literal["fp32", "tf32", "bf16", "fp16"]
_PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp16")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
StepFn = Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
DEFAULT_GRAPH_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# buckets compiled for their exact batch size: at 512 a batch-specialised compilation ran 4,734 frames/s on an H100
# against 4,174 for the dynamic-batch one (BENCHMARKS.md 13b); below 512 the dynamic compilation was as fast or faster
DEFAULT_STATIC_BATCHES = (512,)


@dataclass(frozen=True)
class InferencePolicy:
    """Requested inference settings; ``None`` / ``"auto"`` fields are decided per device by :meth:`resolve`."""

    precision: Literal["auto", "fp32", "tf32", "bf16", "fp16"] = "auto"
    channels_last: bool | None = None  # None: off (measured slower or no faster on an H100, BENCHMARKS 9 and 13)
    cuda_graphs: bool | None = None  # None: on with CUDA
    compile: bool | None = None  # None: on with CUDA sm70+ (torch.compile of the RwR step), off on CPU
    dynamic_batch: bool = True  # compile once for every batch bucket >= 2 (False: one compilation per bucket)
    graph_batches: tuple[int, ...] = DEFAULT_GRAPH_BATCHES
    static_batches: tuple[int, ...] = DEFAULT_STATIC_BATCHES  # with dynamic_batch: these get their own compilation

    def __post_init__(self) -> None:
        if self.precision not in _PRECISIONS:
            raise ValueError(f"inference.precision must be one of {_PRECISIONS}, got {self.precision!r}")
        batches = tuple(int(b) for b in self.graph_batches)
        if not batches or any(b < 1 for b in batches) or list(batches) != sorted(set(batches)):
            raise ValueError(f"inference.graph_batches must be increasing positive sizes, got {self.graph_batches}")
        object.__setattr__(self, "graph_batches", batches)
        static = tuple(int(b) for b in self.static_batches)
        if any(b < 2 for b in static) or list(static) != sorted(set(static)):
            raise ValueError(f"inference.static_batches must be increasing sizes >= 2, got {self.static_batches}")
        object.__setattr__(self, "static_batches", static)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> InferencePolicy:
        """From a params/config mapping (keys: the fields of this class)."""
        d = dict(d or {})
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown inference keys: {sorted(unknown)}")
        for key in ("graph_batches", "static_batches"):
            if key in d and d[key] is not None:
                d[key] = tuple(d[key])
            elif key in d:
                del d[key]
        return cls(**d)

    def resolve(self, device: torch.device | str) -> ResolvedPolicy:
        """Concrete settings for ``device``: what auto means there, and CPU fallbacks for CUDA-only features."""
        dev = torch.device(device)
        cuda = dev.type == "cuda"
        notes: list[str] = []
        precision: Precision
        major = torch.cuda.get_device_capability(dev)[0] if cuda else 0
        if self.precision == "auto":
            precision = "fp16" if major >= 8 else "fp32"
        elif self.precision == "tf32" and not cuda:
            precision = "fp32"
            notes.append("tf32 requested on a CPU: fp32")
        else:
            precision = self.precision
        graphs = cuda if self.cuda_graphs is None else bool(self.cuda_graphs)
        if graphs and not cuda:
            graphs = False
            notes.append("CUDA graphs requested without CUDA: eager")
        cl = False if self.channels_last is None else bool(self.channels_last)
        compiled = major >= 7 if self.compile is None else bool(self.compile)  # inductor's Triton needs sm70+
        static = self.static_batches if compiled and self.dynamic_batch else ()
        return ResolvedPolicy(
            dev.type, precision, cl, graphs, compiled, self.dynamic_batch, self.graph_batches, static, tuple(notes)
        )


@dataclass(frozen=True)
class ResolvedPolicy:
    """The settings an engine actually runs with on its device."""

    device: str
    precision: Precision
    channels_last: bool
    cuda_graphs: bool
    compile: bool
    dynamic_batch: bool
    graph_batches: tuple[int, ...]
    static_batches: tuple[int, ...] = ()  # compiled for their exact size (the others share the dynamic compilation)
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for ``ldeq info`` and the model card."""
        parts = [self.precision, "channels_last" if self.channels_last else "contiguous"]
        if self.compile:
            if not self.dynamic_batch:
                parts.append("torch.compile (static batch)")
            elif self.static_batches:
                parts.append(f"torch.compile (static batch {', '.join(map(str, self.static_batches))})")
            else:
                parts.append("torch.compile")
        parts.append("CUDA graphs (RwR step)" if self.cuda_graphs else "eager")
        text = f"{self.device}: " + ", ".join(parts)
        return text + (f" ({'; '.join(self.notes)})" if self.notes else "")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["graph_batches"] = list(self.graph_batches)
        d["static_batches"] = list(self.static_batches)
        d["notes"] = list(self.notes)
        return d


@contextlib.contextmanager
def precision_context(precision: Precision, device_type: str) -> Iterator[None]:
    """TF32 switches (CUDA) and bf16 / fp16 autocast for the body; the previous global switches are restored after."""
    prev = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        if device_type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
            torch.backends.cudnn.allow_tf32 = precision == "tf32"
        dtype = _AUTOCAST.get(precision, torch.bfloat16)
        with torch.autocast(device_type, dtype=dtype, enabled=precision in _AUTOCAST):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev


def warp_state_batch(z: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample states (N, C, H, W) with per-sample ``affine_grid`` thetas (N, 2, 3) (``align_corners=True``,
    bilinear, zeros outside): the crop-invariant RwR warm start (``ldeq_core.rwr.heatmap_warp_theta``). Pure tensor
    ops of fixed shape, so it is captured in the RwR step's CUDA graph."""
    with torch.autocast(z.device.type, enabled=False):  # fp32 sampling positions under any reduced precision
        grid = torch.nn.functional.affine_grid(theta.float(), list(z.shape), align_corners=True)
        out = torch.nn.functional.grid_sample(
            z.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )
    return out.to(z.dtype)


def _identity_thetas(n: int, device: torch.device) -> torch.Tensor:
    return torch.eye(2, 3, device=device).expand(n, 2, 3).contiguous()


class _GraphedSteps:
    """The fixed-steps function (``forward_fixed``, compiled or not), optionally preceded by the state warp,
    captured as a CUDA graph for one (nfe, batch, warp) triple, with static input/output buffers."""

    def __init__(
        self,
        model: LandmarkDEQ,
        step: StepFn,
        policy: ResolvedPolicy,
        nfe: int,
        batch: int,
        pool: Any,
        fmt: torch.memory_format,
        warp: bool = False,
    ) -> None:
        dev = next(model.parameters()).device
        size = model.cfg.image_size
        self.img = torch.zeros(batch, 3, size, size, device=dev).contiguous(memory_format=fmt)
        self.z0 = torch.zeros(model.z_shape(batch), device=dev).contiguous(memory_format=fmt)
        self.identity = _identity_thetas(batch, dev) if warp else None  # theta of the padding rows
        self.theta = None if self.identity is None else self.identity.clone()

        def run() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            z0 = self.z0 if self.theta is None else warp_state_batch(self.z0, self.theta).contiguous(memory_format=fmt)
            return step(self.img, z0, nfe)

        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side), precision_context(policy.precision, "cuda"):
            for _ in range(3):  # warm-up outside the graph (compilation, cuDNN algorithm choice, allocator)
                run()
        torch.cuda.current_stream(dev).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool), precision_context(policy.precision, "cuda"):
            self.out = run()

    def __call__(
        self, img: torch.Tensor, z0: torch.Tensor, theta: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = img.shape[0]
        self.img[:n].copy_(img)
        self.z0[:n].copy_(z0)
        if self.theta is not None:
            assert theta is not None
            self.theta[:n].copy_(theta)
        if n < self.img.shape[0]:  # padding rows: finite inputs, results discarded
            self.img[n:].zero_()
            self.z0[n:].zero_()
            if self.theta is not None and self.identity is not None:
                self.theta[n:].copy_(self.identity[n:])
        self.graph.replay()
        coords, z, rel = self.out
        return coords[:n].clone(), z[:n].clone(), rel[:n].clone()


class InferenceEngine:
    """One model run under one :class:`InferencePolicy` (on the model's device)."""

    def __init__(self, model: LandmarkDEQ, policy: InferencePolicy | None = None) -> None:
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.policy = (policy or InferencePolicy()).resolve(self.device)
        self._fmt = torch.channels_last if self.policy.channels_last else torch.contiguous_format
        # Module.to accepts memory_format at runtime (Tensor.to's keyword); torch's overloads for Module omit it
        self.model.to(memory_format=self._fmt)  # type: ignore[call-overload]
        self._step: StepFn = model.forward_fixed
        if self.policy.compile:
            self._compiled = torch.compile(
                model.forward_fixed, dynamic=None if self.policy.dynamic_batch else False, fullgraph=True
            )
            if self.policy.static_batches:  # a separate function, so that dynamo keeps a separate cache for them
                self._compiled_static = torch.compile(
                    lambda images, z0, nfe: model.forward_fixed(images, z0, nfe), dynamic=False, fullgraph=True
                )
            self._step = self._compiled_step
        self._graphs: dict[tuple[int, int, bool], _GraphedSteps] = {}
        self._pool: Any = None

    def describe(self) -> str:
        return self.policy.describe()

    def _compiled_step(
        self, images: torch.Tensor, z0: torch.Tensor, nfe: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # A dynamic batch dimension: one compilation serves every bucket >= 2 (batch 1 is specialised by torch)
        # except the static buckets, each compiled for its exact size.
        if images.shape[0] in self.policy.static_batches:
            return self._compiled_static(images, z0, nfe)
        if self.policy.dynamic_batch and images.shape[0] > 1:
            torch._dynamo.maybe_mark_dynamic(images, 0)
            torch._dynamo.maybe_mark_dynamic(z0, 0)
        return self._compiled(images, z0, nfe)

    def warmup(self, nfe: int, max_batch: int, warp: bool = False) -> list[int]:
        """Compile and capture the fixed-steps graphs (with the state warp when ``warp``) of every batch bucket up to
        ``max_batch`` now (rather than on the first request that needs each); returns the buckets prepared (none
        without CUDA graphs)."""
        if not self.policy.cuda_graphs:
            return []
        buckets = [b for b in self.policy.graph_batches if b <= max_batch]
        for b in buckets:
            self._graphed(nfe, b, warp)
        return buckets

    def _prep(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device).contiguous(memory_format=self._fmt)

    @torch.no_grad()
    def full_solve(self, images: torch.Tensor, z0: torch.Tensor | None = None, **kwargs: Any) -> LDEQOutput:
        """``model(images, z0, **kwargs)`` (its own solver unless ``solver=`` is given) under the policy."""
        with precision_context(self.policy.precision, self.device.type):
            return self.model(self._prep(images), None if z0 is None else self._prep(z0), **kwargs)

    @torch.no_grad()
    def fixed_steps(
        self, images: torch.Tensor, z0: torch.Tensor, nfe: int, thetas: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Exactly ``nfe`` cell evaluations from ``z0``: (coords (B, L, 2) in [0, 1), z, relative residual (B,)).

        ``thetas`` (B, 2, 3): warp ``z0`` first with :func:`warp_state_batch` (the crop-invariant RwR warm start);
        with CUDA graphs the warp is part of the captured graph, so it costs no extra launches or host syncs."""
        images, z0 = self._prep(images), self._prep(z0)
        if thetas is not None:
            thetas = thetas.to(self.device, torch.float32)
            if thetas.shape != (images.shape[0], 2, 3):
                raise ValueError(f"thetas must have shape ({images.shape[0]}, 2, 3), got {tuple(thetas.shape)}")
        n = images.shape[0]
        if not self.policy.cuda_graphs or n == 0:
            with precision_context(self.policy.precision, self.device.type):
                if thetas is not None:
                    z0 = warp_state_batch(z0, thetas).contiguous(memory_format=self._fmt)
                return self._step(images, z0, nfe)
        largest = self.policy.graph_batches[-1]
        parts = [
            self._graphed(nfe, images[i : i + largest].shape[0], thetas is not None)(
                images[i : i + largest], z0[i : i + largest], None if thetas is None else thetas[i : i + largest]
            )
            for i in range(0, n, largest)
        ]
        return tuple(torch.cat(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]

    def _graphed(self, nfe: int, n: int, warp: bool = False) -> _GraphedSteps:
        bucket = next(b for b in self.policy.graph_batches if b >= n)
        key = (nfe, bucket, warp)
        if key not in self._graphs:
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            self._graphs[key] = _GraphedSteps(
                self.model, self._step, self.policy, nfe, bucket, self._pool, self._fmt, warp
            )
        return self._graphs[key]
