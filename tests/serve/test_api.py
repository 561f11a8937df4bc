"""The HTTP API over real Ray Serve on 127.0.0.1: happy paths, metrics, the real clip, rejections, exactness."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ldeq_core.filters import ema_filter
from ldeq_core.metrics import video_nme, video_nmf
from ldeq_core.rwr import box_iou
from ldeq_shared.video_io import write_video
from tests.serve.conftest import Service
from tests.serve.helpers import HAMILTON, make_bad_videos, npy_bytes, write_clip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("media")
    out: dict[str, Any] = {}
    for name, seed, n in (("a", 1, 10), ("b", 2, 10), ("c", 3, 7), ("d", 4, 13)):
        gt, boxes = write_clip(d / f"{name}.mp4", seed, n)
        out[name] = {"path": d / f"{name}.mp4", "gt": gt, "boxes": boxes}
    out["bad"] = make_bad_videos(d, d / "a.mp4")
    long = np.zeros((401, 32, 32, 3), np.uint8)
    write_video(d / "long.mp4", long, 10.0)
    out["long"] = d / "long.mp4"
    out["big"] = d / "big.mp4"
    out["big"].write_bytes(out["a"]["path"].read_bytes() + b"\0" * (3 * 1024 * 1024))
    return out


def _video(path: Path, name: str | None = None) -> tuple[str, tuple[str, bytes, str]]:
    return ("videos", (name or path.name, path.read_bytes(), "video/mp4"))


def _npy(field: str, name: str, arr: np.ndarray) -> tuple[str, tuple[str, bytes, str]]:
    return (field, (name, npy_bytes(arr), "application/octet-stream"))


def _ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    return r.json()


def test_health_model_and_openapi(service: Service) -> None:
    with service.client(auth=False) as c:
        assert c.get("/healthz").json()["status"] == "ok"  # public
        schema = c.get("/openapi.json").json()
    assert {"/v1/score", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/model", "/healthz"} <= set(schema["paths"])
    body = schema["paths"]["/v1/score"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"videos", "boxes", "landmarks", "mode", "budget_nfe", "filter", "output"} <= set(body["properties"])
    with service.client() as c:
        info = _ok(c.get("/v1/model"))
    assert info["sha256"] == hashlib.sha256(service.checkpoint.read_bytes()).hexdigest()
    assert info["source"] == {"kind": "checkpoint", "path": str(service.checkpoint)}
    assert info["metrics"] == {"val_nme_inter_ocular": 12.5} and info["trained"] is True
    assert info["crop_size"] == 64 and info["config"]["image_size"] == 64 and info["n_landmarks"] == 98
    # the replica's inference path: the CPU fallback (no compile, no graphs, so nothing to warm up)
    inference = info["inference"]
    assert (inference["device"], inference["precision"], inference["compile"], inference["cuda_graphs"]) == (
        "cpu",
        "fp32",
        False,
        False,
    )
    assert inference["warmup"]["buckets"] == [] and inference["warmup"]["seconds"] >= 0


def test_score_with_boxes_and_ground_truth(service: Service, media: dict[str, Any]) -> None:
    a, b = media["a"], media["b"]
    files = [
        _video(a["path"]), _video(b["path"]),
        _npy("boxes", "b.npy", b["boxes"]), _npy("boxes", "a.npy", a["boxes"]),  # matched by file stem
        _npy("landmarks", "a.npy", a["gt"]), _npy("landmarks", "b.npy", b["gt"]),
    ]  # fmt: skip
    with service.client() as c:
        out = _ok(c.post("/v1/score", files=files))
    assert [v["filename"] for v in out["videos"]] == ["a.mp4", "b.mp4"]
    for v, clip in zip(out["videos"], (a, b), strict=True):
        lm = np.asarray(v["landmarks"])
        assert lm.shape == (10, 98, 2) and v["n_frames"] == 10 and (v["width"], v["height"]) == (128, 96)
        np.testing.assert_allclose(v["boxes"], clip["boxes"])
        assert v["box_source"] == ["given"] * 10
        assert v["nfe"] == [6] + [2] * 9 and v["full_solve"] == [True] + [False] * 9
        assert v["mean_batch_size"] == 2.0  # the two videos of the request shared every model call
        m = v["metrics"]
        assert m["nme"]["inter_ocular"] == pytest.approx(video_nme(lm, clip["gt"], "inter_ocular"), rel=1e-12)
        assert m["nme"]["face"] == pytest.approx(video_nme(lm, clip["gt"], "face"), rel=1e-12)
        assert m["nmf"]["nmj"] == pytest.approx(video_nmf(lm, clip["gt"]), rel=1e-12)
        assert m["nmf"]["per_coordinate"] == pytest.approx(m["nmf"]["nmj"] / np.sqrt(2), rel=1e-12)
        # Independent formula for the face-normalised NME: sqrt(w h) of each frame's GT landmark box.
        ext = clip["gt"].max(1) - clip["gt"].min(1)
        by_hand = 100 * np.mean(np.linalg.norm(lm - clip["gt"], axis=-1).mean(1) / np.sqrt(ext[:, 0] * ext[:, 1]))
        assert m["nme"]["face"] == pytest.approx(by_hand, rel=1e-9)
    assert out["model"]["sha256"] == hashlib.sha256(service.checkpoint.read_bytes()).hexdigest()
    assert out["rwr"] == {"mode": "rwr", "budget_nfe": 2, "crop_size": 64}


def test_json_boxes_npz_output_and_determinism(service: Service, media: dict[str, Any]) -> None:
    c_ = media["c"]
    boxes_json = json.dumps({"c.mp4": c_["boxes"].tolist()})
    with service.client() as c:
        js = _ok(c.post("/v1/score", files=[_video(c_["path"])], data={"boxes": boxes_json}))
        r = c.post("/v1/score", files=[_video(c_["path"]), _npy("boxes", "x.npy", c_["boxes"])], data={"output": "npz"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-npz"
    npz = np.load(io.BytesIO(r.content), allow_pickle=False)
    meta = json.loads(str(npz["meta"]))
    assert meta["videos"][0]["n_frames"] == 7 and "landmarks" not in meta["videos"][0]
    # Scored alone twice (JSON boxes, then .npy boxes matched by order): identical results.
    np.testing.assert_array_equal(npz["video0_landmarks"], np.asarray(js["videos"][0]["landmarks"]))
    np.testing.assert_array_equal(npz["video0_nfe"], js["videos"][0]["nfe"])
    np.testing.assert_allclose(npz["video0_boxes"], c_["boxes"])
    assert npz["video0_box_source"].tolist() == ["given"] * 7


def test_filter_and_mode_options(service: Service, media: dict[str, Any]) -> None:
    a = media["a"]
    files = [_video(a["path"]), _npy("boxes", "a.npy", a["boxes"])]
    with service.client() as c:
        raw = _ok(c.post("/v1/score", files=files))["videos"][0]
        ema = _ok(c.post("/v1/score", files=files, data={"filter": "ema", "filter_params": '{"alpha": 0.4}'}))
        per_frame = _ok(c.post("/v1/score", files=files, data={"mode": "per_frame"}))["videos"][0]
        budget = _ok(c.post("/v1/score", files=files, data={"budget_nfe": "4"}))["videos"][0]
    # The service's streaming EMA equals the offline IIR filter (scipy lfilter) of the unfiltered landmarks.
    np.testing.assert_allclose(ema["videos"][0]["landmarks"], ema_filter(np.asarray(raw["landmarks"]), 0.4), atol=1e-9)
    assert ema["options"]["filter"] == "ema"
    assert per_frame["nfe"] == [6] * 10 and all(per_frame["full_solve"])
    assert budget["nfe"] == [6] + [4] * 9


def test_real_clip_without_boxes_tracks_the_largest_face_and_every_face(service: Service, shared_data: Path) -> None:
    path = shared_data / HAMILTON
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    with service.client() as c:
        v = _ok(c.post("/v1/score", files=[_video(path)]))["videos"][0]
    assert v["n_frames"] == 275 and (v["width"], v["height"]) == (640, 360) and v["codec"] == "h264"
    boxes = np.asarray(v["boxes"])
    assert v["box_source"][0] == "detected" and set(v["box_source"]) <= {"detected", "tracked", "held", "backfilled"}
    # Shot 1 (frames 0-19): the largest face (the performer, right half) is chosen and followed.
    centres = (boxes[:20, :2] + boxes[:20, 2:]) / 2
    assert (centres[:, 0] > 400).all(), centres[:, 0]
    assert min(box_iou(boxes[0], b) for b in boxes[:20]) > 0.3
    assert v["full_solve"][20] is True  # the shot cut at frame 20 resets the stream
    # Soft-argmax landmarks lie in the model's crop of each frame: the square of side 1.2 x the longer box side
    # (the service's default rwr.extra_scale) centred on the box, within 1.5 px for the rounding of the box corners.
    lm = np.asarray(v["landmarks"])
    assert lm.shape == (275, 98, 2)
    centre = (boxes[:, None, :2] + boxes[:, None, 2:]) / 2
    half_side = 0.6 * (boxes[:, 2:] - boxes[:, :2]).max(axis=1)
    outside = np.abs(lm - centre).max(axis=(1, 2)) - half_side
    assert (outside <= 1.5).all(), (np.flatnonzero(outside > 1.5)[:5], outside.max())
    # Every face (serve/faces.py): shot 1 shows the singer and the small pianist, each its own track with its
    # own frames, boxes and landmarks; the singer's track overlaps the primary (largest-face) track above.
    faces = v["faces"]
    assert v["n_faces"] == len(faces) >= 2 and len({f["face_id"] for f in faces}) == len(faces)
    in_shot1 = [f for f in faces if sum(t < 20 for t in f["frames"]) >= 18]
    assert len(in_shot1) >= 2, [(f["face_id"], f["frames"][:3], f["n_frames"]) for f in faces]
    xs = sorted(float(np.mean(np.asarray(f["boxes"])[:, [0, 2]])) for f in in_shot1)
    assert xs[0] < 200 and xs[-1] > 400  # the pianist on the left, the singer on the right
    for f in faces:
        assert np.asarray(f["landmarks"]).shape == (f["n_frames"], 98, 2) and len(f["nfe"]) == f["n_frames"]
        assert f["frames"] == sorted(f["frames"]) and f["frames"][-1] < 275
    singer = max(in_shot1, key=lambda f: np.mean(np.asarray(f["boxes"])[:, 0]))
    first = [i for i, t in enumerate(singer["frames"]) if t < 20]
    ious = [box_iou(np.asarray(singer["boxes"][i]), boxes[singer["frames"][i]]) for i in first]
    assert np.median(ious) > 0.3


def _job(c: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return c.post("/v1/jobs", json=body)


def _bad_cases(
    media: dict[str, Any], service: Service
) -> list[tuple[str, Callable[[httpx.Client], httpx.Response], int, str, str]]:
    a = media["a"]
    bad = media["bad"]
    ok_box = _npy("boxes", "a.npy", a["boxes"])
    nan = a["boxes"].copy()
    nan[3, 1] = np.nan
    outside = a["boxes"].copy()
    outside[5] = [500.0, 500.0, 600.0, 600.0]
    secret = service.root.parent / "secret.mp4"
    secret.write_bytes(a["path"].read_bytes())
    link = service.root / "escape.mp4"
    if not link.exists():
        link.symlink_to(secret)
    post = lambda files, data=None: lambda c: c.post("/v1/score", files=files, data=data)  # noqa: E731
    return [
        ("corrupt", post([_video(bad["corrupt"])]), 422, "invalid_video", "'corrupt.mp4': no frame could be decoded"),
        (
            "truncated",
            post([_video(bad["truncated"])]),
            422,
            "invalid_video",
            "'truncated.mp4': mp4 container is damaged: truncated",
        ),
        (
            "zero_frames",
            post([_video(bad["zero"])]),
            422,
            "invalid_video",
            "'zero.mp4': mp4 container is damaged: its index lists 0 frames",
        ),
        ("text_as_mp4", post([_video(bad["text"])]), 415, "unsupported_container", "'text.mp4': not a video"),
        (
            "boxes_length",
            post([_video(a["path"]), _npy("boxes", "a.npy", a["boxes"][:9])]),
            422,
            "invalid_boxes",
            "boxes a.npy for videos[0] 'a.mp4': 9 boxes for a video of 10 frames",
        ),
        (
            "boxes_nan",
            post([_video(a["path"]), _npy("boxes", "a.npy", nan)]),
            422,
            "invalid_boxes",
            "NaN or inf box in frame 3",
        ),
        (
            "boxes_outside",
            post([_video(a["path"]), _npy("boxes", "a.npy", outside)]),
            422,
            "invalid_boxes",
            "box of frame 5 [500.0, 500.0, 600.0, 600.0] lies outside the 128x96 frame",
        ),
        (
            "gt_shape",
            post([_video(a["path"]), ok_box, _npy("landmarks", "a.npy", a["gt"][:, :68])]),
            422,
            "invalid_landmarks",
            "landmarks a.npy for videos[0] 'a.mp4': expected shape (10, 98, 2)",
        ),
        (
            "too_many_box_parts",
            post([_video(a["path"]), ok_box, _npy("boxes", "z.npy", a["boxes"])]),
            422,
            "invalid_boxes",
            "2 parts for 1 videos",
        ),
        ("oversized", post([_video(media["big"])]), 413, "payload_too_large", "exceed the limit of 2097152 bytes"),
        ("too_many_frames", post([_video(media["long"])]), 413, "too_many_frames", "'long.mp4': 401 frames exceed"),
        ("unknown_option", post([_video(a["path"])], {"foo": "1"}), 400, "unknown_option", "'foo'"),
        ("bad_budget", post([_video(a["path"])], {"budget_nfe": "0"}), 400, "invalid_option", "budget_nfe"),
        ("bad_mode", post([_video(a["path"])], {"mode": "fast"}), 400, "invalid_option", "mode"),
        (
            "bad_filter_params",
            post([_video(a["path"])], {"filter": "ema", "filter_params": '{"beta": 1}'}),
            400,
            "invalid_option",
            "filter_params for 'ema'",
        ),
        ("no_videos", post([ok_box]), 400, "missing_field", "videos"),
        ("too_many_videos", post([_video(a["path"])] * 17), 413, "too_many_videos", "17 files exceed 16"),
        (
            "job_traversal",
            lambda c: _job(c, {"videos": [{"path": "../secret.mp4"}]}),
            400,
            "path_traversal",
            "videos[0].path: '..' is not allowed",
        ),
        (
            "job_absolute_escape",
            lambda c: _job(c, {"videos": [{"path": str(secret)}]}),
            403,
            "path_outside_root",
            "videos[0].path",
        ),
        (
            "job_symlink_escape",
            lambda c: _job(c, {"videos": [{"path": "escape.mp4"}]}),
            403,
            "path_outside_root",
            "'escape.mp4' resolves outside the allowed root",
        ),
        ("job_unknown_field", lambda c: _job(c, {"videos": [], "priority": 1}), 400, "unknown_option", "'priority'"),
        (
            "job_unknown_option",
            lambda c: _job(c, {"videos": [{"path": "x.mp4"}], "options": {"speed": 2}}),
            400,
            "unknown_option",
            "'speed'",
        ),
        (
            "job_uri_disabled",
            lambda c: _job(c, {"videos": [{"path": "s3://bucket/a.mp4"}]}),
            403,
            "uri_not_allowed",
            "'s3' is not enabled",
        ),
        ("job_not_found", lambda c: c.get("/v1/jobs/" + "0" * 32), 404, "job_not_found", "no such job"),
        ("no_route", lambda c: c.get("/v2/nothing"), 404, "not_found", "Not Found"),
    ]


def test_bad_inputs_are_4xx_with_json_errors(service: Service, media: dict[str, Any]) -> None:
    cases = _bad_cases(media, service)
    assert len(cases) >= 12
    failures = []
    with service.client() as c:
        for name, call, status, code, fragment in cases:
            r = call(c)
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            if r.status_code != status or body.get("error") != code or fragment not in body.get("detail", ""):
                failures.append(f"{name}: {r.status_code} {r.text[:300]}")
    assert not failures, "\n".join(failures)


def test_auth_is_required_when_configured(service: Service, media: dict[str, Any]) -> None:
    files = [_video(media["a"]["path"])]
    with service.client(auth=False) as c:
        missing = c.post("/v1/score", files=files)
        wrong = c.post("/v1/score", files=files, headers={"Authorization": "Bearer nope"})
        model = c.get("/v1/model")
        health = c.get("/healthz")
    assert (missing.status_code, missing.json()["error"]) == (401, "unauthorized")
    assert "missing bearer token" in missing.json()["detail"] and missing.headers["www-authenticate"] == "Bearer"
    assert (wrong.status_code, wrong.json()["detail"]) == (401, "Authorization: invalid token")
    assert model.status_code == 401 and health.status_code == 200


def test_concurrent_videos_match_alone(service: Service, media: dict[str, Any]) -> None:
    names = ["a", "b", "c", "d"]

    def score(name: str) -> dict[str, Any]:
        clip = media[name]
        with service.client() as c:
            return _ok(c.post("/v1/score", files=[_video(clip["path"]), _npy("boxes", f"{name}.npy", clip["boxes"])]))

    alone = [score(n)["videos"][0] for n in names]
    with ThreadPoolExecutor(len(names)) as pool:
        together = [r["videos"][0] for r in pool.map(score, names)]
    worst = 0.0
    for a, b in zip(alone, together, strict=True):
        assert a["mean_batch_size"] == 1.0
        assert a["nfe"] == b["nfe"] and a["full_solve"] == b["full_solve"]
        worst = max(worst, float(np.abs(np.asarray(a["landmarks"]) - np.asarray(b["landmarks"])).max()))
    print(
        f"\nconcurrent vs alone over HTTP: max |diff| = {worst:.2e} px; mean batch sizes "
        f"{[round(t['mean_batch_size'], 2) for t in together]}"
    )
    assert max(t["mean_batch_size"] for t in together) > 1.0  # they really shared model calls
    assert worst < 1e-3
