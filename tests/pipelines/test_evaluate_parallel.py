"""The Ray Data path (decode tasks + a 2-actor pool of model replicas) gives exactly the sequential numbers.

Both paths run the same groups of videos (``make_groups``) through the same functions with the same torch thread
count, so every per-video landmark and metric must be bit-identical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.evaluate.methods import MethodSettings, build_methods, trackers
from pipelines.evaluate.report import video_scores
from pipelines.evaluate.runner import evaluate_parallel, evaluate_sequential, make_refs
from tests.pipelines.eval_helpers import tiny_model, write_videos


@pytest.mark.slow
def test_parallel_equals_sequential(tmp_path: Path, ray_local: str) -> None:
    write_videos(tmp_path, [("v0", 6, False), ("v1", 6, True), ("v2", 4, False), ("v3", 5, True)])
    refs = make_refs([("syn", str(tmp_path), {"easy": ["v0", "v2"], "hard": ["v1", "v3"]})])
    model = tiny_model()
    methods = trackers(build_methods(MethodSettings(budgets=(1, 2), primary_budget=2, gammas=(1.0,)), 64))

    par = evaluate_parallel(
        model, refs, methods, group_size=3, actors=2, cpus_per_actor=0.5, decode_cpus=0.5, threads=1
    )
    seq = evaluate_sequential(model, refs, methods, group_size=3, threads=1)

    assert par.mode == "ray" and seq.mode == "sequential"
    # same groups on both paths: (6, 6, 5 frames) then (4)
    assert (
        [(v.ref.key, v.group) for v in par.videos]
        == [(v.ref.key, v.group) for v in seq.videos]
        == [("syn/v0", 0), ("syn/v1", 0), ("syn/v3", 0), ("syn/v2", 1)]
    )
    for p, s in zip(par.videos, seq.videos, strict=True):
        np.testing.assert_array_equal(p.gt, s.gt)
        assert p.fps == s.fps
        for m in methods:
            np.testing.assert_array_equal(p.tracks[m.name].landmarks, s.tracks[m.name].landmarks)
            np.testing.assert_array_equal(p.tracks[m.name].nfe, s.tracks[m.name].nfe)
            np.testing.assert_array_equal(p.tracks[m.name].full_solve, s.tracks[m.name].full_solve)
            assert video_scores(p.tracks[m.name].landmarks, p.gt) == video_scores(s.tracks[m.name].landmarks, s.gt)
    # the per-method compute times of both groups were reported back
    assert set(par.method_seconds) == {m.name for m in methods}
    assert all(v > 0 for v in par.method_seconds.values())
    assert par.throughput()["frames"] == 21
    # decoding ran in Ray tasks, not inside the model actors (the two map stages were not fused)
    assert par.extra["decode_pids"] and par.extra["actor_pids"]
    assert not set(par.extra["decode_pids"]) & set(par.extra["actor_pids"])
