"""ONNX export of a Landmark DEQ: the RwR step and the full solve, each a self-contained ONNX file.

Two graphs (both with a dynamic batch axis ``batch``, float32, opset 18, traced by ``torch.onnx.export``: by default
its TorchScript-based exporter, 7x faster here than the ``torch.export``-based one, which ``exporter="dynamo"``
selects; see :func:`_to_proto`):

* **rwr** (the fixed-budget RwR step, :meth:`~ldeq_core.model.LandmarkDEQ.forward_fixed`): inputs ``image``
  (B, 3, S, S) and ``state`` (B, C, S/4, S/4), the previous frame's equilibrium; outputs ``landmarks``
  (B, L, 2) in crop pixels, ``state_out`` (B, C, S/4, S/4), the state to feed to the next frame, and
  ``rel_residual`` (B,). The stem plus exactly ``nfe`` cell evaluations from ``state``, no stopping test.
* **solve** (a stream's first frame, or any frame without a usable previous state): input ``image``; outputs
  ``landmarks``, ``state_out``, ``nfe`` (B,) int64 and ``rel_residual``. The model's own solver (fixed-point
  iteration or Anderson, with its ``tol``, stop mode and Anderson ``m``, ``lam`` and ``beta``) from the all-zeros
  state, unrolled to a fixed budget of ``nfe`` cell evaluations: a sample that meets the tolerance is frozen by the
  same per-sample masks as :mod:`ldeq_core.solvers` (so the landmarks are those of the torch solver that stops
  early), but the graph always evaluates the cell ``nfe`` times. Anderson's small (m x m) least-squares system is
  solved by unrolled Gaussian elimination (ONNX has no linear solver): ``alpha = H^-1 1 / (1^T H^-1 1)`` with
  ``H = G G^T + lam I``, the same solution as the bordered system of the torch solver.

``image`` is the model input: RGB, scaled to [0, 1], ImageNet-normalised (:func:`ldeq_core.geometry.to_model_input`;
the mean and std are in the metadata). Each file carries ``metadata_props``: ``ldeq_format`` (``ldeq-onnx/1``),
``kind`` (rwr | solve), ``nfe``, ``n_landmarks``, ``z_channels``, ``image_size``, ``heatmap_size``, the solver
settings, ``checkpoint_sha256`` and ``source`` (zoo name or file), ``input_mean`` / ``input_std``, and the torch
and onnx versions and the exporter. ``export_model(..., mode="both")`` writes the RwR step to ``out`` and the solve to
:func:`solve_path_for` ``(out)`` (``model.onnx`` -> ``model.solve.onnx``). Files are written to a temp file and
renamed, so a failed export leaves nothing behind.

Needs the ``onnx`` extra (``pip install 'ldeq[onnx]'``: onnx, onnxruntime, and onnxscript for the dynamo exporter).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ldeq_core.defaults import BUDGET_NFE
from ldeq_core.geometry import IMAGENET_MEAN, IMAGENET_STD
from ldeq_core.heatmaps import soft_argmax
from ldeq_core.model import LandmarkDEQ
from ldeq_core.solvers import residuals

ONNX_FORMAT = "ldeq-onnx/1"
OPSET = 18
Kind = Literal["rwr", "solve"]
ExportMode = Literal["rwr", "solve", "both"]
Exporter = Literal["torchscript", "dynamo"]
RWR_INPUTS: tuple[str, ...] = ("image", "state")
RWR_OUTPUTS: tuple[str, ...] = ("landmarks", "state_out", "rel_residual")
SOLVE_INPUTS: tuple[str, ...] = ("image",)
SOLVE_OUTPUTS: tuple[str, ...] = ("landmarks", "state_out", "nfe", "rel_residual")
_INSTALL_HINT = "ONNX export needs the onnx extra: pip install 'ldeq[onnx]' (onnx, onnxscript, onnxruntime)"

Fn = Callable[[torch.Tensor], torch.Tensor]


def require(module: str) -> Any:
    """Import ``module`` (onnx, onnxscript, onnxruntime) or raise ``ImportError`` with the install command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{_INSTALL_HINT}; cannot import {module} ({err})") from None


def solve_path_for(path: str | Path) -> Path:
    """The solve graph's file next to the RwR step's ``path``: ``x.onnx`` -> ``x.solve.onnx``."""
    path = Path(path)
    return path.with_name(f"{path.stem if path.suffix == '.onnx' else path.name}.solve.onnx")


# ------------------------------------------------------------------------------------------------- graph modules


class RwRStepGraph(nn.Module):
    """``(image, state) -> (landmarks px, state_out, rel_residual)``: ``forward_fixed`` with ``nfe`` steps."""

    def __init__(self, model: LandmarkDEQ, nfe: int) -> None:
        super().__init__()
        if nfe < 1:
            raise ValueError(f"the RwR step needs nfe >= 1, got {nfe}")
        self.model, self.nfe = model, int(nfe)

    def forward(self, image: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        coords, z, rel = self.model.forward_fixed(image, state, self.nfe)
        return coords * float(self.model.cfg.image_size), z, rel


def _masked_fpi(f: Fn, z0: torch.Tensor, nfe: int, tol: float, stop_mode: str) -> tuple[torch.Tensor, ...]:
    """:func:`ldeq_core.solvers.fixed_point` with a scalar budget and no early exit (samples frozen by masks)."""
    b = z0.shape[0]
    conv = torch.zeros_like(z0[:, 0, 0, 0], dtype=torch.bool)
    count = torch.zeros_like(z0[:, 0, 0, 0], dtype=torch.long)
    rel_r = torch.full_like(z0[:, 0, 0, 0], float("inf"), dtype=torch.float32)
    abs_r = rel_r
    z = z0
    for _ in range(nfe):
        active = ~conv
        fz = f(z)
        a, r = residuals(fz, z)
        z = torch.where(active.view(b, 1, 1, 1), fz, z)
        count = count + active.long()
        abs_r = torch.where(active, a, abs_r)
        rel_r = torch.where(active, r, rel_r)
        crit = rel_r if stop_mode == "rel" else abs_r
        conv = conv | (active & (crit < tol))
    return z, count, rel_r


def _solve_spd_ones(h: torch.Tensor) -> torch.Tensor:
    """``y`` with ``h y = 1`` for a batch of small symmetric positive-definite ``h`` (B, n, n): Gaussian
    elimination without pivoting (stable for SPD matrices), unrolled over n."""
    n = h.shape[-1]
    rows = [h[:, i, :] for i in range(n)]
    rhs = [torch.ones_like(h[:, 0, 0]) for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            factor = rows[j][:, i] / rows[i][:, i]
            rows[j] = rows[j] - factor[:, None] * rows[i]
            rhs[j] = rhs[j] - factor * rhs[i]
    y: list[torch.Tensor] = [rhs[0]] * n
    for i in reversed(range(n)):
        acc = rhs[i]
        for j in range(i + 1, n):
            acc = acc - rows[i][:, j] * y[j]
        y[i] = acc / rows[i][:, i]
    return torch.stack(y, dim=1)


def _anderson_weights_graph(xs: list[torch.Tensor], fs: list[torch.Tensor], lam: float) -> torch.Tensor:
    """The Anderson mixing weights (B, n) of ``ldeq_core.solvers._anderson_weights`` without a linear solver."""
    g = torch.stack([f - x for f, x in zip(fs, xs, strict=True)], dim=1)  # (B, n, D)
    n = g.shape[1]
    h = g @ g.transpose(1, 2) + lam * torch.eye(n, dtype=g.dtype, device=g.device)
    y = _solve_spd_ones(h)
    return y / y.sum(dim=1, keepdim=True)


def _masked_anderson(
    f: Fn, z0: torch.Tensor, nfe: int, tol: float, stop_mode: str, m: int, lam: float, beta: float
) -> tuple[torch.Tensor, ...]:
    """:func:`ldeq_core.solvers.anderson` with a scalar budget and no early exit (samples frozen by masks)."""
    shape = z0.shape
    x = z0.flatten(1)
    xs = [torch.zeros_like(x) for _ in range(m)]
    fs = [torch.zeros_like(x) for _ in range(m)]
    conv = torch.zeros_like(x[:, 0], dtype=torch.bool)
    count = torch.zeros_like(x[:, 0], dtype=torch.long)
    best_crit = torch.full_like(x[:, 0], float("inf"), dtype=torch.float32)
    best_rel = best_crit
    best_f = x
    for k in range(nfe):
        active = ~conv
        if k == 1:
            x = fs[0]
        elif k >= 2:
            n = min(k, m)
            alpha = _anderson_weights_graph(xs[:n], fs[:n], lam).to(z0.dtype)
            stacked_f = torch.stack(fs[:n], dim=1)
            x = beta * (alpha[:, None, :] @ stacked_f)[:, 0]
            if beta != 1.0:
                x = x + (1 - beta) * (alpha[:, None, :] @ torch.stack(xs[:n], dim=1))[:, 0]
        fx = f(x.view(shape)).flatten(1)
        slot = k % m
        keep = active[:, None]
        xs[slot] = torch.where(keep, x, xs[slot])
        fs[slot] = torch.where(keep, fx, fs[slot])
        count = count + active.long()
        a, r = residuals(fx, x)
        crit = r if stop_mode == "rel" else a
        better = active & (crit < best_crit)
        best_f = torch.where(better[:, None], fx, best_f)
        best_rel = torch.where(better, r, best_rel)
        best_crit = torch.where(better, crit, best_crit)
        conv = conv | (active & (crit < tol))
    return best_f.view(shape), count, best_rel


class SolveGraph(nn.Module):
    """``image -> (landmarks px, state_out, nfe, rel_residual)``: the model's solver from zeros, ``nfe`` steps."""

    def __init__(self, model: LandmarkDEQ, nfe: int) -> None:
        super().__init__()
        solver = model.cfg.solver
        if solver.upstream:
            raise ValueError(
                "the model's solver is in upstream mode (batch-mean stop, spec §2.1-2.2), which has no per-sample "
                "ONNX equivalent: export --mode rwr only, or set solver.upstream=False"
            )
        if solver.method not in ("fpi", "anderson"):
            raise ValueError(f"solver {solver.method!r} has no ONNX solve graph (fpi and anderson do): --mode rwr")
        if nfe < 1:
            raise ValueError(f"the solve needs nfe >= 1, got {nfe}")
        self.model, self.nfe = model, int(nfe)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        model, s = self.model, self.model.cfg.solver
        x = model.stem(image)
        hm = model.cfg.heatmap_size
        z0 = x.new_zeros((x.shape[0], model.cfg.z_width, hm, hm))

        def f(z: torch.Tensor) -> torch.Tensor:
            return model.cell(z, x)

        if s.method == "fpi":
            z, count, rel = _masked_fpi(f, z0, self.nfe, s.tol, s.stop_mode)
        else:
            z, count, rel = _masked_anderson(
                f, z0, self.nfe, s.tol, s.stop_mode, s.anderson_m, s.anderson_lam, s.anderson_beta
            )
        coords, _ = soft_argmax(model.post_norm(z)[:, : model.cfg.n_landmarks])
        return coords * float(model.cfg.image_size), z, count, rel


# ------------------------------------------------------------------------------------------------------ export


@dataclass(frozen=True)
class ExportedGraph:
    """One written file: its path, kind, budget and metadata."""

    path: Path
    kind: Kind
    nfe: int
    metadata: dict[str, str]


def graph_metadata(
    model: LandmarkDEQ, kind: Kind, nfe: int, checkpoint_sha256: str, source: str, exporter: Exporter = "torchscript"
) -> dict[str, str]:
    """The ``metadata_props`` of an exported graph (all values strings, as ONNX requires)."""
    cfg, s = model.cfg, model.cfg.solver
    onnx = require("onnx")
    meta = {
        "ldeq_format": ONNX_FORMAT,
        "kind": kind,
        "nfe": str(nfe),
        "n_landmarks": str(cfg.n_landmarks),
        "z_channels": str(cfg.z_width),
        "image_size": str(cfg.image_size),
        "heatmap_size": str(cfg.heatmap_size),
        "checkpoint_sha256": checkpoint_sha256,
        "source": source,
        "input": "image (batch, 3, S, S) float32: RGB / 255, minus input_mean, divided by input_std (per channel)",
        "input_mean": json.dumps([round(float(v), 6) for v in IMAGENET_MEAN]),
        "input_std": json.dumps([round(float(v), 6) for v in IMAGENET_STD]),
        "landmarks": "crop pixels (x, y); crop pixel 4 j is heatmap cell j",
        "exporter": exporter,
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
    }
    if kind == "solve":
        meta["solver"] = json.dumps(
            {
                "method": s.method,
                "tol": s.tol,
                "stop_mode": s.stop_mode,
                "anderson_m": s.anderson_m,
                "anderson_lam": s.anderson_lam,
                "anderson_beta": s.anderson_beta,
            }
        )
    return meta


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress prints, torchvision notices and deprecation chatter."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _to_proto(graph: nn.Module, kind: Kind, model: LandmarkDEQ, exporter: Exporter) -> Any:
    """Trace ``graph`` at batch 2 with a dynamic batch axis; an ``onnx.ModelProto``.

    ``torchscript``: torch's TorchScript-based exporter (``dynamo=False``; deprecated in torch 2.9+ but present in
    2.13): 2.8 s for the zoo model's 8-NFE solve on a 2-core CPU. ``dynamo``: the ``torch.export``-based exporter
    (needs onnxscript): the same landmarks, but 42 s for both graphs and a solve file 1.6x larger.
    """
    onnx = require("onnx")
    s, hm = model.cfg.image_size, model.cfg.heatmap_size
    image = torch.zeros(2, 3, s, s)
    if kind == "rwr":
        args: tuple[torch.Tensor, ...] = (image, torch.zeros(2, model.cfg.z_width, hm, hm))
        names, outs = RWR_INPUTS, RWR_OUTPUTS
    else:
        args, names, outs = (image,), SOLVE_INPUTS, SOLVE_OUTPUTS
    with _quiet_exporter(), torch.no_grad():
        if exporter == "torchscript":
            buf = io.BytesIO()
            torch.onnx.export(
                graph.eval(),
                args,
                buf,  # type: ignore[arg-type]  # the TorchScript exporter writes to file objects too
                input_names=list(names),
                output_names=list(outs),
                dynamic_axes={n: {0: "batch"} for n in (*names, *outs)},
                opset_version=OPSET,
                dynamo=False,
            )
            return onnx.load_from_string(buf.getvalue())
        if exporter != "dynamo":
            raise ValueError(f"exporter must be 'torchscript' or 'dynamo', got {exporter!r}")
        require("onnxscript")
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.onnx.export(
            graph.eval(),
            args,
            f=None,
            input_names=list(names),
            output_names=list(outs),
            dynamic_shapes={n: {0: batch} for n in names},
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    return program.model_proto


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_graph(
    model: LandmarkDEQ,
    out: str | Path,
    kind: Kind,
    nfe: int,
    *,
    checkpoint_sha256: str = "",
    source: str = "",
    exporter: Exporter = "torchscript",
) -> ExportedGraph:
    """Export one graph (``rwr`` or ``solve``) of ``model`` (moved to the CPU, eval mode) to ``out``, checked with
    ``onnx.checker`` and written atomically."""
    onnx = require("onnx")
    if kind not in ("rwr", "solve"):
        raise ValueError(f"kind must be 'rwr' or 'solve', got {kind!r}")
    model = model.cpu().eval()
    graph: nn.Module = RwRStepGraph(model, nfe) if kind == "rwr" else SolveGraph(model, nfe)
    proto = _to_proto(graph, kind, model, exporter)
    meta = graph_metadata(model, kind, nfe, checkpoint_sha256, source, exporter)
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"ldeq Landmark DEQ, {kind} graph, {nfe} NFE ({source or 'unnamed model'})"
    onnx.checker.check_model(proto, full_check=True)
    path = Path(out)
    _write_atomic(path, proto.SerializeToString())
    return ExportedGraph(path, kind, int(nfe), meta)


def export_model(
    model: LandmarkDEQ,
    out: str | Path,
    *,
    mode: ExportMode = "both",
    nfe: int = BUDGET_NFE,
    solve_nfe: int | None = None,
    checkpoint_sha256: str = "",
    source: str = "",
    exporter: Exporter = "torchscript",
) -> list[ExportedGraph]:
    """Export the RwR step (``nfe`` cell evaluations) and/or the full solve (``solve_nfe``, default the model's
    solver budget). ``mode="both"``: the step to ``out``, the solve to :func:`solve_path_for` ``(out)``."""
    if mode not in ("rwr", "solve", "both"):
        raise ValueError(f"mode must be rwr, solve or both, got {mode!r}")
    out = Path(out)
    budget = model.cfg.solver.max_nfe if solve_nfe is None else int(solve_nfe)
    jobs: list[tuple[Path, Kind, int]] = []
    if mode in ("rwr", "both"):
        jobs.append((out, "rwr", nfe))
    if mode in ("solve", "both"):
        jobs.append((solve_path_for(out) if mode == "both" else out, "solve", budget))
    if mode != "rwr":
        SolveGraph(model, budget)  # validates (upstream solvers) before anything is written
    return [
        export_graph(model, path, kind, n, checkpoint_sha256=checkpoint_sha256, source=source, exporter=exporter)
        for path, kind, n in jobs
    ]


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    mode: ExportMode = "both",
    nfe: int = BUDGET_NFE,
    solve_nfe: int | None = None,
    exporter: Exporter = "torchscript",
) -> list[ExportedGraph]:
    """Export a zoo model (by name) or a checkpoint file; errors name the file (missing, unreadable, not ldeq)."""
    from ldeq_core.landmarker import load_model

    loaded = load_model(checkpoint, "cpu")
    source = str(loaded.metadata.get("zoo_name") or checkpoint)
    return export_model(
        loaded.model,
        out,
        mode=mode,
        nfe=nfe,
        solve_nfe=solve_nfe,
        checkpoint_sha256=loaded.sha256,
        source=source,
        exporter=exporter,
    )


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (without loading its weights into a session)."""
    onnx = require("onnx")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ONNX file not found")
    try:
        proto = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as err:  # protobuf DecodeError and friends
        raise ValueError(f"{path}: not an ONNX file ({type(err).__name__}: {err})") from None
    return {p.key: p.value for p in proto.metadata_props}


# ------------------------------------------------------------------------------------------------------ parity


def parity_inputs(model: LandmarkDEQ, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two related model inputs (B, 3, S, S): a smooth random image and the same image shifted by 2 px (a
    "next frame"), ImageNet-normalised like real crops."""
    s = model.cfg.image_size
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, s // 8, s // 8, generator=gen)
    img = torch.nn.functional.interpolate(low, size=(s + 2, s + 2), mode="bilinear", align_corners=False)
    mean = torch.as_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.as_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    first, second = img[..., :s, :s], img[..., 2:, 2:]
    return ((first - mean) / std).contiguous(), ((second - mean) / std).contiguous()


@torch.no_grad()
def check_parity(
    model: LandmarkDEQ, graphs: list[ExportedGraph], batch: int = 2, threads: int | None = None
) -> dict[str, float]:
    """Largest landmark difference (crop px) between onnxruntime and torch for each exported graph.

    ``solve``: the first parity image from zeros, against ``model(image)`` with the model's solver (on an
    unconverged sample that stops early in torch the graph still matches: the masks freeze it). ``rwr``: the
    second image from the torch solve's state of the first, against ``forward_fixed``.
    """
    from ldeq_core.onnx_runtime import OnnxGraph

    model = model.cpu().eval()
    first, second = parity_inputs(model, batch)
    ref = model(first)
    size = float(model.cfg.image_size)
    out: dict[str, float] = {}
    for g in graphs:
        sess = OnnxGraph(g.path, threads=threads)
        if g.kind == "solve":
            got = sess.run(image=first.numpy())["landmarks"]
            want = ref.coords.numpy() * size
        else:
            got = sess.run(image=second.numpy(), state=ref.z_star.numpy())["landmarks"]
            want = model.forward_fixed(second, ref.z_star, g.nfe)[0].numpy() * size
        out[g.kind] = float(np.abs(got - want).max())
    return out
