"""The evaluation's method registry: how each compared method turns a video into a landmark track.

Two kinds of method:

- **tracker** methods run the model over the video with an :class:`ldeq_core.rwr.RwRTracker`:
  ``per_frame`` (a full solve from zeros on every frame, the baseline), ``rwr_nfe<b>`` (RwR: warm start from
  the previous frame's equilibrium with a budget of ``b`` cell evaluations; the stream's first frame gets a full
  solve), ``rwr_upstream`` (the released code's RwR: every frame, the first included, capped at
  ``upstream_max_iters`` solver iterations + the extra step), ``rwr_nfe<b>_gamma<g>`` (RwR iterating the
  proximal map ``z <- (f(z) + g z_prev) / (1 + g)``) and, with ``warp``, each RwR method again with the previous
  equilibrium resampled into the current crop (``..._warp``, crop-invariant recurrence);
- **filter** methods smooth the landmark track of a tracker method offline (``per_frame+ema``,
  ``per_frame+one_euro``, ``per_frame+kalman``, and ``<base>+<filter>`` for every base in ``filter_bases``, e.g.
  ``rwr_nfe2+one_euro``); their parameters are tuned per base on the tuning videos
  (:mod:`pipelines.evaluate.tune_filters`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ldeq_core.rwr import RwRConfig
from ldeq_shared.eval_settings import FILTER_NAMES as FILTER_NAMES
from ldeq_shared.eval_settings import PER_FRAME, MethodSettings
from ldeq_shared.params import parse_section


@dataclass(frozen=True)
class Method:
    """One compared method. ``rwr`` is set for trackers; ``base`` and ``filter`` for filtered methods."""

    name: str
    kind: Literal["tracker", "filter"]
    label: str
    rwr: RwRConfig | None = None
    base: str | None = None
    filter: str | None = None


def method_settings(section: Mapping[str, Any] | None, where: str = "evaluate.methods") -> MethodSettings:
    """Parse the ``evaluate.methods`` mapping (missing keys take the defaults); unknown keys or bad values raise."""
    return parse_section(MethodSettings, section, where)


def rwr_name(budget: int, gamma: float = 0.0, warp: bool = False) -> str:
    """Method name of RwR at ``budget`` NFE (with the proximal weight ``gamma`` when > 0, ``_warp`` when the
    previous equilibrium is warped into the current crop)."""
    return f"rwr_nfe{budget}" + (f"_gamma{gamma:g}" if gamma > 0 else "") + ("_warp" if warp else "")


def filter_method_name(filter_name: str, base: str = PER_FRAME) -> str:
    return f"{base}+{filter_name}"


def build_methods(settings: MethodSettings, crop_size: int) -> list[Method]:
    """Every compared method, trackers first (``per_frame`` first), then the filtered baselines."""
    common = {
        "tol": settings.tol,
        "reset_iou": settings.reset_iou,
        "crop_size": crop_size,
        "extra_scale": settings.extra_scale,
    }
    out = [Method(PER_FRAME, "tracker", "per-frame full solve from zeros", rwr=RwRConfig(mode="per_frame", **common))]
    for b in sorted(settings.budgets):
        out.append(
            Method(
                rwr_name(b),
                "tracker",
                f"RwR, warm start + {b} NFE per frame",
                rwr=RwRConfig(mode="rwr", budget_nfe=b, **common),
            )
        )
    if settings.upstream:
        out.append(
            Method(
                "rwr_upstream",
                "tracker",
                f"RwR as released: {settings.upstream_max_iters} solver iteration(s) + 1 step on every "
                "frame, the first included",
                rwr=RwRConfig(mode="rwr", upstream=True, upstream_max_iters=settings.upstream_max_iters, **common),
            )
        )
    for g in settings.gammas:
        b = settings.primary_budget
        out.append(
            Method(
                rwr_name(b, float(g)),
                "tracker",
                f"RwR, {b} NFE of the proximal map, gamma {g:g}",
                rwr=RwRConfig(mode="rwr", budget_nfe=b, gamma=float(g), **common),
            )
        )
    if settings.warp:
        for m in [m for m in out if m.rwr is not None and m.rwr.mode == "rwr" and not m.rwr.upstream]:
            assert m.rwr is not None
            out.append(
                Method(
                    rwr_name(m.rwr.budget_nfe, m.rwr.gamma, warp=True),
                    "tracker",
                    m.label + ", previous state warped into the current crop",
                    rwr=RwRConfig(
                        mode="rwr", budget_nfe=m.rwr.budget_nfe, gamma=m.rwr.gamma, warp_state=True, **common
                    ),
                )
            )
    names = {m.name for m in out}
    unknown = [b for b in settings.filter_bases if b not in names]
    if unknown:
        raise ValueError(f"evaluate.methods.filter_bases: {unknown} are not tracker methods ({sorted(names)})")
    for base in settings.filter_bases:
        for f in settings.filters:
            out.append(
                Method(
                    filter_method_name(f, base),
                    "filter",
                    f"{base} + offline {f} filter (tuned on {base})",
                    base=base,
                    filter=f,
                )
            )
    return out


def primary_rwr(settings: MethodSettings) -> str:
    """The RwR method compared against the baselines in the report."""
    return rwr_name(settings.primary_budget, warp=settings.primary_warp)


def trackers(methods: Sequence[Method]) -> list[Method]:
    """The tracker methods of ``methods``, in order."""
    return [m for m in methods if m.kind == "tracker"]
