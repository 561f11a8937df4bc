"""The sequential runner: grouping, and frame-synchronous group runs equal to ldeq_core's ``track_videos``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ldeq_core.rwr import track_videos
from ldeq_shared.video_io import read_frames
from pipelines.evaluate.methods import MethodSettings, build_methods, trackers
from pipelines.evaluate.runner import (
    VideoRef,
    decode_video,
    evaluate_sequential,
    make_groups,
    make_refs,
    model_from_bytes,
    model_to_bytes,
    run_group,
    torch_threads,
)
from tests.pipelines.eval_helpers import tiny_model, write_videos

SPECS = [("v0", 5, False), ("v1", 3, True), ("v2", 5, True)]


@pytest.fixture(scope="module")
def video_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    write_videos(root, SPECS)
    return root


def test_make_groups_sorts_by_length_then_key() -> None:
    refs = [VideoRef(f"d/{k}", "d", k, "s", "/x", n) for k, n in [("a", 3), ("b", 5), ("c", 5), ("d", 4), ("e", 3)]]
    groups = make_groups(refs, 2)
    assert [[r.video_id for r in g] for g in groups] == [["b", "c"], ["d", "a"], ["e"]]
    with pytest.raises(ValueError, match="group_size"):
        make_groups(refs, 0)


def test_make_refs_counts_frames_and_rejects_duplicates(video_root: Path) -> None:
    refs = make_refs([("syn", str(video_root), {"easy": ["v0"], "hard": ["v1", "v2"]})])
    assert [(r.key, r.split, r.n_frames) for r in refs] == [
        ("syn/v0", "easy", 5),
        ("syn/v1", "hard", 3),
        ("syn/v2", "hard", 5),
    ]
    with pytest.raises(ValueError, match="twice"):
        make_refs([("syn", str(video_root), {"easy": ["v0"], "hard": ["v0"]})])


def test_run_group_equals_core_track_videos(video_root: Path) -> None:
    """Pre-cropped frame-synchronous runs give exactly ldeq_core's track_videos (which crops inside the tracker)."""
    model = tiny_model()
    refs = make_refs([("syn", str(video_root), {"all": [v for v, _, _ in SPECS]})])
    methods = trackers(build_methods(MethodSettings(budgets=(2,), gammas=(1.0,), upstream=True, warp=True), 64))
    assert [m.name for m in methods] == [
        "per_frame",
        "rwr_nfe2",
        "rwr_upstream",
        "rwr_nfe2_gamma1",
        "rwr_nfe2_warp",
        "rwr_nfe2_gamma1_warp",
    ]
    assert [m.rwr.warp_state for m in methods if m.rwr] == [False] * 4 + [True] * 2
    decoded = [decode_video(r, 64) for r in refs]
    videos = [
        (list(read_frames(Path(r.root) / "videos" / f"{r.video_id}.mp4")), d.boxes)
        for r, d in zip(refs, decoded, strict=True)
    ]
    with torch_threads(1):  # the same thread count on both sides (and no oversubscription on small machines)
        tracks, seconds = run_group(model, decoded, methods)
        expected_by_method = {m.name: track_videos(model, videos, m.rwr, max_batch=len(videos)) for m in methods}
    assert set(seconds) == {m.name for m in methods}
    for m in methods:
        for tr, exp in zip(tracks, expected_by_method[m.name], strict=True):
            np.testing.assert_array_equal(tr[m.name].landmarks, exp.landmarks)
            np.testing.assert_array_equal(tr[m.name].nfe, exp.nfe)
    # RwR: a full solve on each video's first frame only, then the budget
    rwr = [t["rwr_nfe2"] for t in tracks]
    assert all(t.full_solve[0] and not t.full_solve[1:].any() and (t.nfe[1:] == 2).all() for t in rwr)


def test_sequential_runs_the_groups_and_reports_throughput(video_root: Path) -> None:
    model = tiny_model()
    refs = make_refs([("syn", str(video_root), {"all": [v for v, _, _ in SPECS]})])
    methods = trackers(build_methods(MethodSettings(budgets=(1,), primary_budget=1, gammas=(), upstream=False), 64))
    res = evaluate_sequential(model, refs, methods, group_size=2, threads=1)
    assert [(v.ref.video_id, v.group) for v in res.videos] == [("v0", 0), ("v2", 0), ("v1", 1)]
    assert [len(v.gt) for v in res.videos] == [5, 5, 3]
    tp = res.throughput()
    assert tp["frames"] == 13 and tp["videos"] == 3
    assert tp["frames_per_s"] == pytest.approx(13 * 2 / res.wall_s)
    assert tp["rwr_nfe1.frames_per_s"] == pytest.approx(13 / res.method_seconds["rwr_nfe1"])


def test_model_bytes_round_trip_is_exact() -> None:
    model = tiny_model(seed=3)
    copy = model_from_bytes(model_to_bytes(model))
    assert copy.cfg == model.cfg
    for (k, a), (_, b) in zip(model.state_dict().items(), copy.state_dict().items(), strict=True):
        assert a.dtype == b.dtype and bool((a == b).all()), k
