"""Recurrence without Recurrence (spec §3): streaming video inference with per-stream equilibrium state.

Each stream (video) keeps its previous frame's equilibrium z*. A frame of a stream is solved from that warm start
with a small per-frame budget of fixed-point steps (default 2 cell evaluations, the upstream setting, whose WFLW-V
model also used fpi); a stream's first frame, and any
frame after a reset (caller-flagged shot cut or track loss, or a large box jump), gets a full solve with the model's
own solver settings. ``upstream=True`` reproduces the released code: every frame, the first included, gets
``upstream_max_iters`` solver iterations plus the extra f step with the batch-mean stop.

Frames from many streams are solved together in one batch, but every stopping decision is per sample, so a
stream's landmarks do not depend on which other streams share its batch (except in ``upstream`` mode).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from ldeq_core.config import SolverConfig
from ldeq_core.defaults import BUDGET_NFE, EXTRA_SCALE, RESET_IOU
from ldeq_core.geometry import apply_affine, crop_face, invert_affine, to_model_input
from ldeq_core.inference import InferenceEngine, InferencePolicy, warp_state_batch
from ldeq_core.model import LandmarkDEQ


@dataclass(frozen=True)
class RwRConfig:
    """Video inference settings. ``mode='per_frame'`` is the baseline: a full solve from zeros on every frame."""

    mode: Literal["rwr", "per_frame"] = "rwr"
    budget_nfe: int = BUDGET_NFE
    tol: float = 0.0
    gamma: float = 0.0
    reset_iou: float = RESET_IOU
    upstream: bool = False
    upstream_max_iters: int = 1
    crop_size: int = 256
    extra_scale: float = EXTRA_SCALE
    # Crop-invariant recurrence: resample the previous equilibrium into the current crop (the relative affine of the
    # two crops) before the warm start and the proximal term, so that box motion does not leak into the landmarks.
    warp_state: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("rwr", "per_frame"):
            raise ValueError(f"rwr.mode must be 'rwr' or 'per_frame', got {self.mode!r}")
        if self.budget_nfe < 1 or self.upstream_max_iters < 1:
            raise ValueError("rwr budgets must be >= 1")
        if self.gamma < 0 or self.tol < 0 or not 0 <= self.reset_iou <= 1:
            raise ValueError("rwr.gamma and rwr.tol must be >= 0 and 0 <= rwr.reset_iou <= 1")


@dataclass
class StepResult:
    """One batch of frames: ``coords`` (N, L, 2) in crop pixels, ``nfe`` (N,), ``full_solve`` (N,) bools."""

    coords: np.ndarray
    nfe: np.ndarray
    full_solve: np.ndarray
    rel_residual: np.ndarray
    landmarks: np.ndarray | None = None  # (N, L, 2) original-frame pixels, when frames and boxes were given


@dataclass
class _Stream:
    z: torch.Tensor
    box: np.ndarray | None
    frames: int = 0
    affine: np.ndarray | None = None  # frame -> crop affine of the frame that produced z


def heatmap_warp_theta(prev_affine: np.ndarray, cur_affine: np.ndarray, size: int, heatmap: int) -> np.ndarray:
    """``affine_grid`` theta (2, 3), ``align_corners=True``, sampling the previous crop's heatmaps at the current
    crop's heatmap cells.

    Heatmap cell j sits at crop pixel 4 j (``soft_argmax``: no half-cell offset; generally ``size / heatmap``), so a
    current cell maps to frame pixels through the inverse current crop affine, then into the previous crop and its
    heatmap grid; ``align_corners=True`` puts normalised -1 and 1 on the first and last cell centres.
    """
    stride = size / heatmap

    def h3(m: np.ndarray) -> np.ndarray:
        return np.vstack([np.asarray(m, dtype=np.float64)[:2], [0.0, 0.0, 1.0]])

    cell_to_px = np.diag([stride, stride, 1.0])
    norm = np.array([[2.0 / (heatmap - 1), 0.0, -1.0], [0.0, 2.0 / (heatmap - 1), -1.0], [0.0, 0.0, 1.0]])
    cells = np.linalg.inv(cell_to_px) @ h3(prev_affine) @ h3(invert_affine(cur_affine)) @ cell_to_px
    return (norm @ cells @ np.linalg.inv(norm))[:2]


def heatmap_warp_thetas(prev_affines: np.ndarray, cur_affines: np.ndarray, size: int, heatmap: int) -> np.ndarray:
    """:func:`heatmap_warp_theta` for stacks (N, 2, 3) of previous and current crop affines, in one batched numpy
    computation (no per-stream Python on the hot path); returns (N, 2, 3)."""
    prev = np.asarray(prev_affines, dtype=np.float64).reshape(-1, 2, 3)
    cur = np.asarray(cur_affines, dtype=np.float64).reshape(-1, 2, 3)
    n = prev.shape[0]
    bottom = np.broadcast_to(np.array([0.0, 0.0, 1.0]), (n, 1, 3))
    prev3, cur3 = np.concatenate([prev, bottom], axis=1), np.concatenate([cur, bottom], axis=1)
    stride = size / heatmap
    cell_to_px = np.diag([stride, stride, 1.0])
    norm = np.array([[2.0 / (heatmap - 1), 0.0, -1.0], [0.0, 2.0 / (heatmap - 1), -1.0], [0.0, 0.0, 1.0]])
    left = norm @ np.linalg.inv(cell_to_px)
    right = cell_to_px @ np.linalg.inv(norm)
    return (left @ prev3 @ np.linalg.inv(cur3) @ right)[:, :2]


def warp_states(z: torch.Tensor, thetas: np.ndarray) -> torch.Tensor:
    """Resample states (N, C, H, W) with per-sample thetas (N, 2, 3) (bilinear, zeros outside the old crop)."""
    return warp_state_batch(z, torch.as_tensor(thetas, dtype=torch.float32, device=z.device))


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class RwRTracker:
    """Streaming RwR over any number of independent streams, identified by hashable ids.

    The model runs through an :class:`~ldeq_core.inference.InferenceEngine` (default policy: the fastest setting
    that passed parity on the model's device; plain fp32 eager on a CPU). Pass ``engine`` to share one engine, and
    its captured CUDA graphs, between trackers of the same model.
    """

    def __init__(
        self,
        model: LandmarkDEQ,
        cfg: RwRConfig | None = None,
        engine: InferenceEngine | None = None,
        policy: InferencePolicy | None = None,
    ) -> None:
        if engine is not None and engine.model is not model:
            raise ValueError("the engine must wrap the tracker's model")
        self.model = model.eval()
        self.cfg = cfg or RwRConfig()
        self.engine = engine or InferenceEngine(model, policy)
        self.streams: dict[Hashable, _Stream] = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def reset(self, stream_id: Hashable | None = None) -> None:
        """Forget one stream (its next frame gets a full solve), or all streams when ``stream_id`` is None."""
        if stream_id is None:
            self.streams.clear()
        else:
            self.streams.pop(stream_id, None)

    def step(
        self,
        frames_bgr: Sequence[np.ndarray],
        boxes: np.ndarray,
        stream_ids: Sequence[Hashable],
        reset: Sequence[bool] | None = None,
    ) -> StepResult:
        """One frame from each stream: crop with its box, solve, and map landmarks back to frame pixels."""
        boxes = np.asarray(boxes, dtype=np.float64)
        if len(frames_bgr) != len(stream_ids) or boxes.shape[0] != len(stream_ids):
            raise ValueError("frames, boxes and stream_ids must have the same length")
        crops, affines = zip(*(self.crop(fr, bx) for fr, bx in zip(frames_bgr, boxes, strict=True)), strict=True)
        return self.step_prepared(np.stack(crops), np.stack(affines), boxes, stream_ids, reset)

    def crop(self, frame_bgr: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model crop (S, S, 3) RGB uint8 of one frame and its frame->crop affine; thread-safe (no state)."""
        return crop_face(frame_bgr, np.asarray(box, dtype=np.float64), self.cfg.crop_size, self.cfg.extra_scale)

    def step_prepared(
        self,
        crops: np.ndarray,
        affines: np.ndarray,
        boxes: np.ndarray,
        stream_ids: Sequence[Hashable],
        reset: Sequence[bool] | None = None,
    ) -> StepResult:
        """:meth:`step` after :meth:`crop` (which callers may run in parallel): solve, map back to frame pixels."""
        images = to_model_input(np.asarray(crops), self.device)
        res = self.step_crops(
            images, stream_ids, boxes=np.asarray(boxes, dtype=np.float64), reset=reset, affines=np.asarray(affines)
        )
        res.landmarks = apply_affine(np.stack([invert_affine(m) for m in affines]), res.coords)
        return res

    @torch.no_grad()
    def step_crops(
        self,
        images: torch.Tensor,
        stream_ids: Sequence[Hashable],
        boxes: np.ndarray | None = None,
        reset: Sequence[bool] | None = None,
        affines: np.ndarray | None = None,
    ) -> StepResult:
        """Solve already-cropped, normalised images (N, 3, S, S), one per stream; returns crop-pixel landmarks.

        ``affines`` (N, 2, 3), the frame -> crop affine of each image, enables ``warp_state``."""
        n = images.shape[0]
        if len(set(stream_ids)) != n or len(stream_ids) != n:
            raise ValueError("stream_ids must be unique, one per image")
        cfg, model, dev = self.cfg, self.model, images.device
        fresh = np.array(
            [
                self._needs_full_solve(sid, None if boxes is None else boxes[i], reset, i)
                for i, sid in enumerate(stream_ids)
            ]
        )
        if cfg.upstream:
            z0 = model.initial_state(n, dev)
            for i, sid in enumerate(stream_ids):
                if not fresh[i]:
                    z0[i] = self.streams[sid].z.to(dev)
            solver = dataclasses.replace(
                model.cfg.solver,
                upstream=True,
                upstream_max_iters=cfg.upstream_max_iters,
                upstream_one_less_step=False,
            )
            out = self.engine.full_solve(images, z0, solver=solver)
            outs = [(np.arange(n), (out.coords, out.z_star, out.stats.nfe, out.stats.rel_residual))]
        else:
            # Fresh streams get the model's full solve from zeros; warm streams a fixed-budget fixed-point solve
            # from their previous z*. The two groups are solved separately (different solvers and starts).
            outs = []
            fresh_idx, warm_idx = np.flatnonzero(fresh), np.flatnonzero(~fresh)
            if fresh_idx.size:
                out = self.engine.full_solve(images[torch.as_tensor(fresh_idx, device=dev)])
                outs.append((fresh_idx, (out.coords, out.z_star, out.stats.nfe, out.stats.rel_residual)))
            if warm_idx.size:
                z0 = torch.stack([self.streams[stream_ids[i]].z for i in warm_idx.tolist()]).to(dev)
                thetas = None
                if cfg.warp_state and affines is not None:
                    thetas = self._warp_thetas([stream_ids[i] for i in warm_idx.tolist()], affines[warm_idx])
                warm_images = images[torch.as_tensor(warm_idx, device=dev)]
                if cfg.tol == 0 and cfg.gamma == 0:
                    # The hot path: exactly budget_nfe steps, no stopping test (CUDA-graph captured on a GPU, the
                    # state warp inside the graph).
                    coords_w, z_w, rel_w = self.engine.fixed_steps(
                        warm_images, z0, cfg.budget_nfe, None if thetas is None else torch.as_tensor(thetas)
                    )
                    nfe_w = torch.full((warm_idx.size,), cfg.budget_nfe, dtype=torch.long)
                    outs.append((warm_idx, (coords_w, z_w, nfe_w, rel_w)))
                else:
                    if thetas is not None:
                        z0 = warp_states(z0, thetas)
                    warm = SolverConfig(
                        method="fpi", max_nfe=cfg.budget_nfe, tol=cfg.tol, stop_mode=model.cfg.solver.stop_mode
                    )
                    out = self.engine.full_solve(
                        warm_images, z0, solver=warm, gamma=cfg.gamma, z_prev=z0 if cfg.gamma > 0 else None
                    )
                    outs.append((warm_idx, (out.coords, out.z_star, out.stats.nfe, out.stats.rel_residual)))
        coords = np.zeros((n, model.cfg.n_landmarks, 2))
        nfe = np.zeros(n, dtype=np.int64)
        rel = np.zeros(n)
        for idx, (c, z_star, nfe_g, rel_g) in outs:
            coords[idx] = c.float().cpu().numpy() * cfg.crop_size
            nfe[idx] = nfe_g.cpu().numpy()
            rel[idx] = rel_g.float().cpu().numpy()
            for j, i in enumerate(idx.tolist()):
                sid = stream_ids[i]
                prev = None if fresh[i] else self.streams.get(sid)
                self.streams[sid] = _Stream(
                    z=z_star[j].clone(),
                    box=None if boxes is None else np.asarray(boxes[i], dtype=np.float64),
                    frames=(prev.frames if prev else 0) + 1,
                    affine=None if affines is None else np.asarray(affines[i], dtype=np.float64),
                )
        return StepResult(coords=coords, nfe=nfe, full_solve=fresh, rel_residual=rel)

    def _warp_thetas(self, sids: Sequence[Hashable], affines: np.ndarray) -> np.ndarray:
        """(N, 2, 3) thetas resampling each stream's previous equilibrium into its current crop (identity for a
        stream without a stored affine: its previous crop is taken to be the current one)."""
        cur = np.asarray(affines, dtype=np.float64).reshape(-1, 2, 3)
        prev = np.stack(
            [cur[i] if (a := self.streams[sid].affine) is None else a for i, sid in enumerate(sids)]
        ).astype(np.float64)
        return heatmap_warp_thetas(prev, cur, self.cfg.crop_size, self.model.cfg.heatmap_size)

    def _needs_full_solve(self, sid: Hashable, box: np.ndarray | None, reset: Sequence[bool] | None, i: int) -> bool:
        if self.cfg.upstream:
            # Upstream warm-starts every frame after the first and never resets.
            return sid not in self.streams
        if self.cfg.mode == "per_frame" or sid not in self.streams or (reset is not None and reset[i]):
            return True
        prev = self.streams[sid].box
        return box is not None and prev is not None and box_iou(prev, np.asarray(box, np.float64)) < self.cfg.reset_iou


@dataclass
class VideoResult:
    landmarks: np.ndarray  # (T, L, 2) frame pixels
    nfe: np.ndarray  # (T,)
    full_solve: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


def track_videos(
    model: LandmarkDEQ,
    videos: Sequence[tuple[Sequence[np.ndarray], np.ndarray]],
    cfg: RwRConfig | None = None,
    max_batch: int = 64,
    engine: InferenceEngine | None = None,
) -> list[VideoResult]:
    """Run RwR over several videos, batching frame t of every video still playing (frame-synchronous).

    ``videos`` holds (frames_bgr, boxes) pairs; frames of different videos may differ in count and size.
    Videos are processed in groups of at most ``max_batch`` streams, each group through its own
    :class:`~ldeq_core.streams.FrameSyncRunner`.
    """
    from ldeq_core.streams import FrameSyncRunner, VideoInput  # streams builds on this module

    engine = engine or InferenceEngine(model)
    results: list[VideoResult] = []
    for start in range(0, len(videos), max_batch):
        group = range(start, min(start + max_batch, len(videos)))
        runner = FrameSyncRunner.from_model(model, cfg, engine=engine)
        tracks = runner.run([VideoInput(v, np.asarray(videos[v][1]), frames=videos[v][0]) for v in group])
        results += [VideoResult(tr.landmarks, tr.nfe, tr.full_solve) for tr in tracks]
    return results
