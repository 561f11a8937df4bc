"""Filter tuning on held-out tuning videos, never on the test videos.

The video ids of every split are divided deterministically into a *tuning* subset and a *test* subset
(:func:`split_tune_test`): within a split, ids are ordered by sha256(salt + id) and the first
``round(fraction * n)`` (at least 1 and at most n - 1 when n >= 2) are for tuning. The split is stratified
(easy and hard videos both contribute to tuning) and depends only on the ids, the fraction and the salt.

:func:`tune_filters` runs a small grid per filter on the per-frame tracks of the tuning videos only and
chooses each filter's parameters with one of two objectives (both on per-video means of the tuning videos):

- ``constrained`` (default): the lowest NMF among parameters whose NME (inter-ocular) stays within
  ``nme_tolerance`` (relative) of the unfiltered per-frame NME; if none qualifies, the lowest NME;
- ``weighted``: the lowest NME + ``nmf_weight`` * NMF.

The *best filter* (the one RwR is compared against) is the filter whose chosen parameters score best under the
same objective on the tuning videos, so that the test videos play no part in any choice.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ldeq_core.filters import apply_filter
from ldeq_core.metrics import video_nme, video_nmf
from ldeq_shared.eval_settings import DEFAULT_GRIDS as DEFAULT_GRIDS
from ldeq_shared.eval_settings import OBJECTIVES as OBJECTIVES
from ldeq_shared.eval_settings import TuneSettings
from ldeq_shared.params import parse_section


def tune_settings(section: Mapping[str, Any] | None, where: str = "evaluate.tuning") -> TuneSettings:
    """Parse ``evaluate.tuning``; unknown keys or bad values raise ``ValueError``."""
    return parse_section(TuneSettings, section, where)


def _rank_key(salt: str, vid: str) -> str:
    return hashlib.sha256(f"{salt}\0{vid}".encode()).hexdigest()


def split_tune_test(
    splits: Mapping[str, Sequence[str]], fraction: float, salt: str = "ldeq-eval"
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(tuning ids, test ids) per split; see the module docstring. Both lists are sorted."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction!r}")
    tune: dict[str, list[str]] = {}
    test: dict[str, list[str]] = {}
    for split, ids in splits.items():
        uniq = sorted(set(ids))
        if len(uniq) != len(ids):
            raise ValueError(f"split {split!r}: duplicate video ids")
        n = len(uniq)
        k = min(max(round(fraction * n), 1), n - 1) if fraction > 0 and n >= 2 else 0
        ranked = sorted(uniq, key=lambda v: _rank_key(salt, v))
        tune[split] = sorted(ranked[:k])
        test[split] = sorted(ranked[k:])
    return tune, test


@dataclass(frozen=True)
class TuneTrack:
    """What tuning needs of one video: the unfiltered track, the ground truth and the frame rate."""

    pred: np.ndarray  # (T, L, 2) frame pixels
    gt: np.ndarray  # (T, L, 2)
    fps: float


@dataclass
class TuneResult:
    """Chosen parameters per filter, every grid point's score, and exactly which videos were used."""

    chosen: dict[str, dict[str, float]]
    scores: list[dict[str, Any]]
    ids_used: list[str]
    base: dict[str, float]
    best_filter: str | None
    tuned: bool


def _score(nme_v: float, nmf_v: float, base_nme: float, s: TuneSettings) -> tuple[int, float]:
    """Sort key (lower is better): (0 feasible | 1 infeasible, value)."""
    if s.objective == "weighted":
        return 0, nme_v + s.nmf_weight * nmf_v
    feasible = nme_v <= base_nme * (1.0 + s.nme_tolerance)
    return (0, nmf_v) if feasible else (1, nme_v)


def _grid_points(grid: Mapping[str, Sequence[float]]) -> list[dict[str, float]]:
    names = list(grid)
    return [dict(zip(names, (float(v) for v in combo), strict=True)) for combo in itertools.product(*grid.values())]


def tune_filters(
    tracks: Mapping[str, TuneTrack],
    ids: Sequence[str],
    filters: Sequence[str],
    settings: TuneSettings,
    reference_nme: float | None = None,
) -> TuneResult:
    """Grid-search each filter's parameters on the videos ``ids`` of ``tracks`` (only those are read).

    The constrained objective bounds the NME relative to ``reference_nme`` when given (e.g. the per-frame NME of
    the same tuning videos, so that filters on every base are held to one accuracy budget), else relative to the
    unfiltered NME of ``tracks``. With no tuning video, every filter takes the first point of its grid and
    ``tuned`` is False.
    """
    ids = list(ids)
    if len(set(ids)) != len(ids):
        raise ValueError("ids: duplicate tuning video ids")
    videos = [tracks[i] for i in ids]
    if not videos:
        chosen = {f: _grid_points(settings.grid(f))[0] for f in filters}
        return TuneResult(chosen, [], [], {}, filters[0] if filters else None, tuned=False)
    base_nme = float(np.mean([video_nme(v.pred, v.gt) for v in videos]))
    base_nmf = float(np.mean([video_nmf(v.pred, v.gt) for v in videos]))
    chosen: dict[str, dict[str, float]] = {}
    scores: list[dict[str, Any]] = []
    best_key: dict[str, tuple[int, float]] = {}
    for f in filters:
        best: tuple[tuple[int, float], dict[str, float]] | None = None
        for params in _grid_points(settings.grid(f)):
            smoothed = [apply_filter(f, params, v.pred, v.fps) for v in videos]
            nme_v = float(np.mean([video_nme(p, v.gt) for p, v in zip(smoothed, videos, strict=True)]))
            nmf_v = float(np.mean([video_nmf(p, v.gt) for p, v in zip(smoothed, videos, strict=True)]))
            key = _score(nme_v, nmf_v, base_nme if reference_nme is None else reference_nme, settings)
            scores.append(
                {
                    "filter": f,
                    "params": json.dumps(params, sort_keys=True),
                    "nme_io": nme_v,
                    "nmf": nmf_v,
                    "feasible": key[0] == 0,
                    "objective": key[1],
                }
            )
            if best is None or key < best[0]:
                best = (key, params)
        assert best is not None
        chosen[f], best_key[f] = best[1], best[0]
    best_filter = min(filters, key=lambda f: best_key[f]) if filters else None
    for row in scores:
        row["chosen"] = json.loads(row["params"]) == chosen[row["filter"]]
    return TuneResult(chosen, scores, ids, {"nme_io": base_nme, "nmf": base_nmf}, best_filter, tuned=True)
