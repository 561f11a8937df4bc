"""A DVC remote for the pipeline's outputs (docs/guide.md, "DVC remote"): ``dvc push`` from one repository, then a
fresh ``git clone`` gets the identical bytes back with ``dvc pull``, and its pipeline is up to date.

The repository is the throw-away copy of ``make_dvc_repo``; the stage pushed is the real ``prepare`` stage on a
tiny synthetic data set (no Ray needed). The remote is a local folder, as in the guide.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from tests.pipelines.test_dvc_data_stages import DVC, _run, _stage_lines, make_dvc_repo

REPO = Path(__file__).resolve().parents[2]


def _tree(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_dvc_push_then_pull_in_a_fresh_clone(tmp_path) -> None:
    repo, remote, clone = tmp_path / "repo", tmp_path / "remote", tmp_path / "clone"
    env = make_dvc_repo(repo, "")
    env.pop("RAY_ADDRESS")  # the prepare stage does not use Ray
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["synthetic"].update(n_train=6, n_test=3, n_videos=2, n_frames=5, workers=1)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    assert _stage_lines(_run([str(DVC), "repro", "prepare"], repo, env))[0] == {"prepare"}
    produced = _tree(repo / "data" / "raw")
    assert "prepared.json" in produced and len(produced) > 10

    # the commands of the guide
    _run([str(DVC), "remote", "add", "-d", "store", str(remote)], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-q", "-m", "pipeline + prepare outputs"], repo, env)
    out = _run([str(DVC), "push"], repo, env)
    assert "pushed" in out and any(p.is_file() for p in (remote / "files").rglob("*"))
    assert "Everything is up to date" in _run([str(DVC), "push"], repo, env)  # nothing left to push
    shutil.rmtree(repo / ".dvc" / "cache")  # the clone can only get the data from the remote

    _run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    assert not (clone / "data" / "raw").exists()  # not in git
    assert "store" in _run([str(DVC), "remote", "list"], clone, env)  # the remote travels in .dvc/config
    # only prepare has run, so name it: a bare `dvc pull` also tries the other stages' outputs and exits 1
    _run([str(DVC), "pull", "prepare"], clone, env)
    assert _tree(clone / "data" / "raw") == produced
    assert "up to date" in _run([str(DVC), "status", "prepare"], clone, env)
