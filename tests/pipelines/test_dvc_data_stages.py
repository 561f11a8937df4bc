"""A real ``dvc repro`` of the prepare + preprocess stages in a throw-away copy of the repository (offline)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.shards import image_codec_of, read_split_table

REPO = Path(__file__).resolve().parents[2]
DVC = Path(sys.executable).with_name("dvc")


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"{' '.join(args)} failed ({res.returncode}):\n{out[-4000:]}"
    return out


def _stage_lines(out: str) -> tuple[set[str], set[str]]:
    ran = {ln.split("'")[1] for ln in out.splitlines() if ln.startswith("Running stage '")}
    skipped = {ln.split("'")[1] for ln in out.splitlines() if ln.startswith("Stage '") and "didn't change" in ln}
    return ran, skipped


def _write_params(path: Path, **preprocess: object) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["synthetic"].update(n_train=6, n_test=3, n_videos=2, n_frames=5, workers=1, image_format="png")
    params["preprocess"].update({"image_codec": "png", "rows_per_shard": 8, "progress": False, **preprocess})
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def make_dvc_repo(repo: Path, ray_address: str) -> dict[str, str]:
    """A throw-away git + DVC repository holding the pipeline code and dvc.yaml; returns the env to run it with.

    The caller writes ``repo/params.yaml``. Skips when DVC is not installed next to this interpreter.
    """
    if not DVC.is_file():
        pytest.skip(f"dvc not installed next to {sys.executable}")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in ("pipelines", "ldeq_shared", "ldeq_core"):
        shutil.copytree(REPO / pkg, repo / pkg, ignore=ignore)
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    env = {
        **os.environ,
        "PATH": f"{DVC.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "RAY_ADDRESS": ray_address,
        "RAY_AUTH_MODE": "disabled",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    _run(["git", "init", "-q"], repo, env)
    _run([str(DVC), "init", "-q"], repo, env)
    _run([str(DVC), "config", "core.check_update", "false"], repo, env)
    return env


@pytest.mark.slow
def test_dvc_repro_runs_once_then_only_what_changed(tmp_path, ray_local) -> None:
    repo = tmp_path / "repo"
    env = make_dvc_repo(repo, ray_local)
    _write_params(repo / "params.yaml")

    out = _run([str(DVC), "repro", "preprocess"], repo, env)
    assert _stage_lines(out)[0] == {"prepare", "preprocess"}
    shards = repo / "data" / "shards"
    assert read_split_table(shards, "train").num_rows == 6
    assert image_codec_of(read_split_table(shards, "test", ["image"]).column("image")[0].as_py()) == "png"
    stamps = {p: p.stat().st_mtime_ns for p in shards.rglob("*.parquet")}
    assert len(stamps) == 4 and (repo / "dvc.lock").is_file()
    report = json.loads((shards / "report.json").read_text())
    assert report["ray"]["address"] == ray_local  # joined the running cluster through RAY_ADDRESS

    out = _run([str(DVC), "repro", "preprocess"], repo, env)  # nothing changed: a no-op
    assert _stage_lines(out) == (set(), {"prepare", "preprocess"})
    assert {p: p.stat().st_mtime_ns for p in shards.rglob("*.parquet")} == stamps

    _write_params(repo / "params.yaml", image_codec="jpeg")  # a preprocess-only setting
    out = _run([str(DVC), "repro", "preprocess"], repo, env)
    assert _stage_lines(out) == ({"preprocess"}, {"prepare"})
    assert image_codec_of(read_split_table(shards, "test", ["image"]).column("image")[0].as_py()) == "jpeg"
    assert "up to date" in _run([str(DVC), "status", "preprocess"], repo, env)
