"""Slow and hostile clients: trickling bodies, guessed API keys, short keys, long videos.

The live tests run the real app under uvicorn on loopback with the tiny seeded caption bundle
(loaded in well under a second); client addresses are told apart by binding the client's end
to other loopback addresses (127.0.0.x), which Linux routes to the server like any other.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from captioner import ActivityClassifier
from captioner.encoders import TOY_FEATURE_DIM, build_encoder
from captioner.models.activity import ActivityModel, ActivityModelConfig
from captioner.video import DEFAULT_VIDEO_LIMITS
from service import serve
from service.app import create_app
from service.clients import AuthThrottle, UploadClock
from service.runtime import LoadedModels
from service.settings import VIDEO_DECODE_PIXELS, Settings
from service.uploads import IdleTrim
from tests.service_helpers import client_for, jpeg_bytes, live_server

KEY = "a-key-of-twenty-chars"
GRACE_S, MIN_RATE_KB_S, BODY_TIMEOUT_S = 0.5, 64.0, 6.0
AUTH_FAILURES = 5


# ------------------------------------------------------------------------------ arithmetic


def test_upload_clock_cuts_a_trickle_after_the_grace_and_anything_at_the_deadline() -> None:
    clock = UploadClock(started=100.0, deadline_s=30.0, min_rate=1000.0, grace_s=5.0)
    assert clock.time_left(0, 100.0) == pytest.approx(5.0)  # the grace period
    assert clock.time_left(2000, 106.0) == pytest.approx(1.0)  # 2 KB buys 2 s past the grace
    assert clock.time_left(2000, 108.0) < 0
    assert "too slowly" in clock.why(2000)
    assert clock.time_left(10**9, 100.0) == pytest.approx(30.0)  # fast: the deadline is the cap
    assert "within 30 s" in clock.why(10**9)
    no_rate = UploadClock(started=0.0, deadline_s=3.0, min_rate=0.0, grace_s=0.0)
    assert no_rate.time_left(0, 2.0) == pytest.approx(1.0)


def test_auth_throttle_blocks_an_address_after_n_failures_for_the_window(caplog) -> None:
    now = [0.0]
    throttle = AuthThrottle(limit=3, window_s=60.0, max_addresses=2, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="captioner.service"):
        assert [throttle.failed("a") for _ in range(3)] == [False, False, True]
        assert throttle.retry_after_s("a") == pytest.approx(60.0)
        assert throttle.retry_after_s("b") == 0.0
        now[0] = 59.0
        assert throttle.retry_after_s("a") == pytest.approx(1.0)
        now[0] = 61.0
        assert throttle.retry_after_s("a") == 0.0
    assert len([r for r in caplog.records if "wrong or missing API keys" in r.message]) == 1
    throttle.failed("x")
    now[0] = 200.0  # failures older than the window no longer count
    assert [throttle.failed("x") for _ in range(2)] == [False, False]
    for address in ("p", "q", "r"):  # the table stays within max_addresses
        throttle.failed(address)
    assert len(throttle._failures) <= 2


def test_the_settings_cap_is_the_librarys_default() -> None:
    assert DEFAULT_VIDEO_LIMITS.max_decode_pixels == VIDEO_DECODE_PIXELS


# -------------------------------------------------------------------------- short API keys


def test_a_key_under_16_characters_is_refused_without_repeating_it(capsys, monkeypatch) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(api_key="fifteen-chars!!")
    assert "at least 16" in str(info.value)
    assert "fifteen-chars!!" not in str(info.value)
    assert Settings(api_key="sixteen-chars!!!").api_key == "sixteen-chars!!!"
    for key in [k for k in os.environ if k.startswith("CAPTIONER_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CAPTIONER_API_KEY", "short-key")
    assert serve.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "CAPTIONER_API_KEY is 9 characters; it must be at least 16" in err
    assert "short-key" not in err


# ------------------------------------------------------------------------ live: uploads, keys


@pytest.fixture(scope="module")
def server(tiny_bundle: Path) -> Iterator[str]:
    settings = Settings(
        device="cpu",
        caption_bundle=str(tiny_bundle),
        enable_activity=False,
        max_wait_ms=1.0,
        max_inflight=1,
        api_key=KEY,
        auth_failures=AUTH_FAILURES,
        auth_window_s=30.0,
        body_timeout_s=BODY_TIMEOUT_S,
        upload_grace_s=GRACE_S,
        min_upload_rate_kb_s=MIN_RATE_KB_S,
    )
    with live_server(settings) as (base, _):
        yield base


def _client(address: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30)


def _caption(client: httpx.Client, base: str, key: str) -> httpx.Response:
    files = {"file": ("a.jpg", jpeg_bytes(1), "image/jpeg")}
    return client.post(f"{base}/v1/caption", files=files, headers={"X-API-Key": key})


def _trickle(base: str, stop: threading.Event) -> socket.socket:
    """A connection that announces a 2 MB upload and sends a byte every 0.1 s until ``stop``."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=BODY_TIMEOUT_S * 3)
    head = (
        f"POST /v1/caption HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {KEY}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 2000000\r\n\r\n"
        '--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
    )
    sock.sendall(head.encode())

    def drip() -> None:
        while not stop.wait(0.1):
            try:
                sock.sendall(b"x")
            except OSError:
                return

    threading.Thread(target=drip, daemon=True).start()
    return sock


def _answer(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_a_trickling_body_gets_408_and_holds_no_admission_slot(server: str) -> None:
    stop = threading.Event()
    start = time.monotonic()
    socks = [_trickle(server, stop) for _ in range(3)]  # more than max_inflight (1)
    try:
        time.sleep(0.2)  # they are uploading now
        with _client("127.0.0.1") as client:
            for _ in range(2):
                r = _caption(client, server, KEY)
                assert r.status_code == 200, r.text
        answers = [_answer(sock) for sock in socks]
    finally:
        stop.set()
        for sock in socks:
            sock.close()
    took = time.monotonic() - start
    for status, body in answers:
        assert status == 408
        assert "too slowly" in body["detail"]
        assert set(body) == {"detail"}
    assert took < BODY_TIMEOUT_S  # cut by the rate, well before the deadline


def test_wrong_keys_from_one_address_get_429_while_another_address_gets_in(
    server: str, caplog
) -> None:
    log = caplog.at_level(logging.WARNING, logger="captioner.service")
    with log, _client("127.0.0.3") as guesser, _client("127.0.0.4") as other:
        codes = [
            _caption(guesser, server, f"guess-{i:016d}").status_code for i in range(AUTH_FAILURES)
        ]
        assert codes == [401] * AUTH_FAILURES
        blocked = _caption(guesser, server, "guess-once-more-0000")
        assert blocked.status_code == 429
        assert 1 <= int(blocked.headers["Retry-After"]) <= 30
        assert "wrong API keys" in blocked.json()["detail"]
        assert _caption(guesser, server, KEY).status_code == 429  # blocked whatever it sends
        for _ in range(10):
            assert _caption(guesser, server, "still-guessing-0000").status_code == 429
        r = _caption(other, server, KEY)
        assert r.status_code == 200, r.text
        assert _caption(other, server, "one-typo-in-the-key-x").status_code == 401
    warnings = [r for r in caplog.records if "wrong or missing API keys" in r.getMessage()]
    assert len(warnings) == 1
    assert "127.0.0.3" in warnings[0].getMessage()


# ------------------------------------------------------------------------------------ videos


def test_an_image_is_answered_while_a_video_decodes(tiny_captioner) -> None:
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow_video(should_stop) -> str:  # stands in for a long video decode
        started.set()
        release.wait(30)
        finished.set()
        return "decoded"

    async def here() -> bool:
        return False

    request = SimpleNamespace(state=SimpleNamespace(arrived=time.perf_counter()))
    request.is_disconnected = here
    with client_for(tiny_captioner, decode_workers=1, video_workers=1) as c:
        runtime = c.app.state.runtime
        video = c.portal.start_task_soon(runtime.decode_video, slow_video, request)
        assert started.wait(10)
        files = {"file": ("a.jpg", jpeg_bytes(2), "image/jpeg")}
        r = c.post("/v1/caption", files=files)
        assert r.status_code == 200, r.text
        assert not finished.is_set()  # the image did not wait for the video
        release.set()
        assert video.result(timeout=30)[0] == "decoded"


def _clip(path: Path, frames: int, side: int = 32, fps: float = 25.0) -> bytes:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (side, side))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))
    writer.release()
    return path.read_bytes()


@pytest.fixture(scope="module")
def tiny_activity() -> ActivityClassifier:
    config = ActivityModelConfig(
        num_classes=2, feature_dim=TOY_FEATURE_DIM, cell_dim=4, embed_dim=8, hidden_dim=8
    )
    return ActivityClassifier(build_encoder("toy"), ActivityModel(config), ["a", "b"], device="cpu")


def test_a_video_over_the_decode_cap_is_refused_from_its_header(
    tiny_activity: ActivityClassifier, tmp_path: Path, monkeypatch
) -> None:
    long = _clip(tmp_path / "long.mp4", 600)  # 24 s: 600 x 32 x 32 = 614,400 pixels
    short = _clip(tmp_path / "short.mp4", 40)  # 40,960 pixels
    decoded: list[str] = []
    prepare = tiny_activity.prepare

    def recorded(source, *args, **kwargs):
        decoded.append(str(source))
        return prepare(source, *args, **kwargs)

    monkeypatch.setattr(tiny_activity, "prepare", recorded)
    settings = Settings(device="cpu", enable_caption=False, max_video_decode_pixels=100_000)
    app = create_app(settings, models=LoadedModels(activity=tiny_activity))
    with TestClient(app) as c:
        start = time.monotonic()
        r = c.post("/v1/activity", files={"file": ("long.mp4", long, "video/mp4")})
        assert r.status_code == 422, r.text
        assert "600 frames of 32x32" in r.json()["detail"]
        assert "above this server's 1e+05" in r.json()["detail"]
        assert decoded == []  # refused before any decoding
        assert time.monotonic() - start < 10
        files = [("file", ("long.mp4", long, "video/mp4")), ("file", ("short.mp4", short))]
        r = c.post("/v1/activity", files=files)
        assert r.status_code == 200, r.text
        refused, labelled = r.json()["results"]
        assert "600 frames" in refused["error"]
        assert labelled["label"] in ("a", "b")
        assert len(decoded) == 1
        metrics = c.get("/metrics").text
        assert 'captioner_rejections_total{reason="video_header"} 2.0' in metrics


# ------------------------------------------------------------------------------------ memory


def test_memory_is_trimmed_once_after_a_burst_when_idle() -> None:
    import asyncio

    busy = [True]
    idle = IdleTrim(0.1, lambda: busy[0])

    async def scenario() -> list[int]:
        task = asyncio.create_task(idle.run())
        seen = []
        idle.done()
        await asyncio.sleep(0.3)
        seen.append(idle.trims)  # still busy: no trim
        busy[0] = False
        await asyncio.sleep(0.4)
        seen.append(idle.trims)  # idle after work: one trim
        await asyncio.sleep(0.4)
        seen.append(idle.trims)  # nothing new happened: no second trim
        task.cancel()
        return seen

    assert asyncio.run(scenario()) == [0, 1, 1]


# ------------------------------------------------------------------------- the gate's counts


def test_a_body_that_completes_when_the_slots_are_full_gets_429_and_counts_return() -> None:
    import asyncio

    from service.metrics import Metrics
    from service.middleware import UploadGate
    from service.runtime import Runtime

    runtime = Runtime(Settings(device="cpu", max_inflight=1, max_uploads=2), Metrics())
    runtime.ready = True
    seen: list[tuple[int, int]] = []

    async def app(scope, receive, send) -> None:  # reads the body as a route would
        while (await receive()).get("more_body"):
            pass
        seen.append((runtime.uploading, runtime.inflight))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def receiver(taken_meanwhile: bool):
        chunks = [{"type": "http.request", "body": b"a", "more_body": True}]
        chunks.append({"type": "http.request", "body": b"b", "more_body": False})

        async def receive() -> dict:
            seen.append((runtime.uploading, runtime.inflight))
            if taken_meanwhile and len(chunks) == 1:
                runtime.inflight = 1  # another request was admitted while this one uploaded
            return chunks.pop(0)

        return receive

    async def call(receive) -> list[dict]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/caption", "headers": []}
        try:
            await UploadGate(app, runtime)(scope, receive, send)
        except Exception as exc:  # FastAPI's handler would answer; here the exception shows
            sent.append({"type": "error", "status": getattr(exc, "status_code", None)})
        return sent

    sent = asyncio.run(call(receiver(False)))
    assert seen == [(1, 0), (1, 0), (0, 1)]  # uploading while the body came, then admitted
    assert sent[0]["status"] == 200
    assert (runtime.uploading, runtime.inflight) == (0, 0)
    sent = asyncio.run(call(receiver(True)))
    assert sent[-1] == {"type": "error", "status": 429}
    assert runtime.uploading == 0
    runtime.inflight = 0
    runtime.uploading = 2  # max_uploads bodies are arriving
    sent = asyncio.run(call(receiver(False)))
    assert sent[0]["status"] == 429
    runtime.uploading = 0
