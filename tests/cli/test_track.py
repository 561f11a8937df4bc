"""``ldeq track``: CSV + overlay per input, equal to the streaming API, and every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from ldeq_cli.main import app
from ldeq_cli.track import csv_header, read_track_csv
from ldeq_core.checkpoints import load_checkpoint, save_checkpoint
from ldeq_core.config import get_preset
from ldeq_core.model import LandmarkDEQ
from ldeq_core.rwr import RwRConfig, track_videos
from ldeq_shared.video_io import write_video

N_FRAMES = 12
SIZE = (160, 120)  # width, height


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny68.pt"
    save_checkpoint(path, LandmarkDEQ(get_preset("tiny", image_size=64, heatmap_size=16, n_landmarks=68)).eval())
    return path


def _frames(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8), (9, 9), 3)
    return np.stack([np.roll(base, t, axis=1) for t in range(N_FRAMES)])  # RGB, a scene panning 1 px per frame


def _boxes() -> np.ndarray:
    return np.array([[40.0 + t, 30.0, 100.0 + t, 90.0] for t in range(N_FRAMES)])


def _video(path: Path, seed: int = 0) -> Path:
    write_video(path, _frames(seed), fps=25.0)
    return path


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["track", "--quiet", *args])
    return result.exit_code, result.output


def test_csv_rows_equal_the_streaming_tracker_and_the_overlay_keeps_frames_and_fps(
    tmp_path: Path, checkpoint: Path
) -> None:
    video = _video(tmp_path / "clip.mp4")
    np.save(tmp_path / "clip.npy", _boxes())
    code, out = _run(str(video), "--out", str(tmp_path / "out"), "--model", str(checkpoint), "--boxes",
                     str(tmp_path / "clip.npy"))  # fmt: skip
    assert code == 0, out
    header, rows = read_track_csv(tmp_path / "out/clip.csv")
    assert header == csv_header(68) and header[:8] == ["frame", "face_id", "timestamp", "x1", "y1", "x2", "y2", "nfe"]
    assert rows.shape == (N_FRAMES, len(header)) and rows[:, 0].tolist() == list(range(N_FRAMES))
    assert (rows[:, 1] == 0).all() and rows[:, 2] == pytest.approx(np.arange(N_FRAMES) / 25.0, abs=1e-4)
    # independent path: the same decoded frames and boxes through track_videos (the default video mode for a plain
    # checkpoint: RwR, 2 NFE, state warp, no filter; crop = model size)
    frames = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in _decode(video)]
    model = load_checkpoint(checkpoint).model
    ref = track_videos(model, [(frames, _boxes())], RwRConfig(budget_nfe=2, crop_size=64, warp_state=True))[0]
    lm = np.stack([rows[:, 10:78], rows[:, 78:146]], axis=-1)
    np.testing.assert_allclose(lm, ref.landmarks, atol=5e-4 + 1e-9)  # the CSV keeps 3 decimals
    assert rows[:, 7].tolist() == ref.nfe.tolist()
    cap = cv2.VideoCapture(str(tmp_path / "out/clip.overlay.mp4"))
    n = 0
    while cap.grab():
        n += 1
    assert n == N_FRAMES and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)


def _decode(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return out
        out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def test_one_bad_file_in_a_folder_does_not_stop_the_others(tmp_path: Path, checkpoint: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _video(folder / "good.mp4")
    (folder / "notes.mp4").write_text("not a video")
    truncated = _video(folder / "cut.mp4", seed=1)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    (folder / "photo.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    for stem in ("good", "notes", "cut", "photo"):
        np.save(boxes / f"{stem}.npy", _boxes()[:1] if stem == "photo" else _boxes())
    code, out = _run(str(folder), "--out", str(tmp_path / "out"), "--model", str(checkpoint), "--boxes", str(boxes))
    assert code == 1
    assert "3 of 4 input(s) failed:" in out
    lines = out.splitlines()
    for name in ("notes.mp4", "cut.mp4", "photo.jpg"):  # whole paths, one line each, however long the tmp path
        assert any(line.strip().startswith(f"{folder / name}: ") for line in lines), (name, out[-2000:])
    assert not any(line.strip().startswith(f"{folder / 'good.mp4'}: ") for line in lines)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.csv", "good.overlay.mp4"]  # no partials


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        (_boxes()[:5], "5 boxes for a video of 12 frames"),
        (np.where(np.arange(N_FRAMES)[:, None] == 3, np.nan, _boxes()), "NaN or inf box at frame(s) [3]"),
        (_boxes()[:, :3], "must be a (T, 4) array"),
    ],
)
def test_bad_boxes_name_the_file_and_write_nothing(
    tmp_path: Path, checkpoint: Path, boxes: np.ndarray, message: str
) -> None:
    video = _video(tmp_path / "clip.mp4")
    np.save(tmp_path / "b.npy", boxes)
    code, out = _run(str(video), "--out", str(tmp_path / "out"), "--model", str(checkpoint), "--boxes",
                     str(tmp_path / "b.npy"))  # fmt: skip
    assert code == 1 and message in " ".join(out.split()) and "clip" in out
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_no_face_gives_a_header_only_csv_or_an_error_with_require_face(tmp_path: Path, checkpoint: Path) -> None:
    write_video(tmp_path / "blank.mp4", np.full((6, 120, 160, 3), 128, np.uint8), fps=10.0)
    code, out = _run(str(tmp_path / "blank.mp4"), "--out", str(tmp_path / "out"), "--model", str(checkpoint),
                     "--detector", "haar")  # fmt: skip
    assert code == 0 and "no face found in 6 frame(s)" in " ".join(out.split())
    assert (tmp_path / "out/blank.csv").read_text().strip() == ",".join(csv_header(68))
    code, out = _run(str(tmp_path / "blank.mp4"), "--out", str(tmp_path / "out2"), "--model", str(checkpoint),
                     "--detector", "haar", "--require-face", "--no-overlay")  # fmt: skip
    assert code == 1 and "--require-face" in out and not (tmp_path / "out2/blank.csv").exists()


def test_an_image_input_gives_one_row_and_a_png_overlay(tmp_path: Path, checkpoint: Path) -> None:
    img = tmp_path / "face.png"
    cv2.imwrite(str(img), cv2.cvtColor(_frames()[0], cv2.COLOR_RGB2BGR))
    np.save(tmp_path / "face.npy", _boxes()[:1])
    code, out = _run(str(img), "--out", str(tmp_path / "out"), "--model", str(checkpoint), "--boxes",
                     str(tmp_path / "face.npy"))  # fmt: skip
    assert code == 0, out
    _, rows = read_track_csv(tmp_path / "out/face.csv")
    assert rows.shape[0] == 1 and rows[0, 0] == 0
    assert cv2.imread(str(tmp_path / "out/face.overlay.png")).shape == (SIZE[1], SIZE[0], 3)


def test_usage_errors_exit_2(tmp_path: Path, checkpoint: Path) -> None:
    code, out = _run(str(tmp_path), "--model", str(tmp_path / "missing.pt"))
    assert code == 2 and "missing.pt" in out
    code, out = _run(str(tmp_path), "--model", str(checkpoint), "--filter", "median")
    assert code == 2 and "unknown filter" in out
