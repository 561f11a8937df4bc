"""Thread-safe .npy / .npz loading (CPython 3.11 AST race, python/cpython#106905)."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from ldeq_core.npyio import load_npy, load_npz


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_load_npy_and_npz_round_trip(tmp_path: Path) -> None:
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    np.save(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(load_npy(tmp_path / "a.npy"), a)
    mm = load_npy(tmp_path / "a.npy", mmap_mode="r")
    assert isinstance(mm, np.memmap) and mm.shape == (2, 3, 4) and int(mm[1, 2, 3]) == 23
    np.testing.assert_array_equal(load_npy(io.BytesIO(_npy(a))), a)
    np.savez(tmp_path / "z.npz", x=a, y=np.ones(3))
    z = load_npz(tmp_path / "z.npz")
    assert sorted(z) == ["x", "y"]
    np.testing.assert_array_equal(z["x"], a)


def test_wrong_kind_or_pickled_content_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "z.npz", x=np.zeros(2))
    np.save(tmp_path / "a.npy", np.zeros(2))
    with pytest.raises(ValueError, match=r"got an \.npz archive"):
        load_npy(tmp_path / "z.npz")
    with pytest.raises(ValueError, match=r"got a single \.npy array"):
        load_npz(tmp_path / "a.npy")
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickle"):
        load_npy(io.BytesIO(buf.getvalue()))


def test_many_threads_load_the_right_arrays() -> None:
    blobs = [_npy(np.full((i % 7 + 1, 3), i, dtype=np.float32)) for i in range(64)]

    def one(i: int) -> bool:
        arr = load_npy(io.BytesIO(blobs[i % 64]))
        return arr.shape == ((i % 64) % 7 + 1, 3) and bool((arr == i % 64).all())

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(one, range(1024)))
