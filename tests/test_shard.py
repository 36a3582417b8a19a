"""Sharded batch runs (``--shard i/n``, torchrun ranks) and ``captioner merge``.

The promise under test: the merged parts are exactly the file one process writes on the same
inputs (same rows, same order, nothing twice, nothing missing).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch

import captioner.batch
from captioner.cli import main
from captioner.inference import ActivityClassifier
from captioner.shard import Shard
from captioner.video import DEFAULT_VIDEO_LIMITS
from tests.conftest import save_image


@pytest.fixture
def fast_load(monkeypatch, tiny_bundle, tiny_captioner):
    """Hand the CLI the session's loaded tiny model instead of rebuilding the encoder."""

    def load(bundle, device="auto"):
        assert Path(bundle) == tiny_bundle
        assert device == "cpu"
        return tiny_captioner

    monkeypatch.setattr(captioner.batch, "load", load)


@pytest.fixture
def inputs(tmp_path) -> list[str]:
    """Ten inputs in all: eight files (one unreadable) and two patterns that match nothing."""
    folder = tmp_path / "pics"
    for i in range(7):
        save_image(folder / f"{i:02d}.jpg", seed=i)
    (folder / "07-bad.jpg").write_text("not an image\n")
    return [str(folder), str(tmp_path / "none-*.jpg"), str(tmp_path / "gone" / "*.png")]


def caption(bundle: Path, *args: str) -> int:
    return main(["caption", "--bundle", str(bundle), "--device", "cpu", "--workers", "0", *args])


def merge(*args: str | Path) -> int:
    return main(["merge", *(str(a) for a in args)])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_jsonl(path: Path, paths: list[str]) -> Path:
    path.write_text("".join(json.dumps({"path": p, "caption": f"c {p}"}) + "\n" for p in paths))
    return path


def errors(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


# --------------------------------------------------------------------------- shards


@pytest.mark.parametrize("count", [1, 2, 3, 5])
@pytest.mark.parametrize("total", [0, 1, 4, 10])
def test_shards_are_contiguous_blocks_that_rebuild_the_list(total, count) -> None:
    unmatched = [f"missing-{i}" for i in range(total // 3)]
    paths = [Path(f"{i}.jpg") for i in range(total - len(unmatched))]
    blocks = [Shard(i, count).select(paths, unmatched) for i in range(count)]
    joined = [x for p, u in blocks for x in [*u, *p]]
    assert joined == [*unmatched, *paths]
    sizes = [len(p) + len(u) for p, u in blocks]
    assert max(sizes) - min(sizes) <= 1


def test_part_names_put_the_shard_before_the_suffix(tmp_path) -> None:
    assert Shard(0, 3).part_path(tmp_path / "captions.jsonl") == (
        tmp_path / "captions.part-0-of-3.jsonl"
    )
    assert Shard(11, 12).part_path("out/labels.csv") == Path("out/labels.part-11-of-12.csv")


@pytest.mark.parametrize(
    ("value", "message"),
    [("3/3", "shard 3/3 does not exist"), ("1/0", "does not exist"), ("a/b", "expected i/n")],
)
def test_bad_shard_values_exit_2_with_a_message(tiny_bundle, tmp_path, capsys, value, message):
    for arg in (["--shard", value], [f"--shard={value}"]):
        with pytest.raises(SystemExit) as exc:
            caption(tiny_bundle, str(tmp_path), *arg)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "argument --shard" in err
        assert message in err
        assert "Traceback" not in err


def test_a_negative_shard_exits_2_with_a_message(tiny_bundle, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        caption(tiny_bundle, str(tmp_path), "--shard=-1/2")
    assert exc.value.code == 2
    assert "expected i/n with 0 <= i < n" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_three_shards_merged_equal_a_single_run(fast_load, tiny_bundle, inputs, tmp_path, suffix):
    single = tmp_path / f"single{suffix}"
    assert caption(tiny_bundle, *inputs, "--batch-size", "2", "--out", str(single)) == 0
    out = tmp_path / "out" / f"captions{suffix}"
    for i in range(3):
        argv = [*inputs, "--batch-size", "2", "--out", str(out), "--shard", f"{i}/3"]
        assert caption(tiny_bundle, *argv) == 0
    parts = sorted(p.name for p in out.parent.iterdir())
    assert parts == [f"captions.part-{i}-of-3{suffix}" for i in range(3)]
    assert not out.exists()  # a shard writes only its own part

    merged = tmp_path / f"merged{suffix}"
    assert merge(out.parent / f"captions.part-*{suffix}", "--out", merged) == 0
    assert merged.read_bytes() == single.read_bytes()
    assert single.read_text().count("\n") == (11 if suffix == ".csv" else 10)  # (header +) rows


def test_an_interrupted_shard_resumes_and_the_merge_equals_a_single_run(
    fast_load, tiny_bundle, inputs, tmp_path, caplog
) -> None:
    single = tmp_path / "single.jsonl"
    assert caption(tiny_bundle, *inputs, "--out", str(single)) == 0
    out = tmp_path / "captions.jsonl"
    for i in range(3):
        assert caption(tiny_bundle, *inputs, "--out", str(out), "--shard", f"{i}/3") == 0

    # Shard 1 killed mid-write: one finished row (marked, so a redo would show) and a torn one.
    part = Shard(1, 3).part_path(out)
    rows = read_jsonl(part)
    assert len(rows) == 3
    rows[0]["caption"] = "SENTINEL from before the interruption"
    torn = json.dumps(rows[1])
    part.write_text(json.dumps(rows[0]) + "\n" + torn[: len(torn) // 2])

    argv = [*inputs, "--out", str(out), "--shard", "1/3", "--resume"]
    with caplog.at_level(logging.WARNING):
        assert caption(tiny_bundle, *argv) == 0
    assert "partly written row" in caplog.text
    merged = tmp_path / "merged.jsonl"
    assert merge(*(Shard(i, 3).part_path(out) for i in range(3)), "--out", merged) == 0

    expected = read_jsonl(single)
    assert expected[3]["path"] == rows[0]["path"]  # shard 1 starts at item 3 of 10
    expected[3]["caption"] = rows[0]["caption"]
    assert read_jsonl(merged) == expected


def test_activity_shards_the_same_way(monkeypatch, tmp_path) -> None:
    fake = mock.MagicMock(spec=ActivityClassifier)
    fake.device, fake.num_frames, fake.size = torch.device("cpu"), 4, 32
    fake.limits = DEFAULT_VIDEO_LIMITS
    monkeypatch.setattr(captioner.batch, "load", lambda bundle, device="auto": fake)
    videos = [str(tmp_path / f"missing-{i}.mp4") for i in range(5)]
    argv = ["activity", *videos, "--workers", "0", "--device", "cpu"]
    single, out = tmp_path / "single.jsonl", tmp_path / "labels.jsonl"
    assert main([*argv, "--out", str(single)]) == 1  # nothing could be labelled
    for i in range(3):
        assert main([*argv, "--out", str(out), "--shard", f"{i}/3"]) == 1
    assert merge(tmp_path / "labels.part-*.jsonl", "--out", tmp_path / "merged.jsonl") == 0
    assert (tmp_path / "merged.jsonl").read_bytes() == single.read_bytes()
    assert [r["path"] for r in read_jsonl(single)] == videos


# --------------------------------------------------------------------------- merge


def test_merge_orders_parts_by_index_not_by_name(tmp_path) -> None:
    for i in range(12):  # part-10 and part-11 sort before part-2 as text
        write_jsonl(tmp_path / f"c.part-{i}-of-12.jsonl", [f"{i}a.jpg", f"{i}b.jpg"])
    expected = [f"{i}{x}.jpg" for i in range(12) for x in "ab"]
    for given in ([tmp_path / "c.part-*.jsonl"], sorted(tmp_path.glob("*.jsonl"), reverse=True)):
        out = tmp_path / "merged" / "all.jsonl"
        assert merge(*given, "--out", out) == 0
        assert [r["path"] for r in read_jsonl(out)] == expected


def test_merge_cuts_a_torn_last_row_and_warns(tmp_path, caplog) -> None:
    write_jsonl(tmp_path / "c.part-0-of-2.jsonl", ["a.jpg", "b.jpg"])
    torn = tmp_path / "c.part-1-of-2.jsonl"
    write_jsonl(torn, ["c.jpg"])
    with torn.open("a") as f:
        f.write('{"path": "d.jpg", "capt')
    with caplog.at_level(logging.WARNING):
        assert merge(tmp_path / "c.part-*.jsonl", "--out", tmp_path / "m.jsonl") == 0
    assert [r["path"] for r in read_jsonl(tmp_path / "m.jsonl")] == ["a.jpg", "b.jpg", "c.jpg"]
    assert "c.part-1-of-2.jsonl" in caplog.text
    assert "--resume" in caplog.text
    assert torn.read_text().endswith("\n")  # repaired, ready for --resume


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ({"c.part-0-of-3.jsonl": ["a"], "c.part-2-of-3.jsonl": ["c"]}, "part 1 of 3 is missing"),
        ({"c.part-0-of-4.jsonl": ["a"]}, "parts 1, 2, 3 of 4 are missing"),
        ({"c.part-0-of-2.jsonl": ["a"], "c.part-1-of-3.jsonl": ["b"]}, "different shardings"),
        ({"c.part-0-of-2.jsonl": ["a", "x"], "c.part-1-of-2.jsonl": ["x"]}, "x is recorded in"),
        ({"c.part-0-of-2.jsonl": ["a"], "c.part-1-of-2.csv": ["b"]}, "CSV parts with JSONL"),
        ({"c.part-0-of-2.jsonl": ["a"], "d.part-1-of-2.jsonl": ["b"]}, "different outputs"),
        ({"captions.jsonl": ["a"]}, "not a part file"),
    ],
)
def test_merge_refusals_exit_2_and_write_nothing(tmp_path, caplog, parts, message) -> None:
    for name, paths in parts.items():
        write_jsonl(tmp_path / name, paths)
    out = tmp_path / "merged" / "m.jsonl"
    assert merge(*(tmp_path / n for n in parts), "--out", out) == 2
    assert message in errors(caplog)
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_merge_refuses_an_out_of_another_format_or_no_parts(tmp_path, caplog) -> None:
    write_jsonl(tmp_path / "c.part-0-of-1.jsonl", ["a"])
    assert merge(tmp_path / "c.part-0-of-1.jsonl", "--out", tmp_path / "m.csv") == 2
    assert "--out must be a .jsonl file" in errors(caplog)
    assert merge(tmp_path / "nothing.part-*.jsonl", "--out", tmp_path / "m.jsonl") == 2
    assert "no part files match" in errors(caplog)
    assert not (tmp_path / "m.csv").exists()
    assert not (tmp_path / "m.jsonl").exists()


# --------------------------------------------------------------------------- torchrun


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_environment_writes_a_part_and_merges(
    fast_load, tiny_bundle, inputs, tmp_path, monkeypatch
) -> None:
    """World size 1 in this process: the same path as torchrun's ranks, without a launcher."""
    single = tmp_path / "single.jsonl"
    assert caption(tiny_bundle, *inputs, "--out", str(single)) == 0
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    for key, value in {**env, "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "captions.jsonl"
    assert caption(tiny_bundle, *inputs, "--out", str(out)) == 0
    assert out.read_bytes() == single.read_bytes()
    assert (tmp_path / "captions.part-0-of-1.jsonl").read_bytes() == single.read_bytes()
    assert not torch.distributed.is_initialized()


def test_torchrun_without_out_exits_2(fast_load, tiny_bundle, inputs, monkeypatch, caplog) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert caption(tiny_bundle, *inputs) == 2
    assert "under torchrun --out FILE is required" in errors(caplog)


@pytest.mark.slow
def test_torchrun_two_ranks_equal_a_single_run(fast_load, tiny_bundle, inputs, tmp_path) -> None:
    single = tmp_path / "single.jsonl"
    assert caption(tiny_bundle, *inputs, "--out", str(single)) == 0
    out = tmp_path / "captions.jsonl"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command = ["--nproc_per_node=2", "-m", "captioner", "caption", *inputs, "--out", str(out)]
    command += ["--bundle", str(tiny_bundle), "--device", "cpu", "--workers", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    done = subprocess.run(
        [*launcher, *command], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.read_bytes() == single.read_bytes()
    for i in range(2):
        assert Shard(i, 2).part_path(out).stat().st_size > 0
    assert "merged 2 parts (10 rows)" in done.stderr


@pytest.mark.slow
def test_two_nodes_on_localhost_equal_a_single_run(fast_load, tiny_bundle, inputs, tmp_path):
    """torchrun --nnodes 2 with the c10d rendezvous, both "nodes" on this machine."""
    single = tmp_path / "single.jsonl"
    assert caption(tiny_bundle, *inputs, "--out", str(single)) == 0
    out = tmp_path / "captions.jsonl"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1"]
    launcher += ["--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}"]
    launcher += ["--rdzv-id=two-nodes"]
    command = ["-m", "captioner", "caption", *inputs, "--out", str(out)]
    command += ["--bundle", str(tiny_bundle), "--device", "cpu", "--workers", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    nodes = [
        subprocess.Popen(
            [*launcher, *command], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    errs = [node.communicate(timeout=300)[1] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [e[-2000:] for e in errs]
    assert out.read_bytes() == single.read_bytes()
    assert any("merged 2 parts (10 rows)" in e for e in errs)
