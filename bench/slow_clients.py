"""Slow and hostile clients against one ``captioner serve`` with an API key, on loopback.

Four phases, each printed as one JSON line (all of them also in bench/_work/slow_clients.json):

(a) slowloris: ``--slow`` connections that announce a 2 MB upload and send one byte every 2 s
    (each reconnects as soon as it is cut), for ``--seconds``; meanwhile two clients send
    ordinary captions with the right key: how many were answered, p50 / p99, and how long
    the slow bodies were held.
(b) key guessing: eight connections from one address (127.0.0.9) send wrong keys as fast as
    they can for 5 s: guesses the server checked per second (401s) and refusals (429), and a
    right-key caption from another address meanwhile; the log's warnings about it.
(c) videos: two 590 s 4K uploads (24 fps, a keyframe every 250 frames: 14,160 frames, about
    1.2e11 pixels to decode, over the 8e10 cap) and then two 375 s 4K ones under the cap (9,000
    frames, decoded by seeking), each pair with captions sent meanwhile: caption p50 / p99,
    the videos' statuses and times.
(d) memory: the server's RSS after a warm-up, right after the phases and after ``--idle`` s.

The 4K files are built without an encoder run per frame: one black I-frame and one
P-frame from OpenCV's MPEG-4 writer, repeated in a hand-written AVI (a few seconds; 58 MB).
``max_inflight`` is 40, as when the issue was measured.

    python bench/slow_clients.py [--slow 50] [--seconds 20] [--idle 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from _common import ROOT, WORK, report
from _loadgen import HOST, Server, multipart

KEY = "bench-key-" + "x" * 22
_BOUNDARY = "captioner-loadgen-boundary"
HEADERS = {"content-type": f"multipart/form-data; boundary={_BOUNDARY}", "x-api-key": KEY}


# -------------------------------------------------------------------------------- 4K files


def _chunks(buf: bytes, off: int, end: int):
    while off + 8 <= end:
        cid, size = buf[off : off + 4], struct.unpack("<I", buf[off + 4 : off + 8])[0]
        yield cid, off, size
        off += 8 + size + (size & 1)


def long_4k_avi(path: Path, frames: int, fps: float = 24.0, gop: int = 250) -> Path:
    """A black 3840x2160 MPEG-4 AVI of ``frames`` frames, a keyframe every ``gop``."""
    if path.exists():
        return path
    import cv2

    seed = path.with_suffix(".seed.avi")
    side = (3840, 2160)
    writer = cv2.VideoWriter(str(seed), cv2.VideoWriter_fourcc(*"FMP4"), fps, side)
    black = np.zeros((side[1], side[0], 3), np.uint8)
    for _ in range(3):
        writer.write(black)
    writer.release()
    data = seed.read_bytes()
    seed.unlink()
    hdrl, coded = bytearray(), []
    for cid, off, size in _chunks(data, 12, len(data)):
        kind = data[off + 8 : off + 12]
        if cid == b"LIST" and kind == b"hdrl":
            hdrl = bytearray(data[off : off + 8 + size])
        elif cid == b"LIST" and kind == b"movi":
            coded = [data[o + 8 : o + 8 + s] for c, o, s in _chunks(data, off + 12, off + 8 + size)]
    iframe, pframe = coded[0], coded[1]
    struct.pack_into("<I", hdrl, hdrl.find(b"avih") + 8 + 16, frames)  # dwTotalFrames
    struct.pack_into("<I", hdrl, hdrl.find(b"strh") + 8 + 32, frames)  # dwLength
    movi, index = bytearray(b"movi"), bytearray()
    for i in range(frames):
        key = i % gop == 0
        frame = iframe if key else pframe
        index += b"00dc" + struct.pack("<III", 0x10 if key else 0, len(movi), len(frame))
        movi += b"00dc" + struct.pack("<I", len(frame)) + frame + b"\0" * (len(frame) & 1)
    body = bytes(hdrl) + b"LIST" + struct.pack("<I", len(movi)) + movi
    body += b"idx1" + struct.pack("<I", len(index)) + index
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(body)) + b"AVI " + body)
    return path


def video_body(path: Path) -> bytes:
    head = (
        f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{path.name}"\r\nContent-Type: video/x-msvideo\r\n\r\n'
    )
    return head.encode() + path.read_bytes() + f"\r\n--{_BOUNDARY}--\r\n".encode()


# --------------------------------------------------------------------------------- clients


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


async def captions(base: str, body: bytes, until: asyncio.Event, clients: int = 2) -> dict:
    """Ordinary captions with the right key, ``clients`` at a time, until ``until`` is set."""
    samples: list[tuple[int | str, float]] = []

    async def worker(client: httpx.AsyncClient) -> None:
        while not until.is_set():
            t0 = time.perf_counter()
            try:
                r = await client.post(f"{base}/v1/caption", content=body, headers=HEADERS)
                status: int | str = r.status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            samples.append((status, time.perf_counter() - t0))

    async with httpx.AsyncClient(timeout=120) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    ok = [s * 1000 for status, s in samples if status == 200]
    return {
        "sent": len(samples),
        "answered_200": len(ok),
        "status": dict(Counter(str(status) for status, _ in samples)),
        "p50_ms": _pct(ok, 50),
        "p99_ms": _pct(ok, 99),
        "max_ms": round(max(ok), 1) if ok else None,
    }


async def slow_upload(port: int, stop_at: float, held: list[tuple[str, float]]) -> None:
    """Announce 2 MB, send the part's head, then one byte every 2 s; on being cut, record it
    and start again."""
    head = (
        f"POST /v1/caption HTTP/1.1\r\nHost: {HOST}\r\nX-API-Key: {KEY}\r\n"
        f"Content-Type: multipart/form-data; boundary={_BOUNDARY}\r\n"
        "Content-Length: 2000000\r\n\r\n"
        f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    while time.perf_counter() < stop_at:
        t0 = time.perf_counter()
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(head)
        status = "open at the end"
        try:
            while time.perf_counter() < stop_at:
                try:
                    line = await asyncio.wait_for(reader.readline(), timeout=2.0)
                except TimeoutError:
                    writer.write(b"x")
                    await writer.drain()
                    continue
                status = line.split()[1].decode() if line else "closed"
                break
        except OSError:
            status = "reset"
        held.append((status, time.perf_counter() - t0))
        writer.close()


async def phase_slowloris(base: str, port: int, body: bytes, slow: int, seconds: float) -> dict:
    held: list[tuple[str, float]] = []
    stop_at = time.perf_counter() + seconds
    done = asyncio.Event()
    slows = [asyncio.create_task(slow_upload(port, stop_at, held)) for _ in range(slow)]
    await asyncio.sleep(1.0)  # the slow bodies are in before the first caption

    async def stop() -> None:
        await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
        done.set()

    legit, _ = await asyncio.gather(captions(base, body, done), stop())
    await asyncio.gather(*slows)
    times = [s for _, s in held]
    return {
        "slow_connections": slow,
        "seconds": seconds,
        "slow_bodies_opened": len(held),
        "slow_status": dict(Counter(status for status, _ in held)),
        "slow_held_s": {"p50": _pct(times, 50), "max": round(max(times), 1) if times else None},
        "captions": legit,
    }


async def phase_guessing(base: str, body: bytes, seconds: float = 5.0) -> dict:
    codes: Counter = Counter()
    stop_at = time.perf_counter() + seconds
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.9")
    tiny = multipart("x.jpg", b"x")

    async def guesser(client: httpx.AsyncClient, n: int) -> None:
        i = 0
        while time.perf_counter() < stop_at:
            i += 1
            headers = {**HEADERS, "x-api-key": f"guess-{n}-{i:012d}-padding"}
            r = await client.post(f"{base}/v1/caption", content=tiny, headers=headers)
            codes[r.status_code] += 1

    async with httpx.AsyncClient(transport=transport, timeout=30) as client:
        start = time.perf_counter()
        guessing = asyncio.gather(*(guesser(client, n) for n in range(8)))
        await asyncio.sleep(1.0)
        async with httpx.AsyncClient(timeout=60) as other:
            t0 = time.perf_counter()
            right = await other.post(f"{base}/v1/caption", content=body, headers=HEADERS)
            right_ms = (time.perf_counter() - t0) * 1000
        await guessing
        elapsed = time.perf_counter() - start
    return {
        "seconds": round(elapsed, 2),
        "status": {str(k): v for k, v in codes.items()},
        "guesses_checked_per_s": round(codes[401] / elapsed, 1),
        "refused_429_per_s": round(codes[429] / elapsed, 1),
        "right_key_other_address": {"status": right.status_code, "ms": round(right_ms, 1)},
    }


async def phase_videos(base: str, body: bytes, video: bytes, label: str) -> dict:
    done = asyncio.Event()
    results: list[dict] = []

    async def upload(client: httpx.AsyncClient) -> None:
        t0 = time.perf_counter()
        r = await client.post(f"{base}/v1/activity", content=video, headers=HEADERS)
        detail = r.json().get("detail", "") if r.status_code != 200 else ""
        results.append(
            {"status": r.status_code, "s": round(time.perf_counter() - t0, 2), "why": detail[:90]}
        )

    async def videos() -> None:
        async with httpx.AsyncClient(timeout=180) as client:
            await asyncio.gather(upload(client), upload(client))
        await asyncio.sleep(1.0)
        done.set()

    legit, _ = await asyncio.gather(captions(base, body, done), videos())
    mb = round(len(video) / 2**20, 1)
    return {"videos": label, "video_mb": mb, "uploads": results, "captions": legit}


# ------------------------------------------------------------------------------------ main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slow", type=int, default=50, help="slow connections kept open")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the slowloris phase")
    p.add_argument("--idle", type=float, default=10.0, help="idle seconds before the last RSS")
    args = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    huge = video_body(long_4k_avi(WORK / "4k-590s-24fps.avi", 590 * 24))
    heavy = video_body(long_4k_avi(WORK / "4k-375s-24fps.avi", 375 * 24))
    body = multipart("scene.jpg", (ROOT / "examples" / "scene-0.jpg").read_bytes())
    log = WORK / "slow_clients.log"
    log.unlink(missing_ok=True)
    server = Server(["--device", "cpu", "--log-level", "info"], log_path=log)
    server.env |= {"CAPTIONER_API_KEY": KEY, "CAPTIONER_MAX_INFLIGHT": "40"}
    out: dict = {}
    with server:
        base = server.base

        async def run() -> None:
            warm = asyncio.Event()
            asyncio.get_running_loop().call_later(5.0, warm.set)
            await captions(base, body, warm)  # warm-up, not reported
            out["rss_mb_before"] = server.rss_mb()
            out["a"] = await phase_slowloris(base, server.port, body, args.slow, args.seconds)
            out["b"] = await phase_guessing(base, body)
            out["c_over_cap"] = await phase_videos(base, body, huge, "2 x 590 s 4K, 14,160 frames")
            out["c_under_cap"] = await phase_videos(base, body, heavy, "2 x 375 s 4K, 9,000 frames")
            out["rss_mb_after"] = server.rss_mb()
            await asyncio.sleep(args.idle)
            out["rss_mb_after_idle"] = server.rss_mb()

        asyncio.run(run())
    text = log.read_text(errors="replace")
    out["b"]["log_warnings_about_keys"] = text.count("wrong or missing API keys")
    out["b"]["log_401_lines"] = text.count('" 401 ')
    before, idle = out["rss_mb_before"], out["rss_mb_after_idle"]
    out["rss_idle_vs_before"] = round(idle / before, 3) if before and idle else None
    for name in ("a", "b", "c_over_cap", "c_under_cap"):
        report(f"slow_clients_{name}", out[name])
    memory = {k: out[k] for k in ("rss_mb_before", "rss_mb_after", "rss_mb_after_idle")}
    report("slow_clients_memory", {**memory, "idle_vs_before": out["rss_idle_vs_before"]})
    (WORK / "slow_clients.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
