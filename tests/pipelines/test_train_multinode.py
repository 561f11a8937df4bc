"""``ldeq train`` spans a two-node Ray cluster (two raylets on this machine) that it reaches through ``RAY_ADDRESS``.

Everything runs in subprocesses: ``ray start --head`` and ``ray start --address``, each in a session of its own with
a private ``--temp-dir``, then ``ldeq train`` with ``RAY_ADDRESS`` and a custom resource ``trainer_slot`` (one per
node, one per worker) that forces the two DDP workers onto different nodes. This process never calls ``ray.init``,
and the subprocesses get no ``RAY_*`` variable of it, so a session cluster of the ``ray_local`` fixture is neither
used nor touched; teardown kills only the processes of the sessions started here (``ray stop`` would stop every Ray
process on the machine). The same commands are listed in docs/cluster.md."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from ldeq_shared.net import free_port
from pipelines.train.config import TrainConfig
from pipelines.train.trainer import build_trainer, ray_run_name
from tests.pipelines.train_helpers import TINY_MODEL, write_tiny_shards

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 90
TRAIN_TIMEOUT_S = 240


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any ``RAY_*`` variable (no reuse of an in-process cluster), plus
    ``extra``; token auth and usage stats off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", **extra)
    return env


def _our_pids(sessions: list[int], temp_dir: str) -> list[int]:
    """Live (non-zombie) processes of our ``ray start`` sessions, or whose command line names ``temp_dir``.

    ``ray start`` runs in a new session; its GCS, raylet, agents and dashboard stay in that process group, while
    the raylet starts each worker in a process group of its own but in the same session.
    """
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()  # state ppid pgrp session ...
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if stat[0] != "Z" and (int(stat[3]) in sessions or temp_dir.encode() in cmdline):
            pids.append(int(entry.name))
    return pids


@dataclass
class LocalCluster:
    """A head node and one more node started with ``ray start`` on this machine."""

    temp_dir: str
    address: str
    dashboard: str
    sessions: list[int] = field(default_factory=list)  # session ids = pids of our `ray start` processes

    def start_node(self, args: list[str], log: Path) -> None:
        """``ray start <args>`` in a new session (its GCS, raylet, agents and workers stay in that session)."""
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [str(BIN / "ray"), "start", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_clean_env(),
                start_new_session=True,
            )
            self.sessions.append(proc.pid)
            try:
                rc = proc.wait(timeout=START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"ray start {args[:2]} did not return in {START_TIMEOUT_S} s; see {log}") from None
        if rc != 0:
            raise RuntimeError(f"ray start {args[:2]} failed (exit {rc}):\n{log.read_text()[-3000:]}")

    def stop(self) -> list[int]:
        """SIGTERM, then SIGKILL, to every process of our sessions (see :func:`_our_pids`); returns the pids that
        survived (should be none). Scoped: ``ray stop`` would stop every Ray process on the machine."""
        for sig, wait_s in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            for pid in _our_pids(self.sessions, self.temp_dir):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait_s
            while _our_pids(self.sessions, self.temp_dir) and time.monotonic() < deadline:
                time.sleep(0.2)
        return _our_pids(self.sessions, self.temp_dir)


@pytest.fixture
def two_node_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """Head (1 CPU, ``trainer_slot: 1``, dashboard on 127.0.0.1) plus a second node (the same), all on loopback."""
    temp_dir = tempfile.mkdtemp(prefix="rmn", dir="/tmp")  # short: unix socket paths must stay under ~107 chars
    port, dash = free_port(), free_port()
    cluster = LocalCluster(temp_dir, f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}")
    common = [
        "--num-cpus=1",
        '--resources={"trainer_slot": 1}',
        "--node-ip-address=127.0.0.1",
        f"--temp-dir={temp_dir}",
        "--object-store-memory=200000000",
        "--disable-usage-stats",
    ]
    log = tmp_path / "ray_start.log"
    try:
        cluster.start_node(
            [
                "--head",
                f"--port={port}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dash}",
                f"--ray-client-server-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}",
                *common,
            ],
            log,
        )
        cluster.start_node(
            [f"--address={cluster.address}", f"--dashboard-agent-listen-port={free_port()}", *common], log
        )
        yield cluster
    finally:
        survivors = cluster.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not survivors, f"Ray processes of {temp_dir} still running: {survivors}"


def _cluster_nodes(cluster: LocalCluster) -> list[dict[str, object]]:
    """Alive nodes of the cluster from the state API (``ray list nodes``), through the dashboard."""
    out = subprocess.run(
        [str(BIN / "ray"), "list", "nodes", "--format=json", f"--address={cluster.dashboard}"],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [n for n in json.loads(out.stdout) if n["state"] == "ALIVE"]


def test_resources_per_worker_reach_the_scaling_config() -> None:
    cfg = TrainConfig().with_overrides(["resources_per_worker={trainer_slot: 1}", "cpus_per_worker=0.25"])
    trainer = build_trainer(cfg, {}, name="x", steps=1, mlflow_run_id=None)
    assert trainer.scaling_config.resources_per_worker == {"trainer_slot": 1, "CPU": 0.25}
    assert TrainConfig().with_overrides(["resources_per_worker.slot_b=2"]).resources_per_worker == {"slot_b": 2}
    assert ray_run_name(cfg, "data") == ray_run_name(TrainConfig(), "data")  # placement is not the trajectory
    gpu = build_trainer(
        TrainConfig(use_gpu=True, gpus_per_worker=0.5, resources_per_worker={"a": 1}),
        {},
        name="x",
        steps=1,
        mlflow_run_id=None,
    )
    assert gpu.scaling_config.resources_per_worker == {"a": 1, "CPU": 0.5, "GPU": 0.5}
    for bad, message in (
        ("{CPU: 1}", "cpus_per_worker"),
        ("{x: -1}", r"\.x: expected a number >= 0"),
        ("{x: abc}", r"\.x: expected a number"),
        ("3", r"train\.resources_per_worker: expected a mapping"),
    ):
        with pytest.raises(ValueError, match=message):
            TrainConfig().with_overrides([f"resources_per_worker={bad}"])


@pytest.mark.slow
def test_ldeq_train_spans_two_nodes_through_ray_address(two_node_cluster: LocalCluster, tmp_path: Path) -> None:
    t0 = time.monotonic()
    nodes = _cluster_nodes(two_node_cluster)
    assert len(nodes) == 2
    assert all(n["resources_total"].get("trainer_slot") == 1.0 for n in nodes)
    node_ids = {str(n["node_id"]) for n in nodes}
    t_nodes = time.monotonic() - t0

    shards = write_tiny_shards(tmp_path / "shards", n_train=32, n_val=8)
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "model": TINY_MODEL,
                "train": {
                    "run_name": "multinode",
                    "batch_size": 8,
                    "val_batch_size": 8,
                    "lr": 3e-3,
                    "warmup_epochs": 0.5,
                    "train_max_nfe": 2,
                    "materialize_train": True,
                    "mlflow_uri": "",
                    "registered_model": "",
                },
            }
        )
    )
    storage = tmp_path / "shared" / "ray_results"  # one file system for both "nodes" here; shared path in general
    cmd = [
        str(BIN / "ldeq"),
        "train",
        "--params",
        str(params),
        "--shards",
        str(shards),
        "--out",
        str(tmp_path / "out"),
        "--no-register",
        "--set",
        "num_workers=2",
        "--set",
        "cpus_per_worker=0.5",
        "--set",
        "resources_per_worker={trainer_slot: 1}",
        "--set",
        "epochs=2",
        "--set",
        f"storage_path={storage}",
    ]
    t1 = time.monotonic()
    run = subprocess.run(
        cmd,
        cwd=tmp_path,
        env=_clean_env(RAY_ADDRESS=two_node_cluster.address),
        capture_output=True,
        text=True,
        timeout=TRAIN_TIMEOUT_S,
    )
    t_train = time.monotonic() - t1
    assert run.returncode == 0, f"ldeq train failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    assert "2 epochs" in run.stdout and "on 2 workers" in run.stdout

    metrics = json.loads((tmp_path / "out" / "metrics" / "train.json").read_text())
    assert metrics["epochs"] == 2 and metrics["world_size"] == 2
    workers = metrics["worker_node_ids"]
    assert len(workers) == 2 and len(set(workers)) == 2 and metrics["worker_nodes"] == 2
    assert set(workers) == node_ids  # one worker on each raylet of *this* cluster (not a fresh local one)
    assert (tmp_path / "out" / "models" / "model.pt").stat().st_size > 0
    assert (tmp_path / "out" / "plots" / "train_curves.csv").read_text().count("\n") == 3  # header + 2 epochs
    runs = list(storage.glob("multinode-*"))
    assert len(runs) == 1 and list(runs[0].glob("checkpoint_*")), "no checkpoint in the shared storage path"
    print(
        f"\nworker node ids (rank order): {workers}; test body {time.monotonic() - t0:.1f} s "
        f"(ray list nodes {t_nodes:.1f} s, ldeq train {t_train:.1f} s)"
    )
