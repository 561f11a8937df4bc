"""Aggregation, Pareto front, percent changes and the per-frame jitter, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ldeq_core.metrics import video_nmf
from pipelines.evaluate.report import (
    OVERALL,
    aggregate,
    compare,
    flat_metrics,
    frame_jitter,
    pareto_front,
    pct_change,
    still_nmes,
    still_summary,
)


def _row(key: str, split: str, method: str, n: int, nme: float, nmf: float, nfe: float) -> dict[str, object]:
    return {
        "key": key,
        "split": split,
        "method": method,
        "n_frames": n,
        "nme_io": nme,
        "nme_face": nme / 2,
        "nmf": nmf,
        "nmf_sqrt2": nmf / math.sqrt(2),
        "nfe": nfe,
    }


def test_aggregate_per_video_and_frame_weighted_means() -> None:
    # two videos of 3 and 5 frames: NME 2 and 4, NMF 10 and 20, NFE 8 and 2 per frame
    df = pd.DataFrame([_row("a", "easy", "m", 3, 2.0, 10.0, 8.0), _row("b", "hard", "m", 5, 4.0, 20.0, 2.0)])
    agg = aggregate(df, ["m"])
    assert list(agg) == ["easy", "hard", OVERALL]
    overall = agg[OVERALL]["methods"]["m"]
    assert overall["nme_io"] == pytest.approx(3.0)  # (2 + 4) / 2
    assert overall["nme_io_fw"] == pytest.approx(26 / 8)  # (3*2 + 5*4) / 8 frames
    assert overall["nme_face_fw"] == pytest.approx(13 / 8)
    assert overall["nmf"] == pytest.approx(15.0)
    assert overall["nmf_fw"] == pytest.approx(100 / 6)  # NMF weighted by frame pairs: (2*10 + 4*20) / 6
    assert overall["nmf_sqrt2_fw"] == pytest.approx(100 / 6 / math.sqrt(2))
    assert overall["nfe"] == pytest.approx(34 / 8)  # NFE per frame: (3*8 + 5*2) / 8
    assert agg[OVERALL]["videos"] == 2 and agg[OVERALL]["frames"] == 8
    assert agg["easy"]["methods"]["m"]["nme_io"] == pytest.approx(2.0)
    assert agg["hard"]["methods"]["m"]["nmf_fw"] == pytest.approx(20.0)
    assert agg["hard"]["frames"] == 5


def test_aggregate_rejects_empty_table() -> None:
    with pytest.raises(ValueError, match="no rows"):
        aggregate(pd.DataFrame(), ["m"])


def test_pareto_front_hand_made() -> None:
    points = {"a": (1.0, 5.0), "b": (2.0, 2.0), "c": (3.0, 3.0), "d": (5.0, 1.0), "e": (2.0, 2.0), "f": (1.0, 6.0)}
    # c is dominated by b; f by a (same x, larger y); b and e tie and are both kept
    assert pareto_front(points) == ["a", "b", "d", "e"]
    assert pareto_front({"x": (1.0, 1.0)}) == ["x"]


def test_percent_change_formulas() -> None:
    assert pct_change(90.0, 100.0) == pytest.approx(-10.0)
    assert pct_change(2.5, 2.0) == pytest.approx(25.0)
    assert math.isnan(pct_change(1.0, 0.0))
    methods = {
        "rwr": {"nme_io": 1.8, "nme_io_fw": 1.8, "nme_face": 1.0, "nme_face_fw": 1.2, "nmf": 80.0, "nmf_fw": 60.0},
        "base": {"nme_io": 2.0, "nme_io_fw": 2.0, "nme_face": 1.0, "nme_face_fw": 1.0, "nmf": 100.0, "nmf_fw": 120.0},
    }
    res = compare(methods, "rwr", "base")
    assert res["nme_io_pct"] == pytest.approx(-10.0)
    assert res["nme_face_pct"] == pytest.approx(0.0)
    assert res["nme_face_fw_pct"] == pytest.approx(20.0)
    assert res["nmf_pct"] == pytest.approx(-20.0)
    assert res["nmf_fw_pct"] == pytest.approx(-50.0)


def test_frame_jitter_hand_computed_and_consistent_with_nmf() -> None:
    # two landmarks at (0, 0) and (256, 256): face box 256 x 256, so s_t = 1
    gt = np.array([[[0.0, 0.0], [256.0, 256.0]]] * 3)
    pred = gt.copy()
    pred[1, 0] += [3.0, 4.0]  # landmark 0's error changes by 5 px at t=1 and back at t=2
    j = frame_jitter(pred, gt)
    expected = 100 * 5 / math.sqrt(2)  # RMS over the two landmarks of (500, 0)
    np.testing.assert_allclose(j, [expected, expected])
    assert math.sqrt(np.mean(j**2)) == pytest.approx(video_nmf(pred, gt))
    with pytest.raises(ValueError, match="T>=2"):
        frame_jitter(pred[:1], gt[:1])


def test_still_nme_clips_ground_truth_to_the_crop() -> None:
    gt = np.array([[[0.0, 0.0], [128.0, 0.0]]])  # inter-ocular distance 0.5 crop
    pred = gt + np.array([0.0, 25.6])  # every point 0.1 crop off
    np.testing.assert_allclose(still_nmes(pred, gt, 256.0, eye_indices=(0, 1)), [0.2])
    outside = np.array([[[-25.6, 0.0], [128.0, 0.0]]])  # clipped back to (0, 0)
    np.testing.assert_allclose(still_nmes(pred, outside, 256.0, eye_indices=(0, 1)), [0.2])
    summary = still_summary(np.array([0.02, 0.05, 0.2]))
    assert summary["nme_pct"] == pytest.approx(9.0)
    assert summary["fr_pct"] == pytest.approx(100 / 3)
    assert summary["images"] == 3


def test_flat_metrics_layout() -> None:
    df = pd.DataFrame(
        [_row("a", "easy", "per_frame", 3, 2.0, 10.0, 8.0), _row("a", "easy", "rwr_nfe2", 3, 1.5, 5.0, 2.0)]
    )
    agg = aggregate(df, ["per_frame", "rwr_nfe2"])
    flat = flat_metrics(
        agg,
        {"test": {"nme_pct": 4.0}},
        {"overall.rwr_vs_per_frame": {"nmf_pct": -50.0}},
        ["rwr_nfe2"],
        {"info.rwr_method": "rwr_nfe2", "x": float("nan")},
    )
    assert flat["video.overall.rwr_nfe2.nmf"] == 5.0
    assert flat["video.easy.per_frame.nme_io_fw"] == 2.0
    assert flat["video.overall.videos"] == 1
    assert flat["video.pareto.rwr_nfe2"] == 1 and flat["video.pareto.per_frame"] == 0
    assert flat["still.test.nme_pct"] == 4.0
    assert flat["compare.overall.rwr_vs_per_frame.nmf_pct"] == -50.0
    assert flat["x"] is None  # NaN is written as null
    assert all(not isinstance(v, dict) for v in flat.values())
