"""`--engine ray --address` on a 2-node Ray cluster made on this machine: `ray start --head`
plus a second `ray start --address`, both on 127.0.0.1, one CPU each, so the two model actors
land on different nodes. The command runs as a user would, in its own process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import save_image
from tests.service_helpers import free_port

pytest.importorskip("ray", reason="the [ray] extra is not installed")

pytestmark = pytest.mark.slow

RAY = Path(sys.executable).with_name("ray")


def _ray(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(RAY), *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def two_nodes():
    # A cluster of our own on loopback: no auth token to hand around, no LAN address
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    address = f"127.0.0.1:{free_port()}"
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    head = _ray("start", "--head", f"--port={address.split(':')[1]}", "--include-dashboard=false",
                *common, env=env)  # fmt: skip
    assert head.returncode == 0, head.stderr[-2000:]
    try:
        worker = _ray("start", f"--address={address}", *common, env=env)
        assert worker.returncode == 0, worker.stderr[-2000:]
        yield address, env
    finally:
        _ray("stop", "--force", env=env)


def test_a_two_node_cluster_writes_the_local_jobs_rows(two_nodes, tmp_path: Path) -> None:
    address, env = two_nodes
    status = _ray("status", f"--address={address}", env=env)
    assert status.stdout.count(" node_") == 2, status.stdout  # both nodes joined
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(8):
        save_image(folder / f"img{k}.jpg", seed=200 + k)
    (folder / "junk.jpg").write_bytes(b"not an image")
    shutil.copy(folder / "img0.jpg", folder / "copy.jpg")
    local, remote = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    base = [sys.executable, "-m", "captioner", "-q", "caption", str(folder), "--batch-size", "2"]
    done = subprocess.run([*base, "--out", str(local), "--workers", "0"], timeout=180, env=env)
    assert done.returncode == 0
    ray_args = ["--engine", "ray", "--address", address, "--concurrency", "2", "--workers", "1"]
    done = subprocess.run(
        [*base, "--out", str(remote), *ray_args], timeout=180, env=env, capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in remote.read_text().splitlines()]
    want = [json.loads(line) for line in local.read_text().splitlines()]
    assert [r["path"] for r in rows] == [r["path"] for r in want]
    assert [r.get("caption") or r["error"] for r in rows] == [
        r.get("caption") or r["error"] for r in want
    ]
