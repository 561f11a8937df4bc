"""Offline tests of the WFLW-V acquisition stage; a local HTTP server stands in for YouTube and archives."""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import tarfile
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("yt_dlp")

from ldeq_cli.main import app
from pipelines import acquire_wflw_v as acq
from pipelines.wflw_v_lists import FrameRange, WflwVLists, lists_from_entries

W, H, FPS = 64, 48, 25.0
BLOCK, N_BITS = 16, 8  # frame i shows the bits of i as black/white 16x16 blocks (one codec macroblock each)

A, B, C, D, E, F, G = (
    "-vidA000001",
    "vidB_000002",
    "vidC000003x",
    "vidD000004m",
    "vidE000005f",
    "vidF000006z",
    "vidG000007q",
)
# id -> (frames in the served video or None when not served, window start, window end, landmark frames)
PLAN: dict[str, tuple[int | None, int, int, int]] = {
    A: (50, 5, 24, 20),  # ordinary clip, id starts with '-'
    B: (40, 0, 19, 20),  # window at the very start
    C: (30, 10, 39, 30),  # the video ends before the window does
    D: (None, 0, 9, 10),  # 404
    E: (45, 20, 44, 25),  # window ends on the last frame; two 503s before it is served
    F: (40, 0, 9, 10),  # always 503
    G: (40, 0, 9, 12),  # landmarks longer than the window
}


def _block(bit: int) -> tuple[slice, slice]:
    row, col = divmod(bit, W // BLOCK)
    return slice(row * BLOCK, (row + 1) * BLOCK), slice(col * BLOCK, (col + 1) * BLOCK)


def index_frame(i: int) -> np.ndarray:
    """A frame whose blocks spell the frame index in binary: lossy coding cannot blur it."""
    frame = np.full((H, W, 3), 128, np.uint8)
    for bit in range(N_BITS):
        frame[_block(bit)] = 255 if (i >> bit) & 1 else 0
    return frame


def make_video(path: Path, n_frames: int, fps: float = FPS) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
    assert writer.isOpened()
    for i in range(n_frames):
        writer.write(index_frame(i))
    writer.release()


def frame_indices(path: Path) -> list[int]:
    """Frame indices decoded from the binary blocks of every frame of a clip."""
    cap = cv2.VideoCapture(str(path))
    indices = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        indices.append(sum(1 << bit for bit in range(N_BITS) if frame[_block(bit)].mean() > 128))
    cap.release()
    return indices


def fake_annotations(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lm = np.stack([rng.uniform(0, W, (n, 98)), rng.uniform(0, H, (n, 98))], axis=-1).astype(np.float32)
    boxes = np.tile(np.array([8, 6, 56, 42], np.int32), (n, 1))
    return lm, boxes


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def plan_lists(ids: list[str]) -> WflwVLists:
    easy = [v for v in ids if v in (A, B, C, D)]
    hard = [v for v in ids if v not in easy]
    return lists_from_entries(easy, hard, {v: (PLAN[v][1], PLAN[v][2]) for v in ids})


class Server:
    """Static files with per-path hit counters and scripted 503 failures."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hits: Counter[str] = Counter()
        self.served_503: Counter[str] = Counter()
        self.fail_503: dict[str, int] = {}  # path -> remaining failures (-1: always)
        self.lock = threading.Lock()
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                with server.lock:
                    server.hits[path] += 1
                    left = server.fail_503.get(path, 0)
                    if left:
                        server.fail_503[path] = left - 1 if left > 0 else left
                        server.served_503[path] += 1
                if left:
                    self.send_error(503)
                    return
                super().do_GET()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self.lock:
            self.hits.clear()
            self.served_503.clear()
            self.fail_503.clear()

    def video_hits(self, vid: str) -> int:
        return self.hits[f"/{vid}.mp4"]


@pytest.fixture(scope="module")
def _server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("www")
    for vid, (n_video, _s, _e, _n_lm) in PLAN.items():
        if n_video is not None:
            make_video(root / f"{vid}.mp4", n_video)
    with zipfile.ZipFile(root / "annotations.zip", "w") as zf:
        for k, (vid, (_n, _s, _e, n_lm)) in enumerate(PLAN.items()):
            lm, boxes = fake_annotations(n_lm, seed=k)
            zf.writestr(f"ann/WFLW_V/landmarks/{vid}.npy", npy_bytes(lm))
            zf.writestr(f"ann/WFLW_V/bboxes/{vid}.npy", npy_bytes(boxes))
    srv = Server(root)
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def server(_server: Server) -> Server:
    _server.reset()
    return _server


def read_manifest(out: Path) -> dict[str, dict[str, str]]:
    with (out / "manifest.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), f"duplicate manifest rows: {ids}"
    return {r["id"]: r for r in rows}


def leftovers(out: Path) -> list[str]:
    """Temp or partial files anywhere under the output root."""
    return [
        str(p.relative_to(out))
        for p in out.rglob("*")
        if acq.TMP_DIRNAME in p.parts or ".partial" in p.name or p.name.endswith((".tmp", ".part"))
    ]


def test_youtube_path_end_to_end(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "wflw_v"
    server.fail_503[f"/{E}.mp4"] = 2
    server.fail_503[f"/{F}.mp4"] = -1
    lists = plan_lists(list(PLAN))
    kwargs = {
        "url_template": server.base + "/{id}.mp4",
        "lists": lists,
        "workers": 2,
        "retries": 2,
        "backoff_s": 0.01,
        "progress": False,
    }
    summary = acq.acquire_from_youtube(out, server.base + "/annotations.zip", **kwargs)

    status = {r.id: r.status for r in summary.rows}
    assert status == {
        A: "ok",
        B: "ok",
        C: "invalid",
        D: "unavailable",
        E: "ok",
        F: "unavailable",
        G: "invalid",
    }
    assert summary.counts == {"ok": 3, "skipped_existing": 0, "unavailable": 2, "invalid": 2}
    assert summary.usable_ids == [A, B, E]
    rows = read_manifest(out)
    assert set(rows) == set(PLAN)
    assert {k: r["status"] for k, r in rows.items()} == status

    # exact inclusive windows, decoded frame by frame
    for vid in (A, B, E):
        _n, start, end, _ = PLAN[vid]
        clip = out / "videos" / f"{vid}.mp4"
        assert frame_indices(clip) == list(range(start, end + 1)), vid
        row = rows[vid]
        assert int(row["n_frames"]) == end - start + 1
        assert (int(row["width"]), int(row["height"]), float(row["fps"])) == (W, H, FPS)
        assert row["sha256"] == hashlib.sha256(clip.read_bytes()).hexdigest()
        assert (int(row["start"]), int(row["end"])) == (start, end)
        assert row["reason"] == ""
    assert rows[A]["split"] == "easy" and rows[E]["split"] == "hard"

    # failures are recorded with reasons, and the others still complete
    assert "only 30 frames" in rows[C]["reason"] and "needs 40" in rows[C]["reason"]
    assert "404" in rows[D]["reason"] and "not retried" in rows[D]["reason"]
    assert "503" in rows[F]["reason"] and "3 attempt" in rows[F]["reason"]
    assert "12 frames" in rows[G]["reason"] and "window [0, 9]" in rows[G]["reason"]
    assert rows[D]["sha256"] == rows[F]["sha256"] == ""
    # retries: E failed twice then succeeded, F was tried retries + 1 times, a 404 is not retried,
    # and a clip whose annotations cannot match is never downloaded
    assert server.served_503[f"/{E}.mp4"] == 2 and server.video_hits(E) > 2
    assert server.served_503[f"/{F}.mp4"] == 3 == server.video_hits(F)
    assert server.video_hits(D) == 1
    assert server.video_hits(G) == 0

    # annotations were unpacked from the nested folders of the zip
    lm_a, boxes_a = fake_annotations(20, seed=list(PLAN).index(A))
    np.testing.assert_array_equal(np.load(out / "landmarks" / f"{A}.npy"), lm_a)
    np.testing.assert_array_equal(np.load(out / "bboxes" / f"{A}.npy"), boxes_a)
    assert sorted(p.name for p in (out / "videos").iterdir()) == sorted(f"{v}.mp4" for v in (A, B, E))
    assert leftovers(out) == []

    # re-run: finished clips are kept (no new download), failures are retried, rows are replaced
    hits_before = {v: server.video_hits(v) for v in (A, B, E)}
    server.fail_503.clear()
    again = acq.acquire_from_youtube(out, None, **kwargs)
    again_status = {r.id: r.status for r in again.rows}
    assert [again_status[v] for v in (A, B, E)] == ["skipped_existing"] * 3
    assert again_status[F] == "ok"  # the server recovered
    assert {v: server.video_hits(v) for v in (A, B, E)} == hits_before
    rows2 = read_manifest(out)
    assert len(rows2) == len(PLAN)
    assert rows2[A]["sha256"] == rows[A]["sha256"]

    # a subset run merges into the manifest instead of replacing it
    acq.acquire_from_youtube(out, None, ids=[B], **kwargs)
    rows3 = read_manifest(out)
    assert set(rows3) == set(PLAN) and rows3[F]["status"] == "ok"


def test_interrupted_run_resumes_cleanly(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "wflw_v"
    ids = [A, B, E]
    lists = plan_lists(ids)
    real_open = acq._open_writer

    class DyingWriter:
        """Writes a few frames of B's clip, then the user presses Ctrl-C."""

        def __init__(self, inner: cv2.VideoWriter) -> None:
            self.inner, self.n = inner, 0

        def write(self, frame: np.ndarray) -> None:
            self.n += 1
            if self.n > 3:
                raise KeyboardInterrupt
            self.inner.write(frame)

        def release(self) -> None:
            self.inner.release()

    def open_writer(path: Path, fps: float, size: tuple[int, int]) -> object:
        w = real_open(path, fps, size)
        return DyingWriter(w) if B in path.name else w

    monkeypatch.setattr(acq, "_open_writer", open_writer)
    kwargs = {
        "url_template": server.base + "/{id}.mp4",
        "lists": lists,
        "workers": 1,
        "retries": 0,
        "backoff_s": 0.0,
        "progress": False,
    }
    with pytest.raises(KeyboardInterrupt):
        acq.acquire_from_youtube(out, server.base + "/annotations.zip", **kwargs)
    rows = read_manifest(out)
    assert rows[A]["status"] == "ok" and B not in rows
    assert all(r["status"] == "ok" for r in rows.values())  # E may have finished while stopping
    assert not (out / "videos" / f"{B}.mp4").exists()
    assert leftovers(out) == []
    hits_a = server.video_hits(A)

    # leftovers of a run killed with SIGKILL (no cleanup possible) are removed by the next run
    (out / acq.TMP_DIRNAME / "dl-x").mkdir(parents=True)
    (out / acq.TMP_DIRNAME / "dl-x" / "video.mp4.part").write_bytes(b"partial")
    (out / "videos" / f".{B}.1234abcd{acq.PARTIAL_SUFFIX}").write_bytes(b"partial")
    monkeypatch.setattr(acq, "_open_writer", real_open)
    summary = acq.acquire_from_youtube(out, None, **kwargs)
    status = {r.id: r.status for r in summary.rows}
    assert status[A] == "skipped_existing" and status[B] == "ok"
    assert status[E] in ("ok", "skipped_existing")
    assert server.video_hits(A) == hits_a
    rows = read_manifest(out)
    assert sorted(rows) == sorted(ids)
    assert frame_indices(out / "videos" / f"{B}.mp4") == list(range(0, 20))
    assert leftovers(out) == []


def test_existing_invalid_clip_is_downloaded_again(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "wflw_v"
    (out / "videos").mkdir(parents=True)
    make_video(out / "videos" / f"{B}.mp4", 7)  # wrong length: must not be trusted
    summary = acq.acquire_from_youtube(
        out,
        None,
        url_template=server.base + "/{id}.mp4",
        lists=plan_lists([B]),
        workers=1,
        retries=0,
        progress=False,
    )
    assert [r.status for r in summary.rows] == ["ok"]
    assert summary.rows[0].reason == "warning: no landmarks for this id"
    assert server.video_hits(B) >= 1
    assert frame_indices(out / "videos" / f"{B}.mp4") == list(range(20))


def test_one_video_leaves_no_temp_download(server: Server, tmp_path: Path) -> None:
    ctx = acq._Context(
        tmp_path,
        plan_lists([A, C]),
        server.base + "/{id}.mp4",
        0,
        0.0,
        acq.DEFAULT_FORMAT,
        {},
        threading.Event(),
    )
    assert acq._acquire_one(A, ctx).status == "ok"
    assert acq._acquire_one(C, ctx).status == "invalid"  # failure after the download
    assert list((tmp_path / acq.TMP_DIRNAME).iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == [f"{A}.mp4"]


def test_cut_window_is_exact_and_rejects_short_streams(tmp_path: Path) -> None:
    src = tmp_path / "src.mp4"
    make_video(src, 12)
    first = acq.cut_window(src, tmp_path / "first.mp4", FrameRange(0, 0))
    assert first.n_frames == 1 and frame_indices(tmp_path / "first.mp4") == [0]
    last = acq.cut_window(src, tmp_path / "last.mp4", FrameRange(9, 11))
    assert (last.n_frames, last.width, last.height, last.fps) == (3, W, H, FPS)
    assert frame_indices(tmp_path / "last.mp4") == [9, 10, 11]
    with pytest.raises(ValueError, match="only 12 frames, window needs 13"):
        acq.cut_window(src, tmp_path / "long.mp4", FrameRange(5, 12))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.mp4", "last.mp4", "src.mp4"]


def test_load_checked_annotations(tmp_path: Path) -> None:
    for sub in ("landmarks", "bboxes"):
        (tmp_path / sub).mkdir()
    lm, boxes = fake_annotations(3, seed=0)
    np.save(tmp_path / "landmarks" / "ok.npy", lm)
    np.save(tmp_path / "bboxes" / "ok.npy", boxes)
    got_lm, got_boxes = acq.load_checked_annotations(tmp_path, "ok")
    np.testing.assert_array_equal(got_lm, lm)
    np.testing.assert_array_equal(got_boxes, boxes)
    assert acq.load_checked_annotations(tmp_path, "absent") == (None, None)
    np.save(tmp_path / "landmarks" / "short.npy", lm)
    np.save(tmp_path / "bboxes" / "short.npy", boxes[:2])
    with pytest.raises(ValueError, match=r"short\.npy: 2 boxes but 3 landmark frames"):
        acq.load_checked_annotations(tmp_path, "short")
    np.save(tmp_path / "landmarks" / "p68.npy", np.zeros((3, 68, 2)))
    with pytest.raises(ValueError, match="68, expected 98"):
        acq.load_checked_annotations(tmp_path, "p68")
    (tmp_path / "landmarks" / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match=r"junk\.npy: cannot load"):
        acq.load_checked_annotations(tmp_path, "junk")


def test_manifest_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / acq.MANIFEST_NAME
    m = acq.Manifest(path, order=["b", "a"])
    m.update(acq.ManifestRow("a", "easy", 0, 9, "ok", "", 10, 64, 48, 29.97, "ff"))
    m.update(acq.ManifestRow("zz", "", None, None, "invalid", "not listed, really"))
    m.update(acq.ManifestRow("b", "hard", 3, 4, "unavailable", "HTTP Error 404"))
    m.save()
    loaded = acq.Manifest.load(path)
    assert [r.id for r in m.rows] == ["b", "a", "zz"]
    assert {r.id: r for r in loaded.rows} == {r.id: r for r in m.rows}
    assert path.read_text().splitlines()[0] == ",".join(acq.MANIFEST_COLUMNS)
    assert acq.usable_ids(tmp_path) == ["a"]
    path.write_text("id,status\nx,ok\n")
    with pytest.raises(ValueError, match="unexpected manifest header"):
        acq.Manifest.load(path)


def test_selection_and_argument_errors(tmp_path: Path) -> None:
    lists = plan_lists([A, B, E])
    with pytest.raises(ValueError, match="not in the WFLW-V lists"):
        acq.acquire_from_youtube(tmp_path, None, ids=["nope"], lists=lists)
    with pytest.raises(ValueError, match="not in split 'hard'"):
        acq.acquire_from_youtube(tmp_path, None, ids=[A], split="hard", lists=lists)
    with pytest.raises(ValueError, match="must contain"):
        acq.acquire_from_youtube(tmp_path, None, url_template="http://x/video.mp4", lists=lists)
    with pytest.raises(ValueError, match="workers"):
        acq.acquire_from_youtube(tmp_path, None, workers=0, lists=lists)
    assert acq._select_ids(lists, None, "easy", None) == [A, B]
    assert acq._select_ids(lists, None, "all", 2) == [A, B]
    assert acq.video_url("https://www.youtube.com/watch?v={id}", A) == f"https://www.youtube.com/watch?v={A}"


# --------------------------------------------------------------------------------------------- archives
ARCH = {  # id -> (video frames or None, window, landmark array)
    "good0000001": (20, (0, 19), fake_annotations(20, 1)[0]),
    "bad00000002": (18, (100, 119), fake_annotations(20, 2)[0]),
    "shape000003": (20, (0, 19), np.zeros((20, 68, 2), np.float32)),
    "nanlm000004": (20, (0, 19), np.full((20, 98, 2), np.nan, np.float32)),
    "extra000006": (20, (0, 19), fake_annotations(20, 6)[0]),
    "window00007": (20, (0, 24), fake_annotations(20, 7)[0]),  # consistent, but not the listed window
}


def build_archive(tmp: Path, kind: str) -> tuple[Path, dict[str, bytes]]:
    stage = tmp / "stage" / "WFLW_V"
    for sub in ("videos", "landmarks", "bboxes"):
        (stage / sub).mkdir(parents=True)
    videos = {}
    for vid, (n, _win, lm) in ARCH.items():
        make_video(stage / "videos" / f"{vid}.mp4", n)
        videos[vid] = (stage / "videos" / f"{vid}.mp4").read_bytes()
        np.save(stage / "landmarks" / f"{vid}.npy", lm)
        np.save(stage / "bboxes" / f"{vid}.npy", fake_annotations(len(lm), 0)[1])
    if kind == "zip":
        path = tmp / "wflw_v.zip"
        with zipfile.ZipFile(path, "w") as zf:
            for p in sorted(stage.rglob("*.*")):
                zf.write(p, p.relative_to(stage.parent).as_posix())
    else:
        path = tmp / "wflw_v.tar.gz"
        with tarfile.open(path, "w:gz") as tf:
            tf.add(stage, arcname="WFLW_V")
    return path, videos


@pytest.mark.parametrize("kind", ["zip-over-http", "tar.gz"])
def test_archive_path_validates_each_clip(server: Server, tmp_path: Path, kind: str) -> None:
    archive, videos = build_archive(tmp_path, "zip" if kind.startswith("zip") else "tar")
    source: str | Path = archive
    if kind == "zip-over-http":
        shutil.copy(archive, server.root / "wflw_v.zip")
        source = server.base + "/wflw_v.zip"
    listed = ["good0000001", "bad00000002", "shape000003", "nanlm000004", "missing0005", "window00007"]
    ranges = {v: ARCH[v][1] for v in listed if v in ARCH} | {"missing0005": (0, 9)}
    lists = lists_from_entries(listed[:3], listed[3:], ranges)
    out = tmp_path / "out"
    summary = acq.acquire_from_archive(out, source, lists=lists, workers=2, progress=False)

    rows = read_manifest(out)
    assert {k: r["status"] for k, r in rows.items()} == {
        "good0000001": "ok",
        "bad00000002": "invalid",
        "shape000003": "invalid",
        "nanlm000004": "invalid",
        "missing0005": "unavailable",
        "extra000006": "invalid",
        "window00007": "invalid",
    }
    assert summary.usable_ids == ["good0000001"]
    good = rows["good0000001"]
    assert (int(good["n_frames"]), int(good["width"]), int(good["height"])) == (20, W, H)
    assert good["sha256"] == hashlib.sha256(videos["good0000001"]).hexdigest()
    assert (out / "videos" / "good0000001.mp4").read_bytes() == videos["good0000001"]
    assert rows["bad00000002"]["reason"] == "videos/bad00000002.mp4: video has 18 frames but the annotations have 20"
    assert rows["bad00000002"]["n_frames"] == "18"
    assert rows["shape000003"]["reason"].startswith("landmarks/shape000003.npy: wrong landmark count: 68")
    assert "NaN" in rows["nanlm000004"]["reason"]
    assert rows["window00007"]["reason"] == "video and annotations have 20 frames, window [0, 24] needs 25"
    assert rows["missing0005"]["reason"] == "not in the archive"
    assert "not in the WFLW-V lists" in rows["extra000006"]["reason"]
    assert leftovers(out) == []
    if kind == "zip-over-http":
        assert server.hits["/wflw_v.zip"] == 1


def _zip_with(path: Path, name: str) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("WFLW_V/videos/ok.txt", b"fine")
        zf.writestr(name, b"evil")
    return path


@pytest.mark.parametrize("name", ["../evil.txt", "WFLW_V/../../evil.txt", "/tmp/evil_abs.txt", "C:/evil.txt"])
def test_zip_slip_is_rejected(tmp_path: Path, name: str) -> None:
    archive = _zip_with(tmp_path / "a.zip", name)
    dest = tmp_path / "sub" / "dest"
    with pytest.raises(ValueError, match="outside the target folder"):
        acq.safe_extract(archive, dest)
    assert list(dest.iterdir()) == []  # nothing was written, not even the harmless member
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "sub" / "evil.txt").exists()
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="outside the target folder"):
        acq.acquire_from_archive(out, archive, lists=plan_lists([A]), progress=False)
    assert leftovers(out) == []


def test_member_through_existing_symlink_is_rejected(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").symlink_to(outside, target_is_directory=True)
    archive = _zip_with(tmp_path / "a.zip", "link/evil.txt")
    with pytest.raises(ValueError, match="outside the target folder"):
        acq.safe_extract(archive, dest)
    assert list(outside.iterdir()) == []


def test_tar_links_and_traversal_are_rejected(tmp_path: Path) -> None:
    def tar_with(member: tarfile.TarInfo, data: bytes = b"") -> Path:
        path = tmp_path / f"t{len(list(tmp_path.iterdir()))}.tar"
        with tarfile.open(path, "w") as tf:
            member.size = len(data) if member.isfile() else 0
            tf.addfile(member, io.BytesIO(data) if member.isfile() else None)
        return path

    traversal = tarfile.TarInfo("../evil.txt")
    with pytest.raises(ValueError, match="outside the target folder"):
        acq.safe_extract(tar_with(traversal, b"x"), tmp_path / "d1")
    link = tarfile.TarInfo("videos/link.mp4")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(ValueError, match="link or special file"):
        acq.safe_extract(tar_with(link), tmp_path / "d2")
    not_archive = tmp_path / "plain.bin"
    not_archive.write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a zip or tar archive"):
        acq.safe_extract(not_archive, tmp_path / "d3")


def test_fetch_retries_server_errors_only(server: Server, tmp_path: Path) -> None:
    payload = (server.root / "annotations.zip").read_bytes()
    server.fail_503["/annotations.zip"] = 2
    got = acq.fetch(server.base + "/annotations.zip", tmp_path / "dl", retries=3, backoff_s=0.01)
    assert got.read_bytes() == payload and server.hits["/annotations.zip"] == 3
    with pytest.raises(ValueError, match="404"):
        acq.fetch(server.base + "/nothing.zip", tmp_path / "dl", retries=3, backoff_s=0.01)
    assert server.hits["/nothing.zip"] == 1
    server.fail_503["/annotations.zip"] = -1
    with pytest.raises(ConnectionError, match="2 attempt"):
        acq.fetch(server.base + "/annotations.zip", tmp_path / "dl2", retries=1, backoff_s=0.01)
    assert server.hits["/annotations.zip"] == 3 + 2
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["annotations.zip"]
    with pytest.raises(ValueError, match="no such file"):
        acq.fetch(tmp_path / "absent.zip", tmp_path / "dl")


def test_cli_youtube_and_strict_exit_codes(server: Server, tmp_path: Path) -> None:
    lists_dir = tmp_path / "lists"
    lists_dir.mkdir()
    (lists_dir / "easy_video_IDs.txt").write_text(f"{A}\n{D}\n")
    (lists_dir / "hard_video_IDs.txt").write_text(f"{B}\n")
    (lists_dir / "download_ranges.txt").write_text("".join(f"{v} {PLAN[v][1]} {PLAN[v][2]}\n" for v in (A, D, B)))
    out = tmp_path / "out"
    common = [
        "--out",
        str(out),
        "--lists-dir",
        str(lists_dir),
        "--url-template",
        server.base + "/{id}.mp4",
        "--retries",
        "0",
        "--backoff",
        "0",
        "--workers",
        "1",
        "--no-progress",
    ]
    runner = CliRunner()

    def cli(*args: str) -> int:
        return runner.invoke(app, ["data", "wflw-v", *common, *args]).exit_code

    assert cli(f"--ids={A}") == 0  # an id starting with '-'
    assert {k: r["status"] for k, r in read_manifest(out).items()} == {A: "ok"}
    assert cli("--strict", "--ids", f"{D},{B}") == 1  # D is missing
    assert {k: r["status"] for k, r in read_manifest(out).items()} == {A: "ok", D: "unavailable", B: "ok"}
    assert cli("--ids", "unknownid00") == 2
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text(f"{B}\n")
    assert cli("--strict", "--ids-file", str(ids_file)) == 0
    assert acq.usable_ids(out) == [A, B]
