"""Typed settings of the evaluate stage: the ``evaluate`` section of a params file (``methods`` and ``tuning``
nested), part of the one typed configuration layer :mod:`ldeq_shared.params`; pipelines/evaluate re-exports them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ldeq_core.defaults import EXTRA_SCALE, RESET_IOU
from ldeq_core.filters import FILTERS, SMOOTHING_FILTERS
from ldeq_core.inference import InferencePolicy

PER_FRAME = "per_frame"
FILTER_NAMES = SMOOTHING_FILTERS  # the registry's filters (ldeq_core.filters.FILTERS), "none" excluded
DEFAULT_GRIDS: dict[str, dict[str, list[float]]] = {name: FILTERS[name].grid() for name in FILTER_NAMES}
OBJECTIVES = ("constrained", "weighted")
BOX_SOURCES = ("given", "smoothed", "detector")  # where a video's face boxes come from (pipelines/evaluate/boxes.py)


@dataclass(frozen=True)
class MethodSettings:
    """``evaluate.methods`` of params.yaml (see :func:`method_settings`)."""

    budgets: tuple[int, ...] = (1, 2, 4)
    primary_budget: int = 2
    tol: float = 0.0
    reset_iou: float = RESET_IOU
    gammas: tuple[float, ...] = (1.0,)
    upstream: bool = True
    upstream_max_iters: int = 1
    filters: tuple[str, ...] = FILTER_NAMES
    extra_scale: float = EXTRA_SCALE
    warp: bool = False  # also run every RwR budget / gamma with the crop-invariant state warp (``..._warp``)
    filter_bases: tuple[str, ...] = (PER_FRAME,)  # tracker methods whose output each filter smooths (``<base>+<f>``)
    primary_warp: bool = False  # the primary RwR method is ``rwr_nfe<primary_budget>_warp`` (needs ``warp``)

    def __post_init__(self) -> None:
        if not self.budgets or any(not isinstance(b, int) or b < 1 for b in self.budgets):
            raise ValueError(f"evaluate.methods.budgets: need integers >= 1, got {list(self.budgets)}")
        if len(set(self.budgets)) != len(self.budgets):
            raise ValueError(f"evaluate.methods.budgets: duplicate budgets in {list(self.budgets)}")
        if self.primary_warp and not self.warp:
            raise ValueError("evaluate.methods.primary_warp needs evaluate.methods.warp: true")
        if self.primary_budget not in self.budgets:
            raise ValueError(
                f"evaluate.methods.primary_budget {self.primary_budget} is not one of budgets {list(self.budgets)}"
            )
        if any(not (isinstance(g, int | float) and math.isfinite(g) and g > 0) for g in self.gammas):
            raise ValueError(f"evaluate.methods.gammas: need finite values > 0, got {list(self.gammas)}")
        unknown = sorted(set(self.filters) - set(FILTER_NAMES))
        if unknown:
            raise ValueError(f"evaluate.methods.filters: unknown filter(s) {unknown}, known {list(FILTER_NAMES)}")
        if self.tol < 0 or not 0 <= self.reset_iou <= 1 or self.upstream_max_iters < 1 or self.extra_scale <= 0:
            raise ValueError(
                "evaluate.methods: need tol >= 0, 0 <= reset_iou <= 1, upstream_max_iters >= 1, extra_scale > 0"
            )


@dataclass(frozen=True)
class TuneSettings:
    """``evaluate.tuning`` of params.yaml."""

    fraction: float = 0.25
    salt: str = "ldeq-eval"
    objective: Literal["constrained", "weighted"] = "constrained"
    nme_tolerance: float = 0.05
    nmf_weight: float = 0.01
    grids: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # constrained objective: NME bound relative to the unfiltered base itself ("own") or to per-frame ("per_frame")
    reference: Literal["own", "per_frame"] = "own"

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 1.0:
            raise ValueError(f"evaluate.tuning.fraction must be in [0, 1), got {self.fraction!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"evaluate.tuning.objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.reference not in ("own", "per_frame"):
            raise ValueError(f"evaluate.tuning.reference must be own or per_frame, got {self.reference!r}")
        if self.nme_tolerance < 0 or self.nmf_weight < 0:
            raise ValueError("evaluate.tuning: nme_tolerance and nmf_weight must be >= 0")
        unknown = sorted(set(self.grids) - set(FILTER_NAMES))
        if unknown:
            raise ValueError(f"evaluate.tuning.grids: unknown filter(s) {unknown}, known {list(FILTER_NAMES)}")
        for name, grid in self.grids.items():
            if (
                not isinstance(grid, Mapping)
                or not grid
                or any(not isinstance(v, list | tuple) or not v for v in grid.values())
            ):
                raise ValueError(f"evaluate.tuning.grids.{name}: expected a mapping of parameter -> non-empty list")

    def grid(self, filter_name: str) -> dict[str, list[float]]:
        """The grid of ``filter_name``: the configured one, else :data:`DEFAULT_GRIDS`."""
        return {k: list(v) for k, v in (self.grids.get(filter_name) or DEFAULT_GRIDS[filter_name]).items()}


@dataclass(frozen=True)
class EvalSettings:
    """The ``evaluate`` section of params.yaml (documented there)."""

    model_source: str = "checkpoint"
    checkpoint: str = "models/model.pt"
    registered_model: str | None = None
    model_alias: str | int = "champion"  # registry alias or version number
    raw_dir: str | None = None
    shards_dir: str | None = None
    device: str = "auto"
    parallel: bool = True
    actors: int = 2
    cpus_per_actor: float = 0.5
    use_gpu: Literal["auto"] | bool = "auto"
    gpus_per_actor: float | None = None
    decode_cpus: float = 0.5
    object_store_mb: int = 1024
    videos_per_batch: int = 5
    torch_threads: int | None = None
    max_videos: int | None = None
    methods: MethodSettings = field(default_factory=MethodSettings)
    tuning: TuneSettings = field(default_factory=TuneSettings)
    still_splits: list[str] | None = None
    still_batch_size: int = 32
    max_stills: int | None = None
    worst_videos: int = 2
    overlay_max_height: int = 360
    mlflow_uri: str | None = None
    mlflow_experiment: str | None = None
    inference: InferencePolicy = field(default_factory=InferencePolicy)
    box_source: str = "given"  # given | smoothed | detector (pipelines/evaluate/boxes.py)

    def __post_init__(self) -> None:
        if self.box_source not in BOX_SOURCES:
            raise ValueError(f"evaluate.box_source must be one of {BOX_SOURCES}, got {self.box_source!r}")
        if self.model_source not in ("checkpoint", "registry"):
            raise ValueError(f"evaluate.model_source must be checkpoint or registry, got {self.model_source!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"evaluate.device must be auto, cpu or cuda[:n], got {self.device!r}")
        if self.use_gpu not in ("auto", True, False):
            raise ValueError(f"evaluate.use_gpu must be auto, true or false, got {self.use_gpu!r}")
        for name in ("actors", "videos_per_batch", "still_batch_size", "overlay_max_height", "object_store_mb"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"evaluate.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.cpus_per_actor <= 0 or self.decode_cpus <= 0:
            raise ValueError("evaluate.cpus_per_actor and evaluate.decode_cpus must be > 0")
        for name in ("torch_threads", "max_videos", "max_stills"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"evaluate.{name} must be null or an integer >= 1, got {v!r}")
        if not isinstance(self.worst_videos, int) or self.worst_videos < 0:
            raise ValueError(f"evaluate.worst_videos must be an integer >= 0, got {self.worst_videos!r}")
