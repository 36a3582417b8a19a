"""Helpers for service tests: a live uvicorn server on loopback and hostile upload bytes."""

from __future__ import annotations

import contextlib
import io
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.runtime import LoadedModels
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, timeout_s: float = 120.0) -> None:
    """Poll /readyz until 200; fail with the server's last word if it never comes."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{base}/readyz", timeout=5)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise TimeoutError(f"service at {base} not ready after {timeout_s} s: {last}")


@contextlib.contextmanager
def live_server(settings: Settings) -> Iterator[tuple[str, uvicorn.Server]]:
    """Run the real app under uvicorn in a thread on a free loopback port."""
    port = free_port()
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base)
        yield base, server
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@contextlib.contextmanager
def client_for(tiny_captioner, failures: dict | None = None, **kw) -> Iterator[TestClient]:
    """The app in-process with a preloaded caption model (no activity), once it is ready."""
    settings = Settings(**{"device": "cpu", "enable_activity": False, "max_wait_ms": 1.0, **kw})
    models = LoadedModels(captioner=tiny_captioner, failures=failures or {})
    app = create_app(settings, models=models)
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").text
            time.sleep(0.01)
        yield client


def jpeg_bytes(seed: int = 0, size: int = 96) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG")
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` pixels and carries almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)


def png_bomb(side: int = 12_000) -> bytes:
    """A real, tiny PNG that inflates to ``side`` x ``side`` pixels (one grey channel)."""
    raw = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * side
    body = b"".join(raw.compress(row) for _ in range(side)) + raw.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", body)
        + _png_chunk(b"IEND", b"")
    )


def hostile_files() -> dict[str, tuple[str, bytes, str]]:
    """name -> (route, bytes, filename) for the hostile corpus."""
    good_jpeg = (EXAMPLES / "photo-chelsea.jpg").read_bytes()
    # The first boxes of an ordinary MP4 (ftyp, free, the start of mdat), then garbage.
    mp4_head = bytes.fromhex(
        "0000001c6674797069736f6d0000020069736f6d69736f326d703431000000086672656500007b5d6d646174"
    )
    return {
        "empty image": ("caption", b"", "empty.jpg"),
        "truncated jpeg": ("caption", good_jpeg[: len(good_jpeg) // 3], "cut.jpg"),
        "text named .jpg": ("caption", b"hello, I am not a picture\n" * 20, "text.jpg"),
        "png bomb": ("caption", png_bomb(), "bomb.png"),
        "30000x30000 header": ("caption", png_header_only(30_000, 30_000), "huge.png"),
        "corrupt mp4": ("activity", mp4_head + bytes(4096), "corrupt.mp4"),
        "hls named .mp4": (
            "activity",
            b"#EXTM3U\n#EXT-X-VERSION:3\n#EXTINF:10,\nhttp://127.0.0.1:9/x.ts\n",
            "list.mp4",
        ),
        "empty video": ("activity", b"", "empty.mp4"),
    }
