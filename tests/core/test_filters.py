"""Temporal filters against closed forms and independent hand computations."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest

from ldeq_core.filters import (
    FILTER_NAMES,
    FILTERS,
    SMOOTHING_FILTERS,
    EMAFilter,
    IdentityFilter,
    KalmanFilter,
    OneEuroFilter,
    TemporalFilter,
    apply_filter,
    ema_filter,
    kalman_filter,
    make_filter,
    one_euro_filter,
    run_filter,
)


def _stream(filt: TemporalFilter, signal: np.ndarray) -> np.ndarray:
    filt.reset()
    return np.stack([filt.update(x) for x in signal])


def _one_euro_alpha(cutoff: float, freq: float) -> float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau * freq)


RNG_SIGNAL = np.cumsum(np.random.default_rng(3).normal(0.0, 2.0, (40, 2, 5, 2)), axis=0)  # (T, N, L, 2)

OFFLINE_AND_STREAMING = [
    (lambda s: ema_filter(s, 0.3), EMAFilter(0.3)),
    (lambda s: one_euro_filter(s, 30.0, 0.8, 0.05, 1.2), OneEuroFilter(30.0, 0.8, 0.05, 1.2)),
    (lambda s: kalman_filter(s, 0.05, 2.0), KalmanFilter(0.05, 2.0)),
]


# ---------------------------------------------------------------- EMA


def test_ema_step_response_closed_form() -> None:
    alpha, t = 0.25, np.arange(30)
    x = (t >= 1).astype(float)  # x_0 = 0, then 1
    expected = 1.0 - (1.0 - alpha) ** t
    np.testing.assert_allclose(ema_filter(x, alpha), expected, atol=1e-12)
    np.testing.assert_allclose(_stream(EMAFilter(alpha), x), expected, atol=1e-12)


def test_ema_white_noise_variance_ratio() -> None:
    alpha = 0.2
    noise = np.random.default_rng(0).normal(0.0, 1.0, (100_000, 2))
    y = ema_filter(noise, alpha)[100:]
    np.testing.assert_allclose(y.var(axis=0) / noise.var(axis=0), alpha / (2.0 - alpha), rtol=0.05)


def test_ema_ramp_lag() -> None:
    alpha, slope = 0.1, 2.5
    x = slope * np.arange(400.0)
    assert (x - ema_filter(x, alpha))[-1] == pytest.approx((1.0 - alpha) / alpha * slope, rel=1e-9)


# ---------------------------------------------------------------- One Euro


def test_one_euro_beta_zero_is_ema() -> None:
    freq, min_cutoff = 25.0, 1.7
    expected = ema_filter(RNG_SIGNAL, _one_euro_alpha(min_cutoff, freq))
    np.testing.assert_allclose(one_euro_filter(RNG_SIGNAL, freq, min_cutoff, 0.0, 3.0), expected, atol=1e-10)


def test_one_euro_first_step_by_hand() -> None:
    freq, min_cutoff, beta, d_cutoff = 30.0, 1.0, 0.5, 2.0
    y = one_euro_filter(np.array([0.0, 1.0]), freq, min_cutoff, beta, d_cutoff)
    dx_hat = _one_euro_alpha(d_cutoff, freq) * (1.0 - 0.0) * freq
    expected = _one_euro_alpha(min_cutoff + beta * dx_hat, freq) * 1.0
    np.testing.assert_allclose(y, [0.0, expected], atol=1e-12)


def test_one_euro_high_beta_reduces_ramp_lag() -> None:
    x = 4.0 * np.arange(120.0)  # fast ramp, 4 px / frame
    lag_slow = (x - one_euro_filter(x, 30.0, 0.5, 0.0, 1.0))[-1]
    lag_fast = (x - one_euro_filter(x, 30.0, 0.5, 1.0, 1.0))[-1]
    assert lag_slow > 10.0
    assert 0.0 < lag_fast < 0.1 * lag_slow


# ---------------------------------------------------------------- Kalman


def test_kalman_first_update_by_hand() -> None:
    q, r = 1.0, 1.0
    # P- = F diag(r, r) F^T + q [[1/4, 1/2], [1/2, 1]] -> P-_00 = 2r + q/4; gain_0 = P-_00 / (P-_00 + r)
    p00 = 2.0 * r + q / 4.0
    np.testing.assert_allclose(kalman_filter(np.array([0.0, 1.0]), q, r), [0.0, p00 / (p00 + r)])


def test_kalman_tracks_constant_velocity_ramp() -> None:
    x = 5.0 + 3.0 * np.arange(400.0)
    err = np.abs(kalman_filter(x, 1e-2, 1.0) - x)
    assert err[5] > 1e-2  # initial transient (starts with zero velocity)
    assert err[-1] < 1e-6


def test_kalman_reduces_noise_variance_below_r() -> None:
    r = 4.0
    noisy = 10.0 + np.random.default_rng(1).normal(0.0, math.sqrt(r), (20_000, 3))
    y = kalman_filter(noisy, 1e-3, r)[1000:]
    assert np.all(y.var(axis=0) < 0.3 * r)
    np.testing.assert_allclose(y.mean(axis=0), 10.0, atol=0.2)


# ---------------------------------------------------------------- shared properties


@pytest.mark.parametrize(("offline", "streaming"), OFFLINE_AND_STREAMING)
def test_offline_equals_streaming(offline: Any, streaming: TemporalFilter) -> None:
    np.testing.assert_allclose(offline(RNG_SIGNAL), _stream(streaming, RNG_SIGNAL), atol=1e-10)
    # a second run after reset starts from a fresh state
    np.testing.assert_allclose(offline(RNG_SIGNAL[5:]), _stream(streaming, RNG_SIGNAL[5:]), atol=1e-10)


@pytest.mark.parametrize(("offline", "_"), OFFLINE_AND_STREAMING)
def test_vectorised_equals_per_element(offline: Any, _: TemporalFilter) -> None:
    out = offline(RNG_SIGNAL)
    assert out.shape == RNG_SIGNAL.shape
    flat_in = RNG_SIGNAL.reshape(RNG_SIGNAL.shape[0], -1)
    per_element = np.stack([offline(flat_in[:, k]) for k in range(flat_in.shape[1])], axis=1)
    np.testing.assert_allclose(out.reshape(per_element.shape), per_element, atol=1e-12)
    assert not np.allclose(out, RNG_SIGNAL)  # the filter does something


def test_make_filter_by_name() -> None:
    x = RNG_SIGNAL
    np.testing.assert_array_equal(_stream(make_filter("none"), x), x)
    np.testing.assert_allclose(_stream(make_filter("ema", alpha=0.4), x), ema_filter(x, 0.4))
    np.testing.assert_allclose(
        _stream(make_filter("one_euro", freq=24.0, beta=0.1), x), one_euro_filter(x, 24.0, 1.0, 0.1, 1.0)
    )
    np.testing.assert_allclose(_stream(make_filter("kalman", q=0.1, r=1.0), x), kalman_filter(x, 0.1, 1.0))
    assert isinstance(make_filter("none"), IdentityFilter)


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("median", {}, "name: unknown filter"),
        ("ema", {}, "params: bad parameters"),
        ("ema", {"alpha": 0.5, "gamma": 1.0}, "params: bad parameters"),
        ("none", {"alpha": 0.5}, "params: bad parameters"),
        ("ema", {"alpha": 0.0}, "alpha"),
        ("ema", {"alpha": 1.5}, "alpha"),
        ("ema", {"alpha": True}, "alpha"),
        ("ema", {"alpha": "0.5"}, "alpha"),
        ("one_euro", {"freq": -30.0}, "freq"),
        ("one_euro", {"freq": 30.0, "beta": -1.0}, "beta"),
        ("one_euro", {"freq": 30.0, "min_cutoff": float("nan")}, "min_cutoff"),
        ("kalman", {"q": 0.1, "r": 0.0}, "r"),
    ],
)
def test_make_filter_rejects_bad_name_or_params(name: str, params: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_filter(name, **params)


def test_stream_rejects_shape_change_and_nan() -> None:
    f = EMAFilter(0.5)
    f.update(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="x_t: shape"):
        f.update(np.zeros((6, 2)))
    with pytest.raises(ValueError, match="x_t: contains NaN"):
        f.update(np.full((5, 2), np.nan))
    f.reset()
    np.testing.assert_array_equal(f.update(np.ones((6, 2))), np.ones((6, 2)))
    with pytest.raises(ValueError, match="signal"):
        kalman_filter(np.zeros((0, 3)), 0.1, 1.0)
    with pytest.raises(ValueError, match="signal: contains NaN"):
        ema_filter(np.array([0.0, np.inf]), 0.5)


# ------------------------------------------------------------------------------------------- the registry
@pytest.mark.parametrize("name", list(FILTERS))
def test_registry_offline_equals_streaming_for_defaults_and_every_grid_point(name: str) -> None:
    spec = FILTERS[name]
    x = np.random.default_rng(3).normal(size=(9, 4, 2)) * 5.0
    points = [dict(zip(spec.grid(), vals, strict=True)) for vals in itertools.product(*spec.grid().values())]
    for params in [{}, *points]:
        kwargs = spec.kwargs(params, fps=25.0)
        assert ("freq" in kwargs) == spec.needs_freq and {**spec.defaults(), **params}.items() <= kwargs.items()
        streamed = run_filter(make_filter(name, **kwargs), x)
        np.testing.assert_allclose(apply_filter(name, params, x, 25.0), streamed, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(streamed[0], x[0])  # every filter passes its first sample through


def test_registry_errors_and_what_derives_from_it() -> None:
    with pytest.raises(ValueError, match="unknown filter 'median'"):
        apply_filter("median", {}, np.zeros((3, 2)), 30.0)
    with pytest.raises(ValueError, match="needs the frame rate"):
        apply_filter("one_euro", {}, np.zeros((3, 2)), None)
    with pytest.raises(ValueError, match="alpha"):
        apply_filter("ema", {"alpha": 1.5}, np.zeros((3, 2)), 30.0)
    from ldeq_core.landmarker import FILTER_DEFAULTS
    from pipelines.evaluate.methods import FILTER_NAMES as EVAL_FILTERS
    from pipelines.evaluate.tune_filters import DEFAULT_GRIDS
    from serve.settings import check_filter_name

    assert FILTER_NAMES[0] == "none" and SMOOTHING_FILTERS == FILTER_NAMES[1:] == EVAL_FILTERS
    assert set(DEFAULT_GRIDS) == set(SMOOTHING_FILTERS) and set(FILTER_DEFAULTS) == set(FILTER_NAMES)
    assert all(check_filter_name(n) == n for n in FILTER_NAMES)
    with pytest.raises(ValueError, match="expected one of"):
        check_filter_name("median")
