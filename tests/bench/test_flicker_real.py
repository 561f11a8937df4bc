"""The real-video flicker proxy: zero for rigid similarity motion, the injected RMS for landmark jitter."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from flicker_real_video import flicker, similarity_residual


def test_similarity_motion_leaves_no_residual() -> None:
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 100, (68, 2))
    th, s = 0.2, 1.3
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    b = s * a @ rot.T + [12.0, -5.0]
    assert similarity_residual(a, b) == pytest.approx(0.0, abs=1e-9)
    assert flicker(np.stack([a, b, s * b @ rot.T])) == pytest.approx(0.0, abs=1e-6)


def test_jitter_residual_matches_the_injected_rms() -> None:
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 200, (2000, 2))  # many points: the fitted similarity absorbs almost none of the noise
    noise = rng.normal(0, 1.5, a.shape)
    # per-point RMS of 2-D Gaussian noise with std 1.5 per coordinate: 1.5 * sqrt(2)
    assert similarity_residual(a, a + noise) == pytest.approx(1.5 * np.sqrt(2), rel=0.03)
