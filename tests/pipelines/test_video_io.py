"""Video decode/encode validation (spec §10.10) with small files made here."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from ldeq_shared.errors import DataError
from ldeq_shared.video_io import (
    iter_frames,
    probe_video,
    read_frames,
    verify_video,
    write_video,
)


def _frames(t: int = 8, h: int = 48, w: int = 64) -> np.ndarray:
    """Flat frames whose colour encodes the frame index (survives lossy coding)."""
    f = np.zeros((t, h, w, 3), np.uint8)
    for i in range(t):
        f[i] = (20 + 37 * i % 200, 220 - 23 * i % 200, 128)
    return f


def _faststart(data: bytes) -> bytes:
    """Move the mp4 'moov' atom before 'mdat' (as in streamed downloads), shifting chunk offsets."""
    atoms, i = [], 0
    while i < len(data):
        size, kind = struct.unpack(">I4s", data[i : i + 8])
        atoms.append((kind, data[i : i + size]))
        i += size
    moov = bytearray(next(a for k, a in atoms if k == b"moov"))
    j = moov.find(b"stco")
    while j != -1:
        (n,) = struct.unpack(">I", moov[j + 8 : j + 12])
        for k in range(n):
            p = j + 12 + 4 * k
            moov[p : p + 4] = struct.pack(">I", struct.unpack(">I", moov[p : p + 4])[0] + len(moov))
        j = moov.find(b"stco", j + 4)
    rest = [a for k, a in atoms if k != b"moov"]
    return rest[0] + bytes(moov) + b"".join(rest[1:])


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    frames = _frames()
    info = write_video(tmp_path / "v.mp4", frames, fps=25.0)
    assert (info.n_frames, info.width, info.height) == (8, 64, 48)
    assert info.fps == pytest.approx(25.0)
    back = read_frames(tmp_path / "v.mp4", rgb=True)
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 4
    bgr = next(iter_frames(tmp_path / "v.mp4"))
    np.testing.assert_array_equal(bgr[..., ::-1], back[0])  # iter_frames gives BGR
    assert probe_video(tmp_path / "v.mp4").declared_frames == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]  # no temp file left behind


def test_writer_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", _frames(2, 47, 64), 30)
    with pytest.raises(ValueError, match="non-empty"):
        write_video(tmp_path / "e.mp4", _frames(0), 30)
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "f.mp4", _frames(2), 0)
    assert list(tmp_path.iterdir()) == []


def test_verify_expectations(tmp_path: Path) -> None:
    write_video(tmp_path / "v.mp4", _frames(5), 30)
    assert verify_video(tmp_path / "v.mp4", expected_frames=5, expected_size=(64, 48)).n_frames == 5
    with pytest.raises(DataError, match="5 frames but 6 are expected"):
        verify_video(tmp_path / "v.mp4", expected_frames=6)
    with pytest.raises(DataError, match="expected 32x48"):
        verify_video(tmp_path / "v.mp4", expected_size=(32, 48))


def test_not_a_video_and_missing(tmp_path: Path) -> None:
    fake = tmp_path / "fake.mp4"
    fake.write_text("this is not a video\n")
    for fn in (verify_video, probe_video, lambda p: list(iter_frames(p))):
        with pytest.raises(DataError, match="cannot open") as err:
            fn(fake)
        assert err.value.path == str(fake)
    with pytest.raises(DataError, match="does not exist"):
        verify_video(tmp_path / "missing.mp4")


def test_truncated_download_is_detected(tmp_path: Path) -> None:
    write_video(tmp_path / "v.mp4", _frames(20), 30)
    data = _faststart((tmp_path / "v.mp4").read_bytes())
    (tmp_path / "fs.mp4").write_bytes(data)
    assert verify_video(tmp_path / "fs.mp4").n_frames == 20  # the rewrite itself is valid
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 3 // 4])
    assert probe_video(cut).declared_frames == 20  # the container still claims 20 frames
    with pytest.raises(DataError, match="truncated video: decoded"):
        verify_video(cut)
    got: list[np.ndarray] = []
    with pytest.raises(DataError, match="of 20 declared"):
        got.extend(iter_frames(cut))
    assert 0 < len(got) < 20
    assert len(list(iter_frames(cut, strict=False))) == len(got)


@pytest.mark.shared_data
def test_real_clip(shared_data: Path) -> None:
    clip = shared_data / "video" / "short_hamilton_clip.mp4"
    if not clip.is_file():
        pytest.skip(f"shared data clip not found at {clip}")
    info = verify_video(clip, expected_frames=275, expected_size=(640, 360))
    assert info.fps == pytest.approx(29.97, abs=0.01)
