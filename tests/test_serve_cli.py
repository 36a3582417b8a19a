"""`captioner serve` as a user runs it: a real process, a real port, a caption, a clean SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import captioner
from tests.service_helpers import EXAMPLES, ROOT, free_port

pytestmark = pytest.mark.slow

SCENE = EXAMPLES / "scene-0.jpg"
HAS_ACTIVITY = (captioner.default_bundle_dir("activity") / "manifest.json").is_file()
STOP_BOUND_S = 20  # a hang guard, not a speed requirement (it takes well under a second)


def _env() -> dict[str, str]:
    """The test's environment without service settings the user may have exported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPTIONER_")}
    if "CAPTIONER_CACHE" in os.environ:
        env["CAPTIONER_CACHE"] = os.environ["CAPTIONER_CACHE"]
    return env


def _serve(*args: str, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "captioner", "serve", *args]
    # A file, not a pipe: nobody reads while the server runs, and a full pipe would block it.
    with log.open("wb") as out:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT, text=False
        )


def _serve_to_exit(*args: str, log: Path) -> tuple[int, str]:
    """Run ``captioner serve`` that is expected to stop by itself -> (exit status, its output)."""
    proc = _serve(*args, log=log)
    try:
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return code, log.read_text()


def _wait_ready(proc: subprocess.Popen, base: str, log: Path, timeout_s: float = 180.0) -> None:
    """Poll /readyz; fail early with the log if the process dies first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve exited {proc.returncode} before ready:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"serve not ready after {timeout_s} s:\n{log.read_text()}")


Served = tuple[subprocess.Popen, str, Path]  # the process, its base URL, its log file


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    args = ["--port", str(port), "--device", "cpu", "--max-wait-ms", "2"]
    proc = _serve(*args, *([] if HAS_ACTIVITY else ["--no-activity"]), log=log)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(proc, base, log)
        yield proc, base, log
    finally:
        if proc.poll() is None:  # a failed test above must not leave a server behind
            proc.kill()
            proc.wait(timeout=30)


def test_serve_captions_like_the_library_and_serves_the_page(served: Served) -> None:
    _, base, _ = served
    files = {"file": (SCENE.name, SCENE.read_bytes(), "image/jpeg")}
    r = httpx.post(f"{base}/v1/caption", files=files, timeout=60, headers={"X-Request-ID": "t-1"})
    assert r.status_code == 200, r.text
    assert r.headers["X-Request-ID"] == "t-1"
    expected = captioner.load(device="cpu").caption(SCENE.read_bytes())
    assert r.json()["results"][0]["caption"] == expected.caption
    page = httpx.get(f"{base}/", timeout=30)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "<html" in page.text.lower()
    models = httpx.get(f"{base}/readyz", timeout=30).json()["models"]
    assert ("activity" in models) == HAS_ACTIVITY


def test_sigterm_exits_cleanly(served: Served) -> None:
    proc, base, log = served
    # An idle keep-alive connection must not hold the shutdown up.
    with httpx.Client(base_url=base, timeout=5) as client:
        assert client.get("/healthz").status_code == 200
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=STOP_BOUND_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve still running {STOP_BOUND_S} s after SIGTERM:\n{log.read_text()}")
    output = log.read_text()
    assert code == 0, f"exit code {code}:\n{output}"
    assert "stopped (SIGTERM); exit status 0" in output, output
    assert "Traceback" not in output, output
    # One access line per request, with its id (uvicorn's own access log is off).
    access = [line for line in output.splitlines() if "captioner.access" in line]
    assert any('"POST /v1/caption HTTP/1.1" 200' in x and "request_id=t-1" in x for x in access)
    assert not any(' - "GET /healthz HTTP/1.1" 200 OK' in x for x in output.splitlines())
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/healthz", timeout=5)


def test_a_taken_port_exits_3_before_loading_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, output = _serve_to_exit(
            "--port", str(port), "--device", "cpu", log=tmp_path / "taken.log"
        )
    assert code == 3, f"exit code {code}:\n{output}"
    assert output.strip() == (
        f"captioner serve: port {port} is already in use on 127.0.0.1: stop the other server "
        "or choose another port with --port"
    )


def test_bad_setting_exits_2_naming_it_without_serving(tmp_path: Path) -> None:
    port = free_port()
    code, output = _serve_to_exit(
        "--port", str(port), "--max-wait-ms", "-5", log=tmp_path / "bad.log"
    )
    assert code == 2, f"exit code {code}:\n{output}"
    assert "max_wait_ms" in output, output
    assert "Traceback" not in output, output
    assert "Uvicorn running" not in output, output
    assert "Started server process" not in output, output
