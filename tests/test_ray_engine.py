"""Folder jobs on a real local Ray (``--engine ray``): the same rows as the local job, row for
row, on a mixed folder; the predictor classes inside a user's own Ray Data pipeline; resume;
and a clear word when Ray is not installed."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from captioner.cli import main
from tests.conftest import save_image
from tests.service_helpers import EXAMPLES, png_bomb

ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """Good images, a junk file, an empty file and a decompression bomb, in a nested folder."""
    root = tmp_path_factory.mktemp("mixed")
    for k in range(5):
        save_image(root / f"img{k}.jpg", seed=k)
    (root / "sub").mkdir()
    shutil.copy(EXAMPLES / "photo-chelsea.jpg", root / "sub" / "chelsea.jpg")
    (root / "junk.jpg").write_bytes(b"this is not an image")
    (root / "empty.png").write_bytes(b"")
    (root / "bomb.png").write_bytes(png_bomb())
    return root


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _same(a, b) -> bool:
    """Equal rows, scores within 1e-3: Ray's actors may run other thread counts, which moves a
    score's last printed digit now and then, never a word."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and abs(a - b) <= 1e-3
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


def test_ray_rows_equal_the_local_jobs_row_for_row(local_ray, mixed: Path, tmp_path: Path) -> None:
    local, remote = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    common = ["caption", str(mixed), "--batch-size", "3", "-q"]
    assert main([*common, "--out", str(local), "--workers", "0"]) == 0
    assert main([*common, "--out", str(remote), "--engine", "ray", "--concurrency", "2"]) == 0
    rows = _rows(remote)
    assert _same(rows, _rows(local)), (rows, _rows(local))
    assert len(rows) == 9  # one row per input, each with its own path
    assert len({r["path"] for r in rows}) == 9
    errors = {Path(r["path"]).name: r["error"] for r in rows if "error" in r}
    assert set(errors) == {"junk.jpg", "empty.png", "bomb.png"}
    assert "pixels" in errors["bomb.png"] or "large" in errors["bomb.png"], errors["bomb.png"]
    assert all(r["caption"] for r in rows if "error" not in r)


def test_ray_resume_skips_finished_paths(local_ray, mixed: Path, tmp_path: Path) -> None:
    out = tmp_path / "part.jsonl"
    full = tmp_path / "full.jsonl"
    common = ["caption", str(mixed), "--engine", "ray", "-q"]
    assert main([*common, "--out", str(full)]) == 0
    first = _rows(full)[:4]
    out.write_text("".join(json.dumps(r) + "\n" for r in first))
    assert main([*common, "--out", str(out), "--resume"]) == 0
    rows = _rows(out)
    assert rows[:4] == first  # kept as they were
    assert len(rows) == len(_rows(full))
    assert sorted(r["path"] for r in rows) == sorted(r["path"] for r in _rows(full))


def test_videos_on_ray_equal_the_local_job(local_ray, tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    for clip in sorted(EXAMPLES.glob("clip-*.webm"))[:2]:
        shutil.copy(clip, videos / clip.name)
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    local, remote = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    common = ["activity", str(videos), "-q"]
    assert main([*common, "--out", str(local), "--workers", "0"]) == 0
    assert main([*common, "--out", str(remote), "--engine", "ray"]) == 0
    rows = _rows(remote)
    assert _same(rows, _rows(local)), (rows, _rows(local))
    assert [("error" in r) for r in rows] == [True, False, False]  # broken.mp4 sorts first
    assert all(r["description"]["source"] == "motion-default" for r in rows if "error" not in r)


def test_the_predictor_runs_in_a_users_own_pipeline(local_ray, mixed: Path) -> None:
    from captioner.engines.ray_data import CaptionPredictor

    paths = sorted(str(p) for p in mixed.glob("img*.jpg"))
    ds = ray.data.from_items([{"path": p} for p in paths])
    out = ds.map_batches(
        CaptionPredictor,
        fn_constructor_kwargs={"device": "cpu"},
        batch_size=2,
        compute=ray.data.ActorPoolStrategy(size=1),
    ).take_all()
    records = {row["path"]: json.loads(row["record"]) for row in out}
    assert sorted(records) == paths
    assert all(rec["path"] == path and rec["caption"] for path, rec in records.items())


def test_without_ray_the_command_says_which_extra(monkeypatch, mixed: Path, caplog) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(["caption", str(mixed), "--engine", "ray", "-q"]) == 2
    assert "captioner[ray]" in caplog.text


def test_an_address_where_nothing_listens_fails_in_seconds(mixed: Path, tmp_path, caplog) -> None:
    import time

    from tests.service_helpers import free_port

    start = time.monotonic()
    address = f"127.0.0.1:{free_port()}"
    out = tmp_path / "kept.jsonl"
    out.write_text('{"path": "earlier.jpg", "caption": "a row from an earlier run"}\n')
    argv = ["caption", str(mixed), "--engine", "ray", "--address", address, "--out", str(out)]
    assert main([*argv, "-q"]) == 2
    assert time.monotonic() - start < 60  # Ray alone retries for about 5 minutes
    assert f"nothing answers at the Ray address {address}" in caplog.text
    assert "earlier run" in out.read_text()  # refused before the output was opened


def test_ray_options_need_the_ray_engine(mixed: Path, caplog) -> None:
    assert main(["caption", str(mixed), "--address", "auto", "-q"]) == 2
    assert "--engine ray" in caplog.text
    assert main(["caption", str(mixed), "--engine", "ray", "--shard", "1/2", "-q"]) == 2


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds Ray's workers in /proc")
def test_a_model_actor_killed_mid_job_is_retried_and_no_row_is_lost(
    local_ray, tmp_path: Path
) -> None:
    import os
    import signal
    import threading

    folder = tmp_path / "many"
    folder.mkdir()
    for k in range(24):
        save_image(folder / f"img{k:02d}.jpg", seed=100 + k)
    local, remote = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    common = ["caption", str(folder), "--batch-size", "2", "-q"]
    assert main([*common, "--out", str(local), "--workers", "0"]) == 0
    killed: list[int] = []

    def kill_the_model_actor_once_rows_flow() -> None:
        for _ in range(1200):
            if remote.is_file() and remote.read_text().count("\n") >= 2:
                for proc in Path("/proc").glob("[0-9]*"):  # Ray titles its worker processes
                    try:
                        title = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
                        if b"JobPredictor" in title:
                            os.kill(int(proc.name), signal.SIGKILL)
                            killed.append(int(proc.name))
                    except (OSError, ValueError):
                        continue
                return
            threading.Event().wait(0.05)

    killer = threading.Thread(target=kill_the_model_actor_once_rows_flow)
    killer.start()
    assert main([*common, "--out", str(remote), "--engine", "ray"]) == 0
    killer.join()
    assert killed, "no model actor was found to kill"
    rows = _rows(remote)
    assert [r["path"] for r in rows] == [r["path"] for r in _rows(local)]  # none lost, none twice
    assert _same(rows, _rows(local))
