"""The method registry and filter tuning: deterministic tuning/test split, tuning reads only tuning videos."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import pytest

from ldeq_core.filters import apply_filter, ema_filter, kalman_filter, one_euro_filter
from ldeq_core.metrics import video_nmf
from pipelines.evaluate.methods import MethodSettings, build_methods, method_settings, trackers
from pipelines.evaluate.tune_filters import TuneSettings, TuneTrack, split_tune_test, tune_filters, tune_settings


def test_build_methods_names_and_configs() -> None:
    methods = build_methods(MethodSettings(budgets=(4, 1), primary_budget=1, gammas=(0.5,)), crop_size=64)
    names = [m.name for m in methods]
    assert names == [
        "per_frame",
        "rwr_nfe1",
        "rwr_nfe4",
        "rwr_upstream",
        "rwr_nfe1_gamma0.5",
        "per_frame+ema",
        "per_frame+one_euro",
        "per_frame+kalman",
    ]
    by = {m.name: m for m in methods}
    assert by["per_frame"].rwr is not None and by["per_frame"].rwr.mode == "per_frame"
    assert by["rwr_nfe4"].rwr is not None and by["rwr_nfe4"].rwr.budget_nfe == 4
    assert by["rwr_upstream"].rwr is not None and by["rwr_upstream"].rwr.upstream
    assert by["rwr_nfe1_gamma0.5"].rwr is not None and by["rwr_nfe1_gamma0.5"].rwr.gamma == 0.5
    assert all(m.rwr is not None and m.rwr.crop_size == 64 for m in trackers(methods))
    assert by["per_frame+kalman"].base == "per_frame" and by["per_frame+kalman"].rwr is None


def test_filters_on_rwr_bases_are_named_after_their_base() -> None:
    settings = method_settings(
        {"budgets": [2], "gammas": [], "filters": ["ema"], "filter_bases": ["per_frame", "rwr_nfe2"]}
    )
    methods = build_methods(settings, crop_size=64)
    filtered = [(m.name, m.base, m.filter) for m in methods if m.kind == "filter"]
    assert filtered == [("per_frame+ema", "per_frame", "ema"), ("rwr_nfe2+ema", "rwr_nfe2", "ema")]
    with pytest.raises(ValueError, match="filter_bases"):
        build_methods(MethodSettings(budgets=(2,), filter_bases=("rwr_nfe3",)), crop_size=64)


def test_method_settings_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown key"):
        method_settings({"budget": [1]})
    with pytest.raises(ValueError, match="primary_budget"):
        method_settings({"budgets": [1, 4], "primary_budget": 2})
    with pytest.raises(ValueError, match="unknown filter"):
        method_settings({"filters": ["median"]})
    with pytest.raises(ValueError, match="unknown filter"):
        tune_settings({"grids": {"median": {"k": [3]}}})


def test_apply_filter_matches_the_core_filters() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 3, 2))
    np.testing.assert_array_equal(apply_filter("ema", {"alpha": 0.3}, x, 30.0), ema_filter(x, 0.3))
    np.testing.assert_array_equal(
        apply_filter("one_euro", {"min_cutoff": 1.0, "beta": 0.1}, x, 25.0), one_euro_filter(x, 25.0, 1.0, 0.1)
    )
    np.testing.assert_array_equal(apply_filter("kalman", {"q": 0.1, "r": 2.0}, x, 30.0), kalman_filter(x, 0.1, 2.0))


def test_split_tune_test_is_deterministic_disjoint_and_stratified() -> None:
    splits = {"video_easy": [f"e{i}" for i in range(8)], "video_hard": [f"h{i}" for i in range(4)], "single": ["s0"]}
    tune, test = split_tune_test(splits, 0.25, "salt")
    assert (tune, test) == split_tune_test({k: v[::-1] for k, v in splits.items()}, 0.25, "salt")  # order-free
    for split, ids in splits.items():
        assert set(tune[split]) | set(test[split]) == set(ids)
        assert not set(tune[split]) & set(test[split])
    assert len(tune["video_easy"]) == 2 and len(tune["video_hard"]) == 1  # round(0.25 n), at least 1
    assert tune["single"] == [] and test["single"] == ["s0"]  # a lone video is never held out
    other, _ = split_tune_test(splits, 0.25, "another salt")
    assert other != tune or other["video_easy"] != tune["video_easy"]  # the salt changes the choice
    none, rest = split_tune_test(splits, 0.0)
    assert all(v == [] for v in none.values()) and rest["video_easy"] == sorted(splits["video_easy"])


class SpyTracks(Mapping[str, TuneTrack]):
    """A mapping that records every key read."""

    def __init__(self, data: dict[str, TuneTrack]) -> None:
        self.data = data
        self.read: list[str] = []

    def __getitem__(self, key: str) -> TuneTrack:
        self.read.append(key)
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("tuning must not iterate over all videos")

    def __len__(self) -> int:
        return len(self.data)


def _noisy_track(rng: np.random.Generator, n: int = 40, speed: float = 0.5) -> TuneTrack:
    t = np.arange(n)[:, None, None]
    base = np.random.default_rng(0).uniform(100.0, 200.0, size=(1, 98, 2))  # a 98-point face
    base[0, 60], base[0, 72] = [110.0, 130.0], [190.0, 130.0]  # outer eye corners, 80 px apart
    gt = base + speed * t * np.array([1.0, 0.0])  # a face moving sideways
    pred = gt + rng.normal(scale=2.0, size=gt.shape)  # per-frame jitter
    return TuneTrack(pred, gt, 30.0)


def test_tuning_reads_only_the_tuning_videos() -> None:
    rng = np.random.default_rng(1)
    ids = [f"v{i}" for i in range(6)]
    tune_ids, test_ids = split_tune_test({"s": ids}, 0.5, "x")
    spy = SpyTracks({v: _noisy_track(rng) for v in ids})
    res = tune_filters(spy, tune_ids["s"], ["ema", "kalman"], TuneSettings(objective="weighted", nmf_weight=0.01))
    assert set(spy.read) == set(tune_ids["s"]) and not set(spy.read) & set(test_ids["s"])
    assert res.ids_used == tune_ids["s"] and res.tuned
    assert set(res.chosen) == {"ema", "kalman"} and res.best_filter in ("ema", "kalman")


def test_tuning_objectives_choose_the_expected_grid_point() -> None:
    rng = np.random.default_rng(2)
    tracks = {f"v{i}": _noisy_track(rng, speed=3.0) for i in range(3)}  # fast motion: strong smoothing lags
    ids = list(tracks)
    grid = {"ema": {"alpha": [1.0, 0.5, 0.05]}}
    res = tune_filters(tracks, ids, ["ema"], TuneSettings(objective="weighted", nmf_weight=10.0, grids=grid))
    by = {r["params"]: r for r in res.scores}
    a1, a05, a005 = by['{"alpha": 1.0}'], by['{"alpha": 0.5}'], by['{"alpha": 0.05}']
    # alpha 1 is no filtering: its scores are the unfiltered ones
    assert a1["nmf"] == pytest.approx(np.mean([video_nmf(t.pred, t.gt) for t in tracks.values()]))
    assert a1["nme_io"] == pytest.approx(res.base["nme_io"])
    # smoothing lowers NMF monotonically; the strongest one lags far behind the moving face (NME x10)
    assert a005["nmf"] < a05["nmf"] < a1["nmf"]
    assert a05["nme_io"] > a1["nme_io"] and a005["nme_io"] > 10 * a1["nme_io"]
    # weighted (NME + 10 NMF): the lowest NMF wins
    assert res.chosen["ema"] == {"alpha": 0.05}
    # constrained: the lowest NMF among points within the NME tolerance of unfiltered
    strict = tune_filters(tracks, ids, ["ema"], TuneSettings(nme_tolerance=0.0, grids=grid))
    assert strict.chosen["ema"] == {"alpha": 1.0}  # every smoothing costs NME here
    loose = tune_filters(tracks, ids, ["ema"], TuneSettings(nme_tolerance=0.5, grids=grid))
    assert loose.chosen["ema"] == {"alpha": 0.5}  # 0.05 has a lower NMF but breaks the NME constraint
    assert [r["feasible"] for r in loose.scores] == [True, True, False]
    assert sum(r["chosen"] for r in loose.scores) == 1


def test_tuning_without_videos_falls_back_to_the_first_grid_point() -> None:
    res = tune_filters({}, [], ["kalman"], TuneSettings(grids={"kalman": {"q": [0.5, 1.0], "r": [3.0]}}))
    assert res.chosen == {"kalman": {"q": 0.5, "r": 3.0}} and not res.tuned and res.ids_used == []


def test_reference_nme_bounds_every_base_by_the_same_accuracy_budget() -> None:
    rng = np.random.default_rng(3)
    gt = np.cumsum(rng.normal(0, 0.5, (40, 68, 2)), axis=0) + 100.0
    gt[:, 36], gt[:, 45] = gt[:, 0] - [30.0, 0.0], gt[:, 0] + [30.0, 0.0]  # eye corners 60 px apart
    pred = gt + rng.normal(0, 2.0, gt.shape)
    tracks = {"v": TuneTrack(pred, gt, 30.0)}
    settings = TuneSettings(nme_tolerance=0.01, grids={"ema": {"alpha": [0.1, 0.5, 0.9]}})
    own = tune_filters(tracks, ["v"], ["ema"], settings)
    # a reference NME 20 % above this base's own NME admits heavier smoothing (a smaller alpha, a lower NMF)
    loose = tune_filters(tracks, ["v"], ["ema"], settings, reference_nme=1.2 * own.base["nme_io"])
    assert loose.chosen["ema"]["alpha"] <= own.chosen["ema"]["alpha"]
    rows = {r["params"]: r for r in loose.scores}
    for r in rows.values():  # feasibility follows the reference, not the base
        assert r["feasible"] == (r["nme_io"] <= 1.2 * own.base["nme_io"] * 1.01)
    with pytest.raises(ValueError, match="reference"):
        TuneSettings(reference="median")


def test_primary_warp_makes_the_warped_rwr_the_primary_method() -> None:
    from pipelines.evaluate.methods import primary_rwr

    assert primary_rwr(MethodSettings(budgets=(2,), warp=True, primary_warp=True)) == "rwr_nfe2_warp"
    assert primary_rwr(MethodSettings(budgets=(2,), warp=True)) == "rwr_nfe2"
    with pytest.raises(ValueError, match="primary_warp needs"):
        MethodSettings(budgets=(2,), primary_warp=True)
