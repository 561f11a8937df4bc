from __future__ import annotations

import hashlib
import os
import stat

import numpy as np
import pytest

from ldeq_core.fileio import (
    atomic_path,
    file_sha256,
    save_npy_atomic,
    update_from_file,
    write_bytes_atomic,
    write_text_atomic,
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("fsync", [False, True])
def test_atomic_write_replaces_the_target_with_default_permissions(tmp_path, fsync) -> None:
    target = tmp_path / "sub" / "out.json"  # the folder is created
    write_text_atomic(target, "old", fsync=fsync)
    with atomic_path(target, fsync=fsync) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".") and tmp.suffix == ".json"
        tmp.write_text("new é")
        assert target.read_text() == "old"  # untouched until the block ends
    assert target.read_text(encoding="utf-8") == "new é"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path) -> None:
    target = tmp_path / "a.bin"
    write_bytes_atomic(target, b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_save_npy_atomic_and_sha256(tmp_path) -> None:
    arr = np.arange(12, dtype=np.float64).reshape(3, 4)
    path = tmp_path / "x.npy"
    save_npy_atomic(path, arr)
    assert np.array_equal(np.load(path, allow_pickle=False), arr)
    data = path.read_bytes()
    assert file_sha256(path) == file_sha256(path, chunk=7) == hashlib.sha256(data).hexdigest()
    h = hashlib.sha256(b"prefix")
    update_from_file(h, path, chunk=5)
    assert h.hexdigest() == hashlib.sha256(b"prefix" + data).hexdigest()
