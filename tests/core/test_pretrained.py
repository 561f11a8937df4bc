"""The model zoo: registration, sha256-verified loading by name, URL downloads into the cache, and the shipped zoo.

Every test builds its own zoo in a temporary folder (``zoo_dir=``) and its own cache (``cache_dir=``); downloads go
to a real HTTP server on 127.0.0.1 or to ``file://`` URLs, nothing is mocked.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

from ldeq_core import default_pretrained, get_pretrained, list_pretrained, load_pretrained
from ldeq_core.checkpoints import file_sha256, load_checkpoint, save_checkpoint
from ldeq_core.config import get_preset
from ldeq_core.model import LandmarkDEQ
from ldeq_core.pretrained import (
    PACKAGE_ZOO_DIR,
    ZOO_FORMAT,
    PretrainedEntry,
    WeightsDownloadError,
    WeightsIntegrityError,
    make_card,
    register_pretrained,
)
from ldeq_core.profiling import model_cost

REPO = Path(__file__).resolve().parents[2]


def tiny_model(seed: int = 0, n_landmarks: int = 68) -> LandmarkDEQ:
    torch.manual_seed(seed)
    cfg = get_preset(
        "tiny",
        n_landmarks=n_landmarks,
        image_size=64,
        heatmap_size=16,
        injection_width=8,
        cell_base_width=8,
        cell_width_increment=4,
    )
    return LandmarkDEQ(cfg).eval()


def add_model(
    zoo: Path, name: str, nme_pct: float, seed: int = 0, url: str | None = None, cpu_fps: float = 123.0
) -> PretrainedEntry:
    model = tiny_model(seed)
    ckpt = zoo.parent / f"{name}-source.pt"
    save_checkpoint(ckpt, model, {"run_name": name, "epoch": 3, "val_nme": nme_pct / 100, "noise": "dropped"})
    card = make_card(
        model.cfg,
        training_data="synthetic test faces",
        recipe="recipes/ldeq68-small-w300-128px.yaml",
        command="ldeq train --params test.yaml",
        git_commit="0" * 40,
        metrics={"val_nme_pct": nme_pct, "val_fr_pct": 1.0, "val_auc": 0.5, "val_images": 10},
        cpu_frames_per_s=cpu_fps,
        cpu_benchmark="test machine",
    )
    return register_pretrained(ckpt, name, card, url=url, zoo_dir=zoo)


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def zoo(tmp_path: Path) -> Path:
    folder = tmp_path / "zoo"
    add_model(folder, "tiny68-a", nme_pct=7.5)
    return folder


class _CountingServer:
    def __init__(self, root: Path) -> None:
        self.gets: list[str] = []
        gets = self.gets

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                gets.append(self.path)
                super().do_GET()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[_CountingServer, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    srv = _CountingServer(root)
    try:
        yield srv, root
    finally:
        srv.close()


# ---------------------------------------------------------------------------------------------- registry


def test_register_writes_a_hashed_file_and_a_metafile(zoo: Path) -> None:
    meta = json.loads((zoo / "zoo.json").read_text())
    assert meta["format"] == ZOO_FORMAT and [m["name"] for m in meta["models"]] == ["tiny68-a"]
    entry = get_pretrained("tiny68-a", zoo_dir=zoo)
    assert entry.filename == f"tiny68-a-{entry.sha256[:8]}.pt"
    assert file_sha256(zoo / entry.filename) == entry.sha256
    assert (zoo / entry.filename).stat().st_size == entry.size_bytes
    cfg = tiny_model().cfg
    assert entry.card.params == model_cost(cfg).params_total
    assert entry.card.gmac_per_rwr_frame == pytest.approx(model_cost(cfg).macs_per_frame(2) / 1e9, abs=1e-4)
    assert entry.card.scheme == "68-point iBUG 300-W" and "non-commercial" in entry.card.licence
    assert entry.video_defaults == {"mode": "rwr", "budget_nfe": 2, "crop_size": 64, "extra_scale": 1.2}
    assert entry.rwr_config().crop_size == 64
    saved = load_checkpoint(zoo / entry.filename).metadata
    assert saved["zoo_name"] == "tiny68-a" and "noise" not in saved and saved["run_name"] == "tiny68-a"
    assert sorted(p.name for p in zoo.iterdir()) == sorted(["zoo.json", entry.filename])  # no temp files


def test_reregistering_a_name_replaces_the_entry_and_its_old_file(zoo: Path) -> None:
    old = get_pretrained("tiny68-a", zoo_dir=zoo)
    new = add_model(zoo, "tiny68-a", nme_pct=6.0, seed=1)
    assert new.sha256 != old.sha256
    assert [e.name for e in list_pretrained(zoo_dir=zoo)] == ["tiny68-a"]
    assert get_pretrained("tiny68-a", zoo_dir=zoo).sha256 == new.sha256
    assert not (zoo / old.filename).exists() and (zoo / new.filename).exists()


def test_unknown_name_lists_the_known_names(zoo: Path) -> None:
    add_model(zoo, "tiny68-b", nme_pct=9.0)
    with pytest.raises(ValueError, match=r"unknown pretrained model 'nope'.*tiny68-a, tiny68-b"):
        get_pretrained("nope", zoo_dir=zoo)
    with pytest.raises(ValueError, match="tiny68-a"):
        load_pretrained("nope", zoo_dir=zoo)


def test_default_pretrained_is_the_lowest_val_nme(tmp_path: Path) -> None:
    folder = tmp_path / "zoo"
    assert default_pretrained(68, zoo_dir=folder) is None  # empty zoo
    add_model(folder, "worse", nme_pct=9.0, seed=0)
    add_model(folder, "better", nme_pct=4.5, seed=1)
    add_model(folder, "worst", nme_pct=12.0, seed=2)
    best = default_pretrained(68, zoo_dir=folder)
    assert best is not None and best.name == "better"
    assert default_pretrained(98, zoo_dir=folder) is None
    assert [e.name for e in list_pretrained(68, zoo_dir=folder)] == ["worse", "better", "worst"]


def test_default_pretrained_on_a_cpu_is_the_best_real_time_model(tmp_path: Path) -> None:
    folder = tmp_path / "zoo"
    add_model(folder, "fast", nme_pct=4.0, seed=0, cpu_fps=60.0)
    add_model(folder, "accurate-but-slow", nme_pct=3.5, seed=1, cpu_fps=5.0)
    assert default_pretrained(68, zoo_dir=folder).name == "fast"  # type: ignore[union-attr]
    assert default_pretrained(68, device="cpu", zoo_dir=folder).name == "fast"  # type: ignore[union-attr]
    assert default_pretrained(68, device="cuda", zoo_dir=folder).name == "accurate-but-slow"  # type: ignore[union-attr]
    slow_only = tmp_path / "slow"
    add_model(slow_only, "slow", nme_pct=3.5, seed=1, cpu_fps=5.0)  # no real-time model: the best one
    assert default_pretrained(68, zoo_dir=slow_only).name == "slow"  # type: ignore[union-attr]
    assert list_pretrained(98, zoo_dir=folder) == []


def test_env_var_selects_the_zoo(zoo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LDEQ_ZOO_DIR", str(zoo))
    assert [e.name for e in list_pretrained()] == ["tiny68-a"]
    assert load_pretrained("tiny68-a").metadata["zoo_name"] == "tiny68-a"


# ---------------------------------------------------------------------------------------------- loading by name


def test_load_by_name_gives_identical_tensors(zoo: Path) -> None:
    loaded = load_pretrained("tiny68-a", zoo_dir=zoo)
    entry = get_pretrained("tiny68-a", zoo_dir=zoo)
    assert state_equal(loaded.model, tiny_model(0))
    assert loaded.sha256 == entry.sha256
    assert loaded.metadata["zoo_name"] == "tiny68-a"
    assert loaded.model.cfg.n_landmarks == entry.n_landmarks == 68
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())


def test_a_changed_byte_is_refused_naming_the_file_and_both_hashes(zoo: Path) -> None:
    entry = get_pretrained("tiny68-a", zoo_dir=zoo)
    path = zoo / entry.filename
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(WeightsIntegrityError) as err:
        load_pretrained("tiny68-a", zoo_dir=zoo)
    message = str(err.value)
    assert str(path) in message and entry.sha256 in message and actual in message
    assert isinstance(err.value, ValueError)


def test_a_truncated_file_is_refused(zoo: Path) -> None:
    entry = get_pretrained("tiny68-a", zoo_dir=zoo)
    path = zoo / entry.filename
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightsIntegrityError, match=r"1000 bytes, expected \d+ bytes: truncated"):
        load_pretrained("tiny68-a", zoo_dir=zoo)


def test_a_missing_file_without_url_is_a_clear_error(zoo: Path) -> None:
    entry = get_pretrained("tiny68-a", zoo_dir=zoo)
    (zoo / entry.filename).unlink()
    with pytest.raises(FileNotFoundError, match=f"{entry.filename}.*no url"):
        load_pretrained("tiny68-a", zoo_dir=zoo)


def test_a_missing_file_is_downloaded_from_the_entry_url(tmp_path: Path, server: tuple[_CountingServer, Path]) -> None:
    srv, root = server
    folder, cache = tmp_path / "zoo", tmp_path / "cache"
    entry = add_model(folder, "remote68", nme_pct=8.0, url=srv.url("remote68.pt"))
    (root / "remote68.pt").write_bytes((folder / entry.filename).read_bytes())  # the mirror
    (folder / entry.filename).unlink()
    for _ in range(2):
        loaded = load_pretrained("remote68", zoo_dir=folder, cache_dir=cache)
        assert loaded.metadata["zoo_name"] == "remote68" and state_equal(loaded.model, tiny_model(0))
    assert len(srv.gets) == 1
    assert files_in(cache) == [f"{entry.sha256[:16]}-remote68.pt"]


# ---------------------------------------------------------------------------------------------- URLs and the cache


@pytest.fixture
def weights(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "src" / "tiny68.pt"
    save_checkpoint(path, tiny_model(0), {"run_name": "url"})
    return path, file_sha256(path)


def test_file_url_with_the_right_hash_loads_and_caches(tmp_path: Path, weights: tuple[Path, str]) -> None:
    path, sha = weights
    cache = tmp_path / "cache"
    loaded = load_pretrained(path.as_uri(), sha256=sha, cache_dir=cache)
    assert state_equal(loaded.model, tiny_model(0)) and loaded.sha256 == sha
    assert loaded.metadata["weights_url"] == path.as_uri() and "zoo_name" not in loaded.metadata
    cached = cache / f"{sha[:16]}-tiny68.pt"
    assert files_in(cache) == [cached.name] and file_sha256(cached) == sha
    path.unlink()  # the second load uses the cache only
    assert state_equal(load_pretrained(path.as_uri(), sha256=sha.upper(), cache_dir=cache).model, tiny_model(0))


def test_http_download_happens_once(
    tmp_path: Path, weights: tuple[Path, str], server: tuple[_CountingServer, Path]
) -> None:
    srv, root = server
    path, sha = weights
    (root / "w.pt").write_bytes(path.read_bytes())
    cache = tmp_path / "cache"
    first = load_pretrained(srv.url("w.pt"), sha256=sha, cache_dir=cache)
    assert len(srv.gets) == 1
    second = load_pretrained(srv.url("w.pt"), sha256=sha, cache_dir=cache)
    assert len(srv.gets) == 1
    assert state_equal(first.model, second.model) and state_equal(first.model, tiny_model(0))
    cached = cache / f"{sha[:16]}-w.pt"
    assert files_in(cache) == [cached.name] and file_sha256(cached) == sha


def test_cache_dir_from_the_environment(
    tmp_path: Path, weights: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, sha = weights
    monkeypatch.setenv("LDEQ_CACHE_DIR", str(tmp_path / "envcache"))
    load_pretrained(path.as_uri(), sha256=sha)
    assert files_in(tmp_path / "envcache") == [f"{sha[:16]}-tiny68.pt"]


def test_a_wrong_pinned_hash_leaves_nothing_in_the_cache(
    tmp_path: Path, weights: tuple[Path, str], server: tuple[_CountingServer, Path]
) -> None:
    srv, root = server
    path, sha = weights
    (root / "w.pt").write_bytes(path.read_bytes())
    wrong = "0" * 64
    cache = tmp_path / "cache"
    with pytest.raises(WeightsIntegrityError) as err:
        load_pretrained(srv.url("w.pt"), sha256=wrong, cache_dir=cache)
    assert srv.url("w.pt") in str(err.value) and wrong in str(err.value) and sha in str(err.value)
    assert files_in(cache) == []  # neither the file nor a temp file
    with pytest.raises(WeightsIntegrityError):
        load_pretrained(path.as_uri(), sha256=wrong, cache_dir=cache)
    assert files_in(cache) == []


def test_a_corrupted_cached_file_is_replaced(tmp_path: Path, weights: tuple[Path, str]) -> None:
    path, sha = weights
    cache = tmp_path / "cache"
    load_pretrained(path.as_uri(), sha256=sha, cache_dir=cache)
    cached = cache / f"{sha[:16]}-tiny68.pt"
    cached.write_bytes(cached.read_bytes()[:-10])
    with pytest.warns(UserWarning, match="downloading .* again"):
        loaded = load_pretrained(path.as_uri(), sha256=sha, cache_dir=cache)
    assert state_equal(loaded.model, tiny_model(0)) and file_sha256(cached) == sha


def test_http_404_names_the_url(tmp_path: Path, server: tuple[_CountingServer, Path]) -> None:
    srv, _ = server
    cache = tmp_path / "cache"
    url = srv.url("missing.pt")
    with pytest.raises(WeightsDownloadError, match=f"{url}: download failed: HTTP 404"):
        load_pretrained(url, sha256="a" * 64, cache_dir=cache)
    assert files_in(cache) == []


def test_unreachable_server_names_the_url(tmp_path: Path, server: tuple[_CountingServer, Path]) -> None:
    srv, _ = server
    url = srv.url("w.pt")
    srv.close()
    with pytest.raises(WeightsDownloadError, match=f"{url}: download failed"):
        load_pretrained(url, sha256="a" * 64, cache_dir=tmp_path / "cache")


def test_a_url_needs_a_pinned_hash(tmp_path: Path, weights: tuple[Path, str]) -> None:
    path, _ = weights
    with pytest.raises(ValueError, match="needs a pinned sha256"):
        load_pretrained(path.as_uri(), cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="64 hex digits"):
        load_pretrained(path.as_uri(), sha256="abc", cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="unsupported URL scheme 'ftp'"):
        load_pretrained("ftp://example.org/w.pt", sha256="a" * 64, cache_dir=tmp_path / "cache")
    assert files_in(tmp_path / "cache") == []


# ---------------------------------------------------------------------------------------------- the script


def test_add_zoo_model_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("add_zoo_model", REPO / "scripts" / "add_zoo_model.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    model = tiny_model(3)
    ckpt = tmp_path / "run" / "models" / "model.pt"
    save_checkpoint(ckpt, model, {"epoch": 2, "val_nme": 0.05, "run_name": "r", "source": "ldeq train"})
    metrics = tmp_path / "run" / "metrics" / "train.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"val_nme": 0.05, "val_fr": 0.02, "val_auc": 0.55, "final": {"val_nme": 0.06}}))
    threads = torch.get_num_threads()
    argv = [
        "--checkpoint", str(ckpt), "--name", "script68", "--recipe", "recipes/ldeq68-small-w300-128px.yaml",
        "--command", "ldeq train --params recipes/ldeq68-small-w300-128px.yaml --no-register",
        "--training-data", "test data", "--metrics-json", str(metrics), "--val-images", "41",
        "--notes", "a test", "--bench-frames", "100", "--threads", "1", "--zoo-dir", str(tmp_path / "zoo"),
    ]  # fmt: skip
    assert script.main(argv) == 0
    assert torch.get_num_threads() == threads  # restored after timing
    entry = get_pretrained("script68", zoo_dir=tmp_path / "zoo")
    assert entry.card.metrics == {"val_nme_pct": 5.0, "val_fr_pct": 2.0, "val_auc": 0.55, "val_images": 41.0}
    assert entry.card.params == model_cost(model.cfg).params_total and entry.card.cpu_frames_per_s > 0
    assert "1 torch threads" in entry.card.cpu_benchmark and "median of 100 frames" in entry.card.cpu_benchmark
    assert len(entry.card.git_commit.removesuffix("-dirty")) == 40 and entry.card.notes == "a test"
    assert entry.card.recipe == "recipes/ldeq68-small-w300-128px.yaml"
    loaded = load_pretrained("script68", zoo_dir=tmp_path / "zoo")
    assert state_equal(loaded.model, model)
    assert loaded.metadata == {
        "run_name": "r",
        "epoch": 2,
        "source": "ldeq train",
        "val_nme": 0.05,
        "zoo_name": "script68",
        "source_sha256": file_sha256(ckpt),
    }
    assert entry.sha256 in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- the shipped zoo


def test_every_shipped_zoo_model_loads_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each entry of ldeq_core/zoo/zoo.json has its weights file in the package, with the pinned hash and the listed
    number of landmarks (no network: the cache is an empty temp folder and the files must be local)."""
    monkeypatch.delenv("LDEQ_ZOO_DIR", raising=False)
    meta = json.loads((PACKAGE_ZOO_DIR / "zoo.json").read_text())
    assert meta["format"] == ZOO_FORMAT
    entries = list_pretrained()
    assert [e.name for e in entries] == [m["name"] for m in meta["models"]]
    for entry in entries:
        path = PACKAGE_ZOO_DIR / entry.filename
        assert path.is_file(), f"{path}: shipped weights missing"
        assert file_sha256(path) == entry.sha256
        loaded = load_pretrained(entry.name, cache_dir=tmp_path / "cache")
        assert loaded.sha256 == entry.sha256 and loaded.metadata["zoo_name"] == entry.name
        assert loaded.model.cfg.n_landmarks == entry.n_landmarks
        assert loaded.model.cfg.image_size == entry.card.input_size
        assert (REPO / entry.card.recipe).is_file(), f"{entry.name}: recipe {entry.card.recipe} missing"
    assert files_in(tmp_path / "cache") == []


def test_half_registration_halves_the_file_and_loads_fp16_rounded_fp32_weights(tmp_path: Path) -> None:
    model = tiny_model(5)
    card = make_card(
        model.cfg,
        training_data="synthetic test faces",
        recipe="recipes/ldeq68-small-w300-128px.yaml",
        command="ldeq train --params test.yaml",
        git_commit="0" * 40,
        metrics={"val_nme_pct": 5.0},
        cpu_frames_per_s=50.0,
        cpu_benchmark="test machine",
    )
    full = register_pretrained(model, "full", card, zoo_dir=tmp_path / "zoo")
    half = register_pretrained(model, "half", card, zoo_dir=tmp_path / "zoo", half=True)
    params = sum(p.numel() for p in model.parameters())
    assert full.size_bytes - half.size_bytes >= 2 * params * 0.95  # 2 bytes saved per parameter
    loaded = load_pretrained("half", zoo_dir=tmp_path / "zoo")
    assert loaded.metadata["weights_stored_as"] == "float16"
    for name, p in loaded.model.state_dict().items():
        ref = model.state_dict()[name]
        assert p.dtype == ref.dtype
        if ref.is_floating_point():
            assert torch.equal(p, ref.half().to(ref.dtype)), name
