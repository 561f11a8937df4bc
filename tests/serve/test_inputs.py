"""Settings, upload validation (from the bytes, never the name), box/landmark checks and the job path policy."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import fsspec
import numpy as np
import pytest

from serve.errors import ServiceError
from serve.inputs import check_boxes, check_landmarks, parse_array, probe_and_verify, sniff_container
from serve.jobs import check_source, expand_folder, fetch_to_file, resolve_under_root
from serve.settings import JobSettings, Limits, load_settings
from tests.serve.helpers import make_bad_videos, npy_bytes, write_clip


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    write_clip(d / "good.mp4", 0, n_frames=6)
    out = make_bad_videos(d, d / "good.mp4")
    out["good"] = d / "good.mp4"
    frames = np.random.default_rng(1).integers(0, 255, (4, 48, 64, 3), dtype=np.uint8)
    for name, fourcc in (("clip.avi", "MJPG"), ("clip.mkv", "XVID")):
        w = cv2.VideoWriter(os.fspath(d / name), cv2.VideoWriter_fourcc(*fourcc), 10.0, (64, 48))
        for f in frames:
            w.write(f)
        w.release()
        out[name] = d / name
    return out


def _raises(status: int, code: str, fragment: str, fn, *args) -> ServiceError:  # type: ignore[no-untyped-def]
    with pytest.raises(ServiceError) as info:
        fn(*args)
    assert (info.value.status, info.value.code) == (status, code), info.value
    assert fragment in info.value.detail, info.value.detail
    return info.value


def test_settings_reject_unknown_keys_and_resolve_paths(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("serve:\n  model: {checkpoint: models/m.pt}\n  jobs: {allowed_root: data}\n")
    s = load_settings(params, overrides={"batch": {"max_batch_size": 4}})
    assert s.model.checkpoint == str(tmp_path.resolve() / "models/m.pt")
    assert s.jobs.allowed_root == str(tmp_path.resolve() / "data")
    assert s.batch.max_batch_size == 4 and s.rwr.budget_nfe == 2
    params.write_text("serve:\n  batch: {max_batch: 4}\n")
    with pytest.raises(ValueError, match="max_batch"):
        load_settings(params)
    with pytest.raises(ValueError, match="mlflow_alias or mlflow_version"):
        load_settings(overrides={"model": {"mlflow_name": "ldeq-landmarks"}})


def test_container_is_sniffed_from_bytes_not_names(videos: dict[str, Path], tmp_path: Path) -> None:
    assert sniff_container(videos["good"], "g") == "mp4"
    assert sniff_container(videos["clip.avi"], "a") == "avi"
    assert sniff_container(videos["clip.mkv"], "m") == "matroska"
    renamed = tmp_path / "really_an_mp4.avi"  # the extension lies; the bytes decide
    renamed.write_bytes(videos["good"].read_bytes())
    assert sniff_container(renamed, "r") == "mp4"
    _raises(415, "unsupported_container", "look like text", sniff_container, videos["text"], "text.mp4")
    _raises(422, "invalid_video", "truncated: box 'mdat'", sniff_container, videos["truncated"], "truncated.mp4")
    _raises(422, "invalid_video", "index lists 0 frames", sniff_container, videos["zero"], "zero.mp4")


def test_probe_and_verify_limits(videos: dict[str, Path]) -> None:
    facts = probe_and_verify(videos["good"], "good.mp4", Limits())
    assert (facts.container, facts.codec, facts.n_frames, facts.width, facts.height) == ("mp4", "fmp4", 6, 128, 96)
    assert probe_and_verify(videos["clip.avi"], "a", Limits()).codec == "mjpg"
    _raises(
        422,
        "invalid_video",
        "corrupt.mp4: no frame could be decoded",
        probe_and_verify,
        videos["corrupt"],
        "corrupt.mp4",
        Limits(),
    )
    _raises(
        413,
        "too_many_frames",
        "6 frames exceed the limit of 5",
        probe_and_verify,
        videos["good"],
        "g",
        Limits(max_frames=5),
    )
    _raises(
        413,
        "resolution_too_large",
        "128x96 exceeds 100x100",
        probe_and_verify,
        videos["good"],
        "g",
        Limits(max_width=100, max_height=100),
    )
    _raises(
        415, "unsupported_codec", "'mjpg'", probe_and_verify, videos["clip.avi"], "a", Limits(accepted_codecs=("h264",))
    )
    _raises(
        415,
        "unsupported_container",
        "'avi'",
        probe_and_verify,
        videos["clip.avi"],
        "a",
        Limits(accepted_containers=("mp4",)),
    )


def test_boxes_and_landmarks_checks() -> None:
    good = np.tile([10.0, 10.0, 50.0, 60.0], (3, 1))
    np.testing.assert_array_equal(check_boxes(np.c_[good, np.ones(3)], "b", 3, (64, 64)), good)
    _raises(422, "invalid_boxes", "2 boxes for a video of 3 frames", check_boxes, good[:2], "b.npy", 3, (64, 64))
    nan = good.copy()
    nan[1, 2] = np.nan
    _raises(422, "invalid_boxes", "NaN or inf box in frame 1", check_boxes, nan, "b.npy", 3, (64, 64))
    out = good.copy()
    out[2] = [100, 100, 120, 120]
    _raises(422, "invalid_boxes", "frame 2", check_boxes, out, "b.npy", 3, (64, 64))
    inverted = good.copy()
    inverted[0] = [50, 10, 10, 60]
    _raises(422, "invalid_boxes", "inverted box in frame 0", check_boxes, inverted, "b.npy", 3, (64, 64))
    _raises(422, "invalid_landmarks", "expected shape (3, 98, 2)", check_landmarks, np.zeros((3, 68, 2)), "g", 3, 98)
    assert check_landmarks(np.ones((3, 98, 2)), "g", 3, 98).shape == (3, 98, 2)


def test_parse_array_npy_json_and_rejections() -> None:
    arr = np.arange(8.0).reshape(2, 4)
    np.testing.assert_array_equal(parse_array(npy_bytes(arr), "a.npy", "boxes"), arr)
    np.testing.assert_array_equal(parse_array(json.dumps(arr.tolist()).encode(), "a.json", "boxes"), arr)
    _raises(422, "invalid_boxes", "neither a .npy file nor a JSON", parse_array, b"\x00\x01garbage", "x", "boxes")
    _raises(
        422,
        "invalid_landmarks",
        "expected real numbers",
        parse_array,
        npy_bytes(np.array(["a", "b"])),
        "s",
        "landmarks",
    )


def test_path_policy_rejects_traversal_and_escapes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "clips").mkdir(parents=True)
    (root / "clips" / "a.mp4").write_bytes(b"x")
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"y")
    (root / "clips" / "link.mp4").symlink_to(outside)
    (root / "clips" / "inner_link.mp4").symlink_to(root / "clips" / "a.mp4")
    assert resolve_under_root(root, "clips/a.mp4", "p") == (root / "clips" / "a.mp4").resolve()
    assert resolve_under_root(root, str(root / "clips" / "a.mp4"), "p") == (root / "clips" / "a.mp4").resolve()
    assert resolve_under_root(root, "clips/inner_link.mp4", "p") == (root / "clips" / "a.mp4").resolve()
    _raises(400, "path_traversal", "'..' is not allowed", resolve_under_root, root, "clips/../../secret.mp4", "p")
    _raises(400, "path_traversal", "'..'", resolve_under_root, root, "..\\secret.mp4", "p")
    _raises(403, "path_outside_root", "outside the allowed root", resolve_under_root, root, str(outside), "p")
    _raises(403, "path_outside_root", "symlinks are followed", resolve_under_root, root, "clips/link.mp4", "p")
    cfg = JobSettings(allowed_root=str(root))
    assert check_source(f"file://{root}/clips/a.mp4", cfg, "p").kind == "local"
    _raises(403, "uri_not_allowed", "'s3' is not enabled", check_source, "s3://bucket/a.mp4", cfg, "videos[0].path")
    _raises(403, "jobs_disabled", "allowed_root", check_source, "a.mp4", JobSettings(), "p")


def test_fsspec_memory_uris_and_folder_listing(videos: dict[str, Path], tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    data = videos["good"].read_bytes()
    fs.pipe("/bucket/set/videos/a.mp4", data)
    fs.pipe("/bucket/set/videos/b.mp4", data)
    fs.pipe("/bucket/set/bboxes/a.npy", npy_bytes(np.zeros((6, 4))))
    fs.pipe("/bucket/set/videos/.hidden.mp4", b"tmp")
    cfg = JobSettings(uri_protocols=("memory",), uri_prefixes=("memory://bucket/",))
    items = expand_folder("memory://bucket/set", cfg)
    assert [(i.id, i.path, i.boxes, i.landmarks) for i in items] == [
        ("a", "memory://bucket/set/videos/a.mp4", "memory://bucket/set/bboxes/a.npy", None),
        ("b", "memory://bucket/set/videos/b.mp4", None, None),
    ]
    local = fetch_to_file(check_source("memory://bucket/set/videos/a.mp4", cfg, "p"), cfg, str(tmp_path), 10**7)
    assert local.read_bytes() == data
    _raises(
        413,
        "payload_too_large",
        "larger than 100 bytes",
        fetch_to_file,
        check_source("memory://bucket/set/videos/a.mp4", cfg, "p"),
        cfg,
        str(tmp_path),
        100,
    )
    _raises(403, "uri_not_allowed", "outside the allowed URI prefixes", check_source, "memory://other/a.mp4", cfg, "p")
    _raises(
        404,
        "not_found",
        "object not found",
        fetch_to_file,
        check_source("memory://bucket/none.mp4", cfg, "p"),
        cfg,
        str(tmp_path),
        10**7,
    )
