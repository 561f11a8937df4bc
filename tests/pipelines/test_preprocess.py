"""The preprocess stage: crops and landmarks against independent recomputation, bad items, determinism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ldeq_core.geometry import apply_affine, box_to_affine, crop_face
from ldeq_shared.errors import DataError
from ldeq_shared.prepared import load_prepared
from ldeq_shared.video_io import read_frames
from pipelines.formats.wflw import scan_wflw
from pipelines.prepare import prepare
from pipelines.preprocess import (
    build_tasks,
    expand_box,
    preprocess_settings,
    process_still,
    run_preprocess,
    run_task,
)
from pipelines.shards import decode_batch, decode_image, iter_video_sequences, read_split_table
from tests.pipelines.data_helpers import tiny_params


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """A tiny prepared synthetic set (16 + 4 stills, 3 videos x 10 frames), then one still and one video broken."""
    base = tmp_path_factory.mktemp("pre")
    params = tiny_params(base / "raw", base / "shards", n_videos=3)
    prepare(params, base_dir=base, progress=False)
    txt = base / "raw" / "synthetic" / "wflw" / "train.txt"
    lines = txt.read_text().splitlines()
    parts = lines[3].split()
    parts[7] = "nan"  # synth_000003.png: NaN landmark after prepare listed it
    lines[3] = " ".join(parts)
    txt.write_text("\n".join(lines) + "\n")
    video = base / "raw" / "synthetic" / "wflw_v" / "videos" / "synth_0001.mp4"
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])  # truncated download
    return base / "raw"


@pytest.fixture(scope="module")
def shards(raw, ray_local) -> tuple[Path, dict, dict[str, str]]:
    """Preprocess twice into the same folder; return (folder, second report, sha256 of the first run's files)."""
    cfg = preprocess_settings(tiny_params(raw, raw.parent / "shards"))
    out = raw.parent / "shards"
    run_preprocess(raw, out, cfg)
    first = {p.relative_to(out).as_posix(): _sha(p) for p in sorted(out.rglob("*.parquet"))}
    report = run_preprocess(raw, out, cfg)
    return out, report, first


@pytest.mark.slow
def test_report_counts_and_bad_items(shards) -> None:
    out, report, _ = shards
    assert {k: (v["kind"], v["rows"], v["sources"]) for k, v in report["splits"].items()} == {
        "test": ("stills", 4, 4),
        "train": ("stills", 15, 15),
        "video_easy": ("video", 10, 1),
        "video_hard": ("video", 10, 1),
    }
    assert [len(v["files"]) for v in report["splits"].values()] == [1, 2, 1, 1]  # rows_per_shard 8
    bad = {(b["stage"], b["split"], b["item"]): b["reason"] for b in report["bad_items"]}
    assert set(bad) == {("preprocess", "train", "synth_000003.png"), ("preprocess", "video_easy", "synth_0001")}
    assert "NaN" in bad[("preprocess", "train", "synth_000003.png")]
    assert "video" in bad[("preprocess", "video_easy", "synth_0001")]
    assert report["n_bad_items"] == 2 and report["rows"] == 39 and report["rows_per_second"] > 0
    assert json.loads((out / "report.json").read_text())["splits"] == report["splits"]


@pytest.mark.slow
def test_output_is_deterministic_and_replaced_atomically(shards) -> None:
    out, report, first = shards
    second = {p.relative_to(out).as_posix(): _sha(p) for p in sorted(out.rglob("*.parquet"))}
    assert second == first and len(first) == 5
    assert [f["sha256"] for f in report["splits"]["train"]["files"]] == [
        first["train/part-00000.parquet"],
        first["train/part-00001.parquet"],
    ]
    assert not list(out.parent.glob(".tmp-*"))
    ids = read_split_table(out, "train", ["source_id"]).column("source_id").to_pylist()
    assert ids == sorted(ids) and "synth_000003.png" not in ids


@pytest.mark.slow
def test_still_rows_match_their_sources(shards, raw) -> None:
    out, _, _ = shards
    rows = decode_batch(read_split_table(out, "train"))
    good, _ = scan_wflw(raw / "synthetic" / "wflw", "train")
    by_name = {g.relpath: g for g in good}
    assert len(rows["source_id"]) == len(by_name) == 15
    for i, sid in enumerate(rows["source_id"]):
        item = by_name[sid]
        np.testing.assert_array_equal(rows["image"][i], item.load_rgb())  # PNG: lossless, identity crop
        np.testing.assert_array_equal(rows["landmarks"][i], item.landmarks.astype(np.float32))
        np.testing.assert_array_equal(rows["affine"][i], [[1, 0, 0], [0, 1, 0]])
        np.testing.assert_array_equal(rows["box"][i], [0, 0, 256, 256])
    assert set(rows["frame_index"].tolist()) == {-1} and set(rows["n_landmarks"].tolist()) == {98}


@pytest.mark.slow
def test_video_rows_match_crop_face_of_the_decoded_frames(shards, raw) -> None:
    out, _, _ = shards
    vroot = raw / "synthetic" / "wflw_v"
    seqs = {s.source_id: s for split in ("video_easy", "video_hard") for s in iter_video_sequences(out, split)}
    assert sorted(seqs) == ["synth_0000", "synth_0002"]
    for vid, seq in seqs.items():
        frames = read_frames(vroot / "videos" / f"{vid}.mp4")  # BGR, as crop_face expects
        boxes = np.load(vroot / "bboxes" / f"{vid}.npy")
        lms = np.load(vroot / "landmarks" / f"{vid}.npy")
        assert seq.frame_indices.tolist() == list(range(10)) and len(frames) == 10
        for t in range(10):
            crop, affine = crop_face(frames[t], boxes[t])
            np.testing.assert_array_equal(seq.frames[t], crop)
            np.testing.assert_array_equal(seq.affines[t], box_to_affine(boxes[t]))
            np.testing.assert_array_equal(seq.landmarks[t], apply_affine(affine, lms[t]).astype(np.float32))
            np.testing.assert_array_equal(seq.boxes[t], boxes[t].astype(np.float64))
    # the affine maps frame landmarks into the crop: x' = s x + tx with s = 256 / (1.2 * max side)
    b = np.load(vroot / "bboxes" / "synth_0000.npy")[0]
    x1, y1, x2, y2 = (int(v + 0.5) for v in b)
    s = 256 / (1.2 * max(x2 - x1, y2 - y1))
    assert seqs["synth_0000"].affines[0][0, 0] == pytest.approx(s, rel=1e-12)


def test_process_still_box_mode_crops_around_the_landmark_box(tmp_path) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (180, 240, 3), dtype=np.uint8)
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), img)
    lm = rng.uniform([60, 40], [170, 150], (68, 2))
    box = expand_box(np.concatenate([lm.min(0), lm.max(0)]), 1.1)
    spec = {
        "path": str(path),
        "landmarks": lm.tolist(),
        "box": box.tolist(),
        "source_id": "afw/1_1",
        "split": "train",
        "dataset": "300w",
    }
    row = process_still(spec, "png", 68)
    crop, affine = crop_face(img, box)
    np.testing.assert_array_equal(decode_image(row["image"]), crop)
    np.testing.assert_array_equal(
        np.float32(row["landmarks"]).reshape(68, 2), apply_affine(affine, lm).astype(np.float32)
    )
    assert row["affine"] == affine.reshape(-1).tolist() and row["frame_index"] == -1
    spec_nan = {**spec, "landmarks": np.where(np.arange(136).reshape(68, 2) == 5, np.nan, lm).tolist()}
    with pytest.raises(DataError, match="NaN"):
        process_still(spec_nan, "png", 68)
    with pytest.raises(DataError, match=r"\(98, 2\)"):
        process_still(spec, "png", 98)
    bad = run_task({"kind": "stills", "codec": "png", "n_landmarks": 68, "items": [spec_nan, spec]})
    assert json.loads(bad[0]["_bad"])["item"] == "afw/1_1" and bad[1]["_bad"] is None


def test_expand_box_and_settings() -> None:
    np.testing.assert_allclose(expand_box(np.array([10.0, 20.0, 30.0, 60.0]), 1.5), [5.0, 10.0, 35.0, 70.0])
    with pytest.raises(ValueError, match="image_codec"):
        preprocess_settings({"preprocess": {"image_codec": "webp"}})
    with pytest.raises(ValueError, match="unknown key"):
        preprocess_settings({"preprocess": {"rows_per_shards": 3}})
    for bad in (0, 101, 90.5, True):
        with pytest.raises(ValueError, match="jpeg_quality"):
            preprocess_settings({"preprocess": {"jpeg_quality": bad}})


def test_build_tasks_sorts_and_chunks_by_split(raw) -> None:
    cfg = preprocess_settings({"preprocess": {"stills_per_task": 6}})
    tasks, bad = build_tasks(load_prepared(raw), cfg)
    shape = [(t["kind"], t["items"][0]["split"], len(t["items"])) for t in tasks]
    assert shape == [
        ("stills", "test", 4),
        ("stills", "train", 6),
        ("stills", "train", 6),
        ("stills", "train", 3),
        ("video", "video_easy", 1),
        ("video", "video_easy", 1),
        ("video", "video_hard", 1),
    ]
    assert [b["item"] for b in bad] == ["synth_000003.png"]  # the NaN line, found re-reading the annotations


def test_precropped_stills_pass_through_when_already_in_the_shard_codec(tmp_path) -> None:
    img = np.random.default_rng(1).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    path = tmp_path / "a.jpg"
    cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    lm = np.full((98, 2), 100.0)
    spec = {
        "path": str(path),
        "landmarks": lm.tolist(),
        "box": None,
        "source_id": "a.jpg",
        "split": "test",
        "dataset": "wflw",
    }
    assert process_still(spec, "jpeg", 98)["image"] == path.read_bytes()  # no second JPEG generation
    as_png = process_still(spec, "png", 98)
    np.testing.assert_array_equal(decode_image(as_png["image"]), cv2.imread(str(path))[..., ::-1])
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), img[:100])
    with pytest.raises(DataError, match="256x256"):
        process_still({**spec, "path": str(small)}, "png", 98)
