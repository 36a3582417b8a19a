"""An ordinary caption request's latency while decompression-heavy uploads are in flight.

A 9000 x 9000 16-bit PNG of one flat colour is a few hundred KB on the wire and costs seconds
and gigabytes to decode. For 0, 1, 2 and 4 such uploads kept in flight (each client re-sends
as soon as it has an answer), this measures a plain JPEG's caption latency (p50, p99 over
``--requests`` requests sent one after the other), the server's peak RSS (VmRSS polled every
20 ms) and what the heavy uploads got. Two servers: ``unguarded`` (pixel cap at Pillow's bomb
limit, a decode budget too large to matter: what the service did before) and ``guarded`` (the
defaults). ``--side 6000`` keeps the heavy image under the default pixel cap, so the budget and
not the cap is what refuses it.

    python bench/image_bombs.py [--side 9000] [--requests 12] [--only guarded|unguarded]
"""

from __future__ import annotations

import argparse
import io
import threading
import time
from collections import Counter
from pathlib import Path

import _omp  # noqa: F401  (first: the OpenMP wait policy, before torch loads)
import httpx
import numpy as np
from _common import ROOT, WORK, report
from _loadgen import Server
from PIL import Image

CONFIGS = {
    "unguarded": {"CAPTIONER_MAX_IMAGE_PIXELS": "89478485", "CAPTIONER_DECODE_BUDGET_MB": "999999"},
    "guarded": {},
}


def heavy_png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("I;16", (side, side), 1234).save(buf, "PNG", optimize=False)
    return buf.getvalue()


class RssPeak:
    """Polls the server's VmRSS in a thread; ``peak`` in MiB."""

    def __init__(self, server: Server) -> None:
        self.server, self.peak, self._stop = server, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.server.rss_mb() or 0.0)
            self._stop.wait(0.02)


def keep_sending(url: str, body: bytes, stop: threading.Event, outcomes: Counter) -> None:
    with httpx.Client(timeout=120) as client:
        while not stop.is_set():
            try:
                r = client.post(url, files={"file": ("heavy.png", body, "image/png")})
                outcomes[r.status_code] += 1
            except httpx.HTTPError as exc:
                outcomes[type(exc).__name__] += 1


def phase(server: Server, heavy: bytes, in_flight: int, requests: int) -> dict:
    url = f"{server.base}/v1/caption"
    plain = (ROOT / "examples" / "scene-0.jpg").read_bytes()
    stop, outcomes = threading.Event(), Counter()
    senders = [
        threading.Thread(target=keep_sending, args=(url, heavy, stop, outcomes), daemon=True)
        for _ in range(in_flight)
    ]
    latencies, codes = [], Counter()
    with RssPeak(server) as rss, httpx.Client(timeout=120) as client:
        for t in senders:
            t.start()
        time.sleep(1.0 if in_flight else 0.0)  # let the heavy uploads reach the decoder
        for _ in range(requests):
            t0 = time.perf_counter()
            r = client.post(url, files={"file": ("scene.jpg", plain, "image/jpeg")})
            latencies.append(time.perf_counter() - t0)
            codes[r.status_code] += 1
        stop.set()
        for t in senders:
            t.join(timeout=180)
    ms = np.array(latencies) * 1000
    return {
        "heavy_in_flight": in_flight,
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "plain_status": dict(codes),
        "heavy_status": {str(k): v for k, v in outcomes.items()},
        "rss_peak_mb": round(rss.peak, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--side", type=int, default=9000, help="heavy image side (pixels)")
    p.add_argument("--requests", type=int, default=12, help="plain requests per phase")
    p.add_argument("--only", choices=sorted(CONFIGS))
    args = p.parse_args()
    heavy = heavy_png(args.side)
    WORK.mkdir(parents=True, exist_ok=True)
    for name, env in CONFIGS.items():
        if args.only and name != args.only:
            continue
        log = Path(WORK / f"image_bombs_{name}.log")
        options = ["--no-activity", "--device", "cpu", "--log-level", "warning"]
        with Server(options, env=env, log_path=log) as server:
            rows = [phase(server, heavy, n, args.requests) for n in (0, 1, 2, 4)]
        result = {"config": name, "heavy": f"{args.side}x{args.side} 16-bit PNG"}
        report("image_bombs", {**result, "heavy_kb": len(heavy) // 1024, "phases": rows})


if __name__ == "__main__":
    main()
