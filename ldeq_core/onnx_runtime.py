"""Running exported Landmark DEQ graphs (:mod:`ldeq_core.onnx_export`) with onnxruntime on the CPU.

:class:`OnnxGraph` is one file in an ``onnxruntime.InferenceSession`` with its metadata. :class:`OnnxEngine` has the
call shape of :class:`~ldeq_core.inference.InferenceEngine` that :class:`~ldeq_core.rwr.RwRTracker` uses
(``fixed_steps`` for warm frames, ``full_solve`` for fresh ones), so ``RwRTracker(model, cfg, engine=OnnxEngine(...))``
runs RwR on onnxruntime with unchanged semantics: per-stream state, resets, and the state warp (``warp_state``:
the previous equilibrium is resampled into the new crop by torch's ``grid_sample`` outside the graph, then fed to
the RwR step). Not supported with ONNX (a clear error): the proximal term (``gamma > 0``), a stopping tolerance on
warm frames (``tol > 0``), ``upstream`` RwR, and a budget other than the exported one.

:func:`engine_for_checkpoint` exports once into a cache (``$LDEQ_CACHE_DIR/onnx`` or ``~/.cache/ldeq/onnx``) keyed
by the checkpoint's sha256 and the budgets, or opens a given file (its ``.solve.onnx`` sibling with it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ldeq_core.checkpoints import LoadedCheckpoint
from ldeq_core.inference import warp_state_batch
from ldeq_core.model import LandmarkDEQ, LDEQOutput
from ldeq_core.onnx_export import ONNX_FORMAT, export_model, require, solve_path_for
from ldeq_core.solvers import SolverStats


def session_options(threads: int | None = None) -> Any:
    """onnxruntime options: all graph optimisations, ``threads`` intra-op threads (default: torch's count), and no
    spinning between runs (spinning threads steal the CPU from the cropping and warping around each call)."""
    ort = require("onnxruntime")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


class OnnxGraph:
    """One exported graph (rwr or solve) in an onnxruntime CPU session."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        ort = require("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: ONNX file not found")
        try:
            self.session = ort.InferenceSession(
                os.fspath(self.path), session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own Fail / InvalidProtobuf / InvalidGraph
            raise ValueError(f"{self.path}: onnxruntime cannot load it ({type(err).__name__}: {err})") from None
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        if self.metadata.get("ldeq_format") != ONNX_FORMAT:
            raise ValueError(f"{self.path}: not an ldeq ONNX export (no ldeq_format={ONNX_FORMAT} metadata)")
        self.kind = self.metadata["kind"]
        self.nfe = int(self.metadata["nfe"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs by name for float32 inputs by name (``image``, and ``state`` for the RwR step)."""
        feed = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}
        return dict(zip(self.outputs, self.session.run(None, feed), strict=True))

    def check_model(self, model: LandmarkDEQ, checkpoint_sha256: str | None = None) -> None:
        """Raise ``ValueError`` naming the file if it was exported from another model (sizes or checkpoint hash)."""
        cfg = model.cfg
        want = {"n_landmarks": cfg.n_landmarks, "z_channels": cfg.z_width, "image_size": cfg.image_size}
        for key, value in want.items():
            if self.metadata.get(key) != str(value):
                raise ValueError(f"{self.path}: {key} {self.metadata.get(key)} in the ONNX file, {value} in the model")
        sha = self.metadata.get("checkpoint_sha256", "")
        if checkpoint_sha256 and sha and sha != checkpoint_sha256:
            raise ValueError(
                f"{self.path}: exported from checkpoint sha256 {sha[:12]}, not the model's {checkpoint_sha256[:12]}"
            )


class OnnxEngine:
    """RwR's model calls on onnxruntime: the drop-in for :class:`~ldeq_core.inference.InferenceEngine` in
    :class:`~ldeq_core.rwr.RwRTracker` (``engine.model`` is the torch model, used for its config and the state
    warp; its weights are not run)."""

    def __init__(
        self,
        model: LandmarkDEQ,
        rwr: str | Path | None,
        solve: str | Path | None,
        *,
        threads: int | None = None,
        checkpoint_sha256: str | None = None,
    ) -> None:
        if next(model.parameters()).device.type != "cpu":
            raise ValueError("the ONNX runtime runs on the CPU: load the model with device cpu")
        self.model = model.eval()
        self.device = torch.device("cpu")
        self.rwr = None if rwr is None else OnnxGraph(rwr, threads)
        self.solve = None if solve is None else OnnxGraph(solve, threads)
        for graph, kind in ((self.rwr, "rwr"), (self.solve, "solve")):
            if graph is not None:
                if graph.kind != kind:
                    raise ValueError(f"{graph.path}: a {graph.kind} graph where a {kind} graph was expected")
                graph.check_model(model, checkpoint_sha256)

    def describe(self) -> str:
        parts = [f"rwr {self.rwr.nfe} NFE" if self.rwr else "", f"solve {self.solve.nfe} NFE" if self.solve else ""]
        return "cpu: onnxruntime (" + ", ".join(p for p in parts if p) + ")"

    def fixed_steps(
        self, images: torch.Tensor, z0: torch.Tensor, nfe: int, thetas: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Exactly ``nfe`` (the exported budget) cell evaluations from ``z0``: (coords in [0, 1), z, rel residual);
        ``thetas`` warps ``z0`` first (in torch, as the torch engine does)."""
        if thetas is not None:
            z0 = warp_state_batch(z0.float(), thetas.float())
        if self.rwr is None:
            raise ValueError("no RwR step graph was loaded (export with --mode rwr or both)")
        if nfe != self.rwr.nfe:
            raise ValueError(f"{self.rwr.path}: exported for a {self.rwr.nfe}-NFE RwR step, {nfe} requested")
        out = self.rwr.run(image=images.detach().cpu().numpy(), state=z0.detach().cpu().float().numpy())
        size = float(self.model.cfg.image_size)
        return (
            torch.from_numpy(out["landmarks"]) / size,
            torch.from_numpy(out["state_out"]),
            torch.from_numpy(out["rel_residual"]),
        )

    def full_solve(self, images: torch.Tensor, z0: torch.Tensor | None = None, **kwargs: Any) -> LDEQOutput:
        """The exported solve from zeros (the model's solver at the exported fixed budget). ``sigma`` is NaN (not
        exported); a warm start or solver overrides are refused."""
        if self.solve is None:
            raise ValueError("no solve graph was loaded (export with --mode solve or both)")
        if z0 is not None or kwargs:
            raise ValueError(
                "the ONNX solve starts from zeros with the model's solver: warm starts, gamma, tol and upstream "
                "RwR need the torch runtime"
            )
        out = self.solve.run(image=images.detach().cpu().numpy())
        coords = torch.from_numpy(out["landmarks"]) / float(self.model.cfg.image_size)
        z = torch.from_numpy(out["state_out"])
        rel = torch.from_numpy(out["rel_residual"])
        nfe = torch.from_numpy(out["nfe"]).long()
        tol = self.model.cfg.solver.tol
        stats = SolverStats(nfe, torch.full_like(rel, float("nan")), rel, rel < tol)
        sigma = torch.full(coords.shape[:2], float("nan"))
        return LDEQOutput(coords, sigma, z, z, stats)


def onnx_cache_dir() -> Path:
    """``$LDEQ_CACHE_DIR/onnx`` when set, else ``~/.cache/ldeq/onnx``."""
    env = os.environ.get("LDEQ_CACHE_DIR")
    return (Path(env) if env else Path.home() / ".cache" / "ldeq") / "onnx"


def cached_export_path(sha256: str, nfe: int, solve_nfe: int, folder: Path | None = None) -> Path:
    """The cache file of the RwR step for a checkpoint hash and budgets (the solve is its ``.solve.onnx``)."""
    tag = ONNX_FORMAT.replace("/", "")
    return (folder or onnx_cache_dir()) / f"{sha256[:16]}-rwr{nfe}-solve{solve_nfe}-{tag}.onnx"


def engine_for_checkpoint(
    checkpoint: LoadedCheckpoint,
    nfe: int,
    onnx_file: str | Path | None = None,
    *,
    threads: int | None = None,
    cache: Path | None = None,
) -> OnnxEngine:
    """An :class:`OnnxEngine` for ``checkpoint`` with a ``nfe``-step RwR graph: ``onnx_file`` (the RwR step, its
    ``.solve.onnx`` sibling for fresh frames) or the cached export, made now if absent (a few seconds)."""
    model = checkpoint.model.cpu().eval()
    if onnx_file is None:
        solve_nfe = model.cfg.solver.max_nfe
        path = cached_export_path(checkpoint.sha256, nfe, solve_nfe, cache)
        if not (path.is_file() and solve_path_for(path).is_file()):
            source = str(checkpoint.metadata.get("zoo_name") or f"sha256:{checkpoint.sha256[:12]}")
            export_model(
                model,
                path,
                mode="both",
                nfe=nfe,
                solve_nfe=solve_nfe,
                checkpoint_sha256=checkpoint.sha256,
                source=source,
            )
    else:
        path = Path(onnx_file)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ONNX file not found (make it with `ldeq export --format onnx`)")
        if not solve_path_for(path).is_file():
            raise FileNotFoundError(
                f"{solve_path_for(path)}: the solve graph for fresh frames is missing next to {path.name} "
                "(export with --mode both)"
            )
    engine = OnnxEngine(model, path, solve_path_for(path), threads=threads, checkpoint_sha256=checkpoint.sha256)
    if engine.rwr is not None and engine.rwr.nfe != nfe:
        raise ValueError(f"{path}: exported for a {engine.rwr.nfe}-NFE RwR step, but the budget is {nfe} NFE")
    return engine
