"""Classic temporal landmark filters: the baselines RwR must beat (EMA, One Euro, constant-velocity Kalman).

Every filter runs along axis 0 (time) of a signal of shape (T, ...), e.g. (T, L, 2) or (T, N, L, 2), and is
vectorised over the trailing shape. Each comes in two forms:
- a streaming object with ``reset()`` and ``update(x_t) -> filtered_t`` (``x_t`` of shape (...));
- an offline function (``ema_filter``, ``one_euro_filter``, ``kalman_filter``) returning an array of the
  signal's shape, equal to a streaming run from a fresh state.
All filters output their first sample unchanged and compute in float64. :data:`FILTERS` is the registry (streaming
class, offline function, parameters with defaults and tuning grids); ``make_filter(name, **params)`` and
``apply_filter(name, params, signal, fps)`` build or run a filter by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class TemporalFilter(Protocol):
    """Streaming filter interface."""

    def reset(self) -> None: ...

    def update(self, x_t: np.ndarray) -> np.ndarray: ...


def _check_param(name: str, value: float, low: float, high: float = math.inf, low_open: bool = True) -> float:
    """Return ``value`` as float if it lies in (low, high] (or [low, high] when ``low_open`` is False)."""
    ok = isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool)
    v = float(value) if ok else math.nan
    if not (math.isfinite(v) and (v > low if low_open else v >= low) and v <= high):
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        raise ValueError(f"{name}: must be a finite number in {interval}, got {value!r}")
    return v


def _as_sample(x_t: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
    x = np.asarray(x_t, dtype=np.float64)
    if shape is not None and x.shape != shape:
        raise ValueError(f"x_t: shape {x.shape} differs from the stream's shape {shape}; call reset() first")
    if not np.all(np.isfinite(x)):
        raise ValueError("x_t: contains NaN or inf")
    return x


def _as_signal(signal: np.ndarray) -> np.ndarray:
    s = np.asarray(signal, dtype=np.float64)
    if s.ndim < 1 or s.shape[0] == 0:
        raise ValueError(f"signal: expected shape (T, ...) with T >= 1, got {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("signal: contains NaN or inf")
    return s


def run_filter(filt: TemporalFilter, signal: np.ndarray) -> np.ndarray:
    """Reset ``filt`` and run it over ``signal`` (T, ...) frame by frame; return the filtered (T, ...)."""
    s = _as_signal(signal)
    filt.reset()
    return np.stack([filt.update(x_t) for x_t in s])


class IdentityFilter:
    """No filtering (the "none" entry of the registry)."""

    def reset(self) -> None:
        return None

    def update(self, x_t: np.ndarray) -> np.ndarray:
        return _as_sample(x_t, None).copy()


class EMAFilter:
    """Exponential moving average: y_0 = x_0, y_t = alpha x_t + (1 - alpha) y_{t-1}; alpha in (0, 1]."""

    def __init__(self, alpha: float) -> None:
        self.alpha = _check_param("alpha", alpha, 0.0, 1.0)
        self.reset()

    def reset(self) -> None:
        self._y: np.ndarray | None = None

    def update(self, x_t: np.ndarray) -> np.ndarray:
        x = _as_sample(x_t, None if self._y is None else self._y.shape)
        self._y = x.copy() if self._y is None else self.alpha * x + (1.0 - self.alpha) * self._y
        return self._y.copy()


def ema_filter(signal: np.ndarray, alpha: float) -> np.ndarray:
    """Offline EMA along axis 0 (an IIR filter via ``scipy.signal.lfilter``, initial state y_0 = x_0)."""
    a = _check_param("alpha", alpha, 0.0, 1.0)
    s = _as_signal(signal)
    zi = ((1.0 - a) * s[0])[None]  # makes y_0 = a x_0 + zi = x_0
    from scipy.signal import lfilter  # lazy: scipy.signal costs ~0.6 s at import, in every process using ldeq_core

    y, _ = lfilter([a], [1.0, -(1.0 - a)], s, axis=0, zi=zi)
    return y


def smoothing_factor(cutoff: float, freq: float) -> float:
    """One Euro low-pass factor alpha = 1 / (1 + tau * freq) with tau = 1 / (2 pi cutoff)."""
    return 1.0 / (1.0 + freq / (2.0 * math.pi * cutoff))


class OneEuroFilter:
    """One Euro filter (Casiez et al., CHI 2012), element-wise over the sample shape.

    dx_t = (x_t - y_{t-1}) * freq is low-passed with cutoff ``d_cutoff``; the signal cutoff is
    min_cutoff + beta |dx_hat_t| (element-wise), and y_t = alpha(cutoff) x_t + (1 - alpha) y_{t-1}.
    As in the paper's pseudocode, the derivative uses the previous *filtered* value y_{t-1}.
    Units: freq in Hz (frames per second), cutoffs in Hz, beta in 1 / (signal unit).
    """

    def __init__(self, freq: float, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0) -> None:
        self.freq = _check_param("freq", freq, 0.0)
        self.min_cutoff = _check_param("min_cutoff", min_cutoff, 0.0)
        self.beta = _check_param("beta", beta, 0.0, low_open=False)
        self.d_cutoff = _check_param("d_cutoff", d_cutoff, 0.0)
        self.reset()

    def reset(self) -> None:
        self._y: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def update(self, x_t: np.ndarray) -> np.ndarray:
        x = _as_sample(x_t, None if self._y is None else self._y.shape)
        if self._y is None or self._dx is None:
            self._y, self._dx = x.copy(), np.zeros_like(x)
            return self._y.copy()
        a_d = smoothing_factor(self.d_cutoff, self.freq)
        self._dx = a_d * (x - self._y) * self.freq + (1.0 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        a = 1.0 / (1.0 + self.freq / (2.0 * np.pi * cutoff))
        self._y = a * x + (1.0 - a) * self._y
        return self._y.copy()


def one_euro_filter(
    signal: np.ndarray, freq: float, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0
) -> np.ndarray:
    """Offline One Euro filter along axis 0 of ``signal`` (T, ...)."""
    return run_filter(OneEuroFilter(freq, min_cutoff, beta, d_cutoff), signal)


class KalmanFilter:
    """Constant-velocity Kalman filter per coordinate, time step 1 frame.

    State (position, velocity); F = [[1, 1], [0, 1]], H = [1, 0]; process noise from a piecewise-constant
    white acceleration of variance ``q``: Q = q [[1/4, 1/2], [1/2, 1]]; measurement variance ``r``.
    Initialised at the first sample with zero velocity and P0 = diag(r, r). Since F, H, Q, R and P0 are the
    same for every element, the covariance is one shared 2x2 matrix; only the state is vectorised.
    """

    def __init__(self, q: float, r: float) -> None:
        self.q = _check_param("q", q, 0.0)
        self.r = _check_param("r", r, 0.0)
        self._f = np.array([[1.0, 1.0], [0.0, 1.0]])
        self._qm = self.q * np.array([[0.25, 0.5], [0.5, 1.0]])
        self.reset()

    def reset(self) -> None:
        self._pos: np.ndarray | None = None
        self._vel: np.ndarray | None = None
        self._p = np.diag([self.r, self.r])

    def update(self, x_t: np.ndarray) -> np.ndarray:
        x = _as_sample(x_t, None if self._pos is None else self._pos.shape)
        if self._pos is None or self._vel is None:
            self._pos, self._vel = x.copy(), np.zeros_like(x)
            return self._pos.copy()
        pos = self._pos + self._vel  # predict
        p = self._f @ self._p @ self._f.T + self._qm
        gain = p[:, 0] / (p[0, 0] + self.r)  # K = P H^T / (H P H^T + r)
        innovation = x - pos
        self._pos = pos + gain[0] * innovation
        self._vel = self._vel + gain[1] * innovation
        self._p = p - np.outer(gain, p[0, :])  # (I - K H) P
        return self._pos.copy()


def kalman_filter(signal: np.ndarray, q: float, r: float) -> np.ndarray:
    """Offline constant-velocity Kalman filter along axis 0 of ``signal`` (T, ...)."""
    return run_filter(KalmanFilter(q, r), signal)


@dataclass(frozen=True)
class FilterParam:
    """One tunable parameter: its streaming default and the grid the evaluation tunes over."""

    name: str
    default: float
    grid: tuple[float, ...]
    doc: str


@dataclass(frozen=True)
class FilterSpec:
    """A registered filter: the streaming class, the offline function, its parameters and whether it needs the
    frame rate (``freq``, taken from the video). Everything else (the evaluation's filtered methods and tuning
    grids, Serve's option validation and OpenAPI enum, ``ldeq track``'s defaults) derives from :data:`FILTERS`.
    """

    name: str
    factory: Callable[..., TemporalFilter]
    offline: Callable[..., np.ndarray]
    params: tuple[FilterParam, ...] = ()
    needs_freq: bool = False
    description: str = ""

    def defaults(self) -> dict[str, float]:
        """Streaming defaults (without ``freq``)."""
        return {p.name: p.default for p in self.params}

    def grid(self) -> dict[str, list[float]]:
        """The default tuning grid: parameter -> candidate values."""
        return {p.name: list(p.grid) for p in self.params}

    def kwargs(self, params: Mapping[str, float], fps: float | None = None) -> dict[str, float]:
        """``params`` over the defaults, with ``freq`` = ``fps`` for a filter that needs the frame rate."""
        out = {**self.defaults(), **params}
        if self.needs_freq and "freq" not in out:
            if fps is None or not fps > 0 or not math.isfinite(fps):
                raise ValueError(f"the {self.name} filter needs the frame rate, got fps={fps}")
            out["freq"] = float(fps)
        return out


def _identity(signal: np.ndarray) -> np.ndarray:
    return _as_signal(signal).copy()


FILTERS: dict[str, FilterSpec] = {
    spec.name: spec
    for spec in (
        FilterSpec("none", IdentityFilter, _identity, description="no filtering"),
        FilterSpec(
            "ema",
            EMAFilter,
            ema_filter,
            (FilterParam("alpha", 0.5, (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), "weight of the new sample, (0, 1]"),),
            description="exponential moving average",
        ),
        FilterSpec(
            "one_euro",
            OneEuroFilter,
            one_euro_filter,
            (
                FilterParam("min_cutoff", 1.0, (0.3, 1.0, 3.0, 10.0), "minimum cutoff, Hz"),
                FilterParam("beta", 0.05, (0.0, 0.003, 0.03, 0.3), "speed coefficient, 1 / pixel"),
            ),
            needs_freq=True,
            description="One Euro (Casiez et al. 2012); freq = the video's frame rate",
        ),
        FilterSpec(
            "kalman",
            KalmanFilter,
            kalman_filter,
            (
                FilterParam("q", 1.0, (0.01, 0.1, 1.0, 10.0), "process (acceleration) variance, pixel^2"),
                FilterParam("r", 16.0, (1.0, 4.0, 16.0), "measurement variance, pixel^2"),
            ),
            description="constant-velocity Kalman",
        ),
    )
}
FILTER_NAMES: tuple[str, ...] = tuple(FILTERS)  # "none" first
SMOOTHING_FILTERS: tuple[str, ...] = tuple(n for n in FILTERS if n != "none")


def filter_spec(name: str) -> FilterSpec:
    """The registered filter ``name``; ``ValueError`` naming the known ones."""
    if name not in FILTERS:
        raise ValueError(f"name: unknown filter {name!r}, expected one of {sorted(FILTERS)}")
    return FILTERS[name]


def make_filter(name: str, **params: Any) -> TemporalFilter:
    """Build a streaming filter by name (see :data:`FILTERS`) with keyword parameters.

    Raises ``ValueError`` for an unknown name, an unknown or missing parameter, or an out-of-range value.
    """
    spec = filter_spec(name)
    try:
        return spec.factory(**params)
    except TypeError as exc:  # unknown or missing keyword
        raise ValueError(f"params: bad parameters {sorted(params)} for filter {name!r}: {exc}") from exc


def apply_filter(name: str, params: Mapping[str, float], signal: np.ndarray, fps: float | None = None) -> np.ndarray:
    """Offline filter of a (T, ...) signal by name: ``params`` over the defaults, ``freq`` from ``fps``."""
    spec = filter_spec(name)
    kwargs = spec.kwargs(params, fps)
    make_filter(name, **kwargs)  # validates names and ranges with the streaming class's messages
    return spec.offline(signal, **kwargs)
