"""Ctrl-C during a folder job: the command stops, every finished row is on disk and whole, and
``--resume`` does the rest with no row twice.

The job runs in a subprocess (signals need a real process) over the tiny bundle, with each
image's decoding slowed down so that the workers are in the middle of a file when the signal
comes. Two ways the signal arrives: from a terminal (Ctrl-C reaches the whole process group,
the DataLoader workers too) and from ``kill -INT`` (the main process only).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import save_image

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

# The command line, with every image's decoding slowed down (inherited by forked workers).
SLOW_JOB = """
import sys, time
from captioner.data import images
decode = images.ImageFiles.__getitem__
def slowly(self, index):
    time.sleep(0.1)
    return decode(self, index)
images.ImageFiles.__getitem__ = slowly
from captioner.cli import console
sys.argv = ["captioner", *sys.argv[1:]]
sys.exit(console())
"""


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()]  # a torn row fails here


@pytest.mark.parametrize("sender", ["terminal", "kill"])
def test_ctrl_c_keeps_the_finished_rows_and_resume_does_the_rest(
    sender: str, tiny_bundle: Path, tmp_path: Path
) -> None:
    album = tmp_path / "album"
    images = [save_image(album / f"{i:03d}.jpg", seed=i) for i in range(80)]
    out = tmp_path / "captions.jsonl"
    args = ["caption", str(album), "--bundle", str(tiny_bundle), "--device", "cpu"]
    args += ["--batch-size", "2", "--workers", "2", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    job = subprocess.Popen(
        [sys.executable, "-c", SLOW_JOB, *args],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and out.stat().st_size) and job.poll() is None:
            assert time.monotonic() < deadline, "no row was written in 2 minutes"
            time.sleep(0.05)
        if sender == "terminal":
            os.killpg(job.pid, signal.SIGINT)
        else:
            job.send_signal(signal.SIGINT)
        err = job.communicate(timeout=60)[1]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 130, err
    assert "interrupted" in err
    assert "--resume" in err
    assert "Traceback" not in err
    first = _rows(out)
    assert 0 < len(first) < len(images), "the job was not stopped part-way"

    done = subprocess.run(
        [sys.executable, "-m", "captioner", *args, "--resume"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = _rows(out)
    assert rows[: len(first)] == first  # kept as they were
    assert sorted(r["path"] for r in rows) == [str(p) for p in images]  # each once
    assert all(r.get("caption") for r in rows)
