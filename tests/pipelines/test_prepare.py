"""The prepare stage: settings, the 300-W split, and each source (synthetic, wflw, wflw_v archive, 300w)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ldeq_shared.prepared import load_prepared
from pipelines.prepare import (
    data_settings,
    hash_fraction,
    load_params,
    photo_id,
    prepare,
    split_300w,
)
from pipelines.synthetic.generate import generate_dataset
from tests.pipelines.data_helpers import tiny_params


def test_photo_id_and_hash_fraction() -> None:
    assert photo_id("helen_train/100040721_2") == "helen_train/100040721"
    assert photo_id("afw/1051618982_1") == "afw/1051618982"
    assert photo_id("x/abc_def") == "x/abc_def"
    key = "helen_train/100040721"
    expected = int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) / 2**64  # independent formula
    assert hash_fraction(key) == pytest.approx(expected, abs=0)


def test_split_300w_is_deterministic_grouped_and_sized() -> None:
    names = [f"helen_train/{p}_{k}" for p in range(400) for k in (1, 2)] + [f"afw/{p}_1" for p in range(60)]
    s = split_300w(names, 0.25)
    assert sorted(s["train"] + s["val"]) == sorted(names) and not set(s["train"]) & set(s["val"])
    assert split_300w(list(reversed(names)), 0.25) == s
    val_photos = {photo_id(n) for n in s["val"]}
    assert not any(photo_id(n) in val_photos for n in s["train"])  # faces of one photo stay together
    n_val_photos = len(val_photos)
    assert 0.17 * 460 < n_val_photos < 0.33 * 460  # 460 photos, binomial(460, 0.25): sd 9.3
    both = split_300w(names, 0.25, ["afw"])
    assert {n for n in names if n.startswith("afw/")} <= set(both["val"])
    assert split_300w(names, 0.0)["val"] == [] and split_300w(names, 1.0)["train"] == []


def test_settings_validation(tmp_path) -> None:
    cfg = data_settings({"data": {"source": "wflw", "wflw": {"root": "x"}}})
    assert cfg.wflw.root == "x" and cfg.synthetic.n_train == 2000  # the code defaults fill the rest
    with pytest.raises(ValueError, match=r"params\.yaml: data\.synthetic\.n_trian: unknown key"):
        data_settings({"data": {"synthetic": {"n_trian": 3}}})
    with pytest.raises(ValueError, match=r"data\.source"):
        data_settings({"data": {"source": "celeba"}})
    with pytest.raises(ValueError, match="n_test"):
        data_settings({"data": {"synthetic": {"n_test": -1}}})
    with pytest.raises(ValueError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        load_params(tmp_path / "list.yaml")
    with pytest.raises(ValueError, match=r"data\.w300\.anim\.box_jiter: unknown key"):
        data_settings({"data": {"w300": {"anim": {"box_jiter": 0.02}}}})
    with pytest.raises(ValueError, match="box_jitter"):
        data_settings({"data": {"w300": {"anim": {"box_jitter": -1.0}}}})
    with pytest.raises(ValueError, match=r"data\.wflw\.root must be set"):
        prepare({"data": {"source": "wflw", "out": str(tmp_path / "raw")}}, base_dir=tmp_path, progress=False)


def test_prepare_synthetic_is_idempotent_and_regenerates_on_change(tmp_path) -> None:
    raw = tmp_path / "raw"
    params = tiny_params(raw, tmp_path / "shards")
    prep = prepare(params, base_dir=tmp_path, progress=False)
    assert prep.counts == {"train": 16, "test": 4, "video_easy": 1, "video_hard": 1}
    assert prep.n_landmarks == 98 and prep.bad_items == []
    loaded = load_prepared(raw)
    assert loaded.stills[0].root == "synthetic/wflw"
    assert loaded.resolve(loaded.stills[0].root) == (raw / "synthetic" / "wflw").resolve()
    assert loaded.stills[0].splits["train"]["items"][:2] == ["synth_000000.png", "synth_000001.png"]
    assert loaded.videos[0].splits == {"video_easy": {"items": ["synth_0000"]}, "video_hard": {"items": ["synth_0001"]}}
    first = raw / "synthetic" / "wflw" / "train" / "synth_000000.png"
    stamp, text = first.stat().st_mtime_ns, (raw / "prepared.json").read_bytes()

    (raw / ".tmp-synthetic").mkdir()  # leftover of an interrupted run
    params["data"]["synthetic"]["workers"] = 2  # does not change the data
    prepare(params, base_dir=tmp_path, progress=False)
    assert first.stat().st_mtime_ns == stamp  # reused, not regenerated
    assert not (raw / ".tmp-synthetic").exists()
    assert (raw / "prepared.json").read_bytes() == text  # identical description: idempotent

    params["data"]["synthetic"]["n_train"] = 5
    prep = prepare(params, base_dir=tmp_path, progress=False)
    assert prep.counts["train"] == 5 and len(list((raw / "synthetic" / "wflw" / "train").glob("*.png"))) == 5


def test_prepare_wflw_references_root_and_reports_bad_lines(tmp_path) -> None:
    generate_dataset(tmp_path / "src", n_train=6, n_test=3, n_videos=0, n_frames=2, seed=1, progress=False)
    root = tmp_path / "src" / "wflw"
    lines = (root / "train.txt").read_text().splitlines()
    parts = lines[2].split()
    parts[5] = "nan"
    lines[2] = " ".join(parts)
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    raw = tmp_path / "proj" / "data" / "raw"
    params = {"data": {"source": "wflw", "out": "data/raw", "wflw": {"root": "../src/wflw"}}}
    prep = prepare(params, base_dir=tmp_path / "proj", progress=False)
    assert prep.counts == {"train": 5, "test": 3} and prep.videos == []
    assert [(b["split"], b["item"]) for b in prep.bad_items] == [("train", "train:3")]
    assert "NaN" in prep.bad_items[0]["reason"]
    assert prep.stills[0].root == "../../../src/wflw"  # relative to data/raw: referenced, not copied
    assert load_prepared(raw).resolve(prep.stills[0].root) == root.resolve()
    assert sorted(p.name for p in raw.iterdir()) == ["prepared.json"]
    fp = prep.inputs["../../../src/wflw"]
    img = root / "test" / "synth_000000.png"
    img.write_bytes(img.read_bytes() + b"\0")  # content change -> new fingerprint
    assert prepare(params, base_dir=tmp_path / "proj", progress=False).inputs["../../../src/wflw"] != fp


def test_prepare_wflw_v_from_archive_with_stills(tmp_path) -> None:
    generate_dataset(tmp_path / "src", n_train=4, n_test=2, n_videos=2, n_frames=6, seed=2, progress=False)
    archive = tmp_path / "src" / "wflw_v"
    lists = tmp_path / "lists"
    lists.mkdir()
    for name in ("easy_video_IDs.txt", "hard_video_IDs.txt", "download_ranges.txt"):
        shutil.copy(archive / name, lists / name)
    with open(lists / "easy_video_IDs.txt", "a") as f:
        f.write("gone_video\n")
    with open(lists / "download_ranges.txt", "a") as f:
        f.write("gone_video 0 5\n")
    params = {
        "data": {
            "source": "wflw_v",
            "out": str(tmp_path / "raw"),
            "wflw": {"root": str(tmp_path / "src" / "wflw")},
            "wflw_v": {"archive": str(archive), "lists_dir": str(lists), "workers": 1},
        }
    }
    prep = prepare(params, base_dir=tmp_path, progress=False)
    assert prep.counts == {"train": 4, "test": 2, "video_easy": 1, "video_hard": 1}
    assert prep.videos[0].root == "wflw_v" and (tmp_path / "raw" / "wflw_v" / "videos" / "synth_0000.mp4").is_file()
    assert [(b["item"], b["reason"].split(":")[0]) for b in prep.bad_items] == [("gone_video", "unavailable")]


def test_prepare_300w_split_and_animated_val_videos(tmp_path, shared_data) -> None:
    root = shared_data / "300w"
    if not (root / "afw").is_dir():
        pytest.skip(f"300-W AFW not found under {root}")
    params = {
        "data": {
            "source": "300w",
            "out": str(tmp_path / "raw"),
            "seed": 3,
            "w300": {
                "root": str(root),
                "subsets": ["afw"],
                "val_fraction": 0.3,
                "n_videos": 2,
                "n_frames": 6,
                "frame_size": [160, 120],
            },
        }
    }
    prep = prepare(params, base_dir=tmp_path, progress=False)
    assert prep.n_landmarks == 68
    train, val = (prep.stills[0].splits[s]["items"] for s in ("train", "val"))
    assert not set(train) & set(val) and len(train) + len(val) + len(prep.bad_items) == len(
        list((root / "afw").glob("*.pts"))
    )
    assert 0.2 < len(val) / (len(train) + len(val)) < 0.4
    assert not {photo_id(n) for n in val} & {photo_id(n) for n in train}
    ids = prep.videos[0].splits["video_val"]["items"]
    assert ids == ["anim_00000", "anim_00001"]
    lm = np.load(tmp_path / "raw" / "300w_anim" / "landmarks" / "anim_00000.npy")
    assert lm.shape == (6, 68, 2)
    manifest = json.loads((tmp_path / "raw" / "300w_anim" / "animated_stills.json").read_text())
    assert all(v["source"] in val for v in manifest["videos"])  # videos come from val stills only
    video = tmp_path / "raw" / "300w_anim" / "videos" / "anim_00001.mp4"
    stamp = video.stat().st_mtime_ns
    assert prepare(params, base_dir=tmp_path, progress=False).counts == prep.counts
    assert video.stat().st_mtime_ns == stamp  # same settings: reused
    assert Path(prep.resolve(prep.stills[0].root)) == root.resolve()
    # animation overrides (data.w300.anim) regenerate the videos: box jitter moves the boxes off the clean ones
    boxes = np.load(tmp_path / "raw" / "300w_anim" / "bboxes" / "anim_00000.npy")
    params["data"]["w300"]["anim"] = {"box_jitter": 0.05}
    prepare(params, base_dir=tmp_path, progress=False)
    jittered = np.load(tmp_path / "raw" / "300w_anim" / "bboxes" / "anim_00000.npy")
    side = (boxes[:, 2] - boxes[:, 0]).mean()
    assert 0.01 * side < np.abs(jittered - boxes).mean() < 0.2 * side


def test_cli_data_commands(tmp_path) -> None:
    import cv2
    from typer.testing import CliRunner

    from ldeq_cli.main import app
    from pipelines.formats.w300 import write_pts

    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "data",
            "synth",
            "--out",
            str(tmp_path / "syn"),
            "--n-train",
            "2",
            "--n-test",
            "1",
            "--n-videos",
            "2",
            "--n-frames",
            "3",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n_train"] == 2
    assert (tmp_path / "syn" / "wflw_v" / "videos" / "synth_0001.mp4").is_file()

    stills = tmp_path / "stills"
    stills.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(stills / f"face_{i}.png"), rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
        write_pts(stills / f"face_{i}.pts", rng.uniform(30, 66, (68, 2)))
    res = runner.invoke(
        app,
        [
            "data",
            "animate",
            "--src",
            str(stills),
            "--out",
            str(tmp_path / "anim"),
            "--n-videos",
            "1",
            "--n-frames",
            "3",
            "--width",
            "64",
            "--height",
            "64",
        ],
    )
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "anim" / "landmarks" / "anim_00000.npy").shape == (3, 68, 2)

    src = tmp_path / "syn" / "wflw_v"
    res = runner.invoke(
        app,
        [
            "data",
            "wflw-v",
            "--out",
            str(tmp_path / "wv"),
            "--archive",
            str(src),
            "--lists-dir",
            str(src),
            "--workers",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "ok=2" in res.output

    (tmp_path / "bad.yaml").write_text("data:\n  source: nope\n")
    res = runner.invoke(app, ["data", "prepare", "--params", str(tmp_path / "bad.yaml")])
    assert res.exit_code == 2 and "data.source" in res.output


def test_synthetic_val_split_is_carved_from_train_by_hash(tmp_path) -> None:
    from pipelines.prepare import hash_fraction

    raw = tmp_path / "raw"
    params = tiny_params(raw, tmp_path / "shards")
    prepare(params, base_dir=tmp_path, progress=False)
    first = raw / "synthetic" / "wflw" / "train" / "synth_000000.png"
    stamp = first.stat().st_mtime_ns
    params["data"]["synthetic"]["val_fraction"] = 0.5
    prep = prepare(params, base_dir=tmp_path, progress=False)
    assert first.stat().st_mtime_ns == stamp  # changing the split does not regenerate the images
    splits = load_prepared(raw).stills[0].splits
    train, val = splits["train"]["items"], splits["val"]["items"]
    assert splits["val"]["source_split"] == "train"
    assert sorted(train + val) == [f"synth_{i:06d}.png" for i in range(16)]
    assert val == sorted(n for n in train + val if hash_fraction(n) < 0.5)
    assert prep.counts["val"] == len(val) > 0 and prep.counts["test"] == 4
