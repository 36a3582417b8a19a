"""A small load generator for the HTTP service, on loopback only.

``Server`` starts ``captioner serve`` on 127.0.0.1 in a subprocess, waits for /readyz and stops
it; ``closed_loop`` keeps N requests in flight, ``poisson`` sends requests at exponential
intervals whatever the server does (an open loop). Both stop after ``max_requests`` or
``max_seconds``, whichever comes first. ``summarize`` turns the samples into throughput,
latency percentiles, status counts and the server's own queue / compute split.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

HOST = "127.0.0.1"  # never anything else: the generator must not load a remote machine


@dataclass
class Sample:
    """One request: its status (an int, or the client error's name) and what it took."""

    status: int | str
    latency_s: float
    timings: dict | None = None  # the response's "timings" object, for 200s
    lag_s: float = 0.0  # from the intended send time until the client got to send it


@dataclass
class Phase:
    """The samples of one load phase and its wall time."""

    samples: list[Sample] = field(default_factory=list)
    elapsed_s: float = 0.0
    offered_rate: float | None = None  # Poisson phases: requests/s asked for
    sent_rate: float | None = None  # and what the client managed to send


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Server:
    """``captioner serve`` on a free loopback port; a context manager that always stops it.

    Another server (a peer in a comparison) overrides :meth:`command` and ``ready_path``."""

    ready_path = "/readyz"  # 200 once the server can answer
    stop_signal = signal.SIGTERM  # what asks it to stop gracefully
    own_group = False  # True: its own process group, killed whole once it has stopped

    def __init__(
        self,
        options: list[str],
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        ready_timeout_s: float = 300.0,
    ) -> None:
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.options = options
        self.env = {**os.environ, **(env or {})}
        self.env.pop("CAPTIONER_API_KEY", None)  # the generator sends no key
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "captioner", "serve", "--host", HOST, "--port"]
        return [*cmd, str(self.port), *self.options]

    def __enter__(self) -> Server:
        cmd = self.command()
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                cmd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.own_group,
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise RuntimeError(f"the server exited ({code}); {self._log_tail()}")
            with contextlib.suppress(OSError):
                if _get(self.base + self.ready_path, timeout_s=2.0)[0] == 200:
                    return
            time.sleep(0.5)
        waited = f"{self.ready_timeout_s:.0f} s"
        raise TimeoutError(f"{self.ready_path} not 200 after {waited}; {self._log_tail()}")

    def _log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "no server log"
        return "server log ends: " + self.log_path.read_text(errors="replace")[-2000:]

    def rss_mb(self) -> float | None:
        """The server's resident memory (VmRSS), MiB."""
        if self.proc is None:
            return None
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        return None

    def metrics(self) -> dict[str, float]:
        """/metrics as {'name{labels}': value} (Prometheus text format, samples only)."""
        _, body = _get(f"{self.base}/metrics")
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[key] = float(value)
        return out

    def stop(self, grace_s: float = 60.0) -> None:
        """``stop_signal`` (uvicorn drains), then SIGKILL if it has not exited after ``grace_s``;
        with ``own_group``, then SIGKILL to whatever of its process group is left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.own_group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)


def _client(connections: int, timeout_s: float) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(timeout=timeout_s, limits=limits)


_BOUNDARY = "captioner-loadgen-boundary"


def multipart(name: str, data: bytes) -> bytes:
    """One ``file`` field as a multipart/form-data body, built once per image, not per request."""
    head = (
        f"--{_BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    )
    return head.encode() + data + f"\r\n--{_BOUNDARY}--\r\n".encode()


def bodies(payloads: list[tuple[str, bytes]]) -> list[bytes]:
    return [multipart(name, data) for name, data in payloads]


_HEADERS = {"content-type": f"multipart/form-data; boundary={_BOUNDARY}"}


async def _one(client: httpx.AsyncClient, url: str, body: bytes, params: dict, t0: float) -> Sample:
    """POST one prepared body; latency counts from ``t0`` (the intended send time)."""
    lag = time.perf_counter() - t0
    try:
        r = await client.post(url, content=body, headers=_HEADERS, params=params)
    except httpx.HTTPError as exc:
        return Sample(type(exc).__name__, time.perf_counter() - t0, lag_s=lag)
    latency = time.perf_counter() - t0
    if r.status_code != 200:
        return Sample(r.status_code, latency, lag_s=lag)
    try:
        return Sample(200, latency, r.json()["timings"], lag_s=lag)
    except (ValueError, KeyError):
        return Sample("bad_body", latency, lag_s=lag)


async def closed_loop(
    url: str,
    payloads: list[tuple[str, bytes]],
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    params: dict | None = None,
    timeout_s: float = 120.0,
) -> Phase:
    """``concurrency`` workers, each sending its next request when the last one returns."""
    phase, issued, prepared = Phase(), 0, bodies(payloads)
    start = time.perf_counter()
    deadline = start + max_seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal issued
        while issued < max_requests and time.perf_counter() < deadline:
            body = prepared[issued % len(prepared)]
            issued += 1
            t0 = time.perf_counter()
            phase.samples.append(await _one(client, url, body, params or {}, t0))

    async with _client(concurrency, timeout_s) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    phase.elapsed_s = time.perf_counter() - start
    return phase


async def poisson(
    url: str,
    payloads: list[tuple[str, bytes]],
    rate: float,
    max_requests: int,
    max_seconds: float,
    params: dict | None = None,
    max_in_flight: int = 1024,
    timeout_s: float = 120.0,
    seed: int = 0,
) -> Phase:
    """Requests at Poisson arrivals of ``rate``/s, not waiting for answers (open loop).

    Latency counts from each request's scheduled arrival, so a client that falls behind
    does not hide queueing. Beyond ``max_in_flight`` open requests, arrivals are recorded as
    ``client_dropped`` instead of sent, which keeps the generator's memory bounded.
    """
    rng = random.Random(seed)
    phase, prepared = Phase(offered_rate=rate), bodies(payloads)
    tasks: set[asyncio.Task] = set()
    start = time.perf_counter()
    at, sent = 0.0, 0

    def done(task: asyncio.Task) -> None:
        tasks.discard(task)
        phase.samples.append(task.result())

    async with _client(max_in_flight, timeout_s) as client:
        for i in range(max_requests):
            at += rng.expovariate(rate)
            if at > max_seconds:
                break
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) >= max_in_flight:
                phase.samples.append(Sample("client_dropped", 0.0))
                continue
            coro = _one(client, url, prepared[i % len(prepared)], params or {}, start + at)
            task = asyncio.create_task(coro)
            tasks.add(task)
            task.add_done_callback(done)
            sent += 1
        sending_s = time.perf_counter() - start
        while tasks:
            await asyncio.wait(set(tasks))
    phase.elapsed_s = time.perf_counter() - start
    phase.sent_rate = sent / sending_s if sending_s > 0 else None
    return phase


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def summarize(phase: Phase) -> dict:
    """Throughput of 200s, their latency percentiles (ms), status counts, server timings."""
    ok = [s for s in phase.samples if s.status == 200]
    latency = [s.latency_s * 1000 for s in ok]
    timings = [s.timings for s in ok if s.timings]

    def server(key: str) -> dict:
        values = [t[key] for t in timings if key in t]
        if not values:
            return {}
        return {"mean": round(float(np.mean(values)), 1), "p50": _pct(values, 50)}

    out = {
        "requests": len(phase.samples),
        "status": dict(Counter(str(s.status) for s in phase.samples)),
        "elapsed_s": round(phase.elapsed_s, 2),
        "ok_per_s": round(len(ok) / phase.elapsed_s, 2) if phase.elapsed_s else 0.0,
        "latency_ms": {f"p{q}": _pct(latency, q) for q in (50, 95, 99)},
        "server_ms": {k: server(k) for k in ("decode_ms", "queue_ms", "compute_ms", "total_ms")},
        "batch_size": server("batch_size"),
    }
    if phase.offered_rate is not None:
        out["offered_per_s"] = round(phase.offered_rate, 1)
        out["sent_per_s"] = round(phase.sent_rate or 0.0, 1)
        lag = [s.lag_s * 1000 for s in phase.samples if s.status != "client_dropped"]
        out["client_lag_ms"] = {"p50": _pct(lag, 50), "p99": _pct(lag, 99)}
    return out


def metrics_delta(before: dict[str, float], after: dict[str, float], model: str) -> dict:
    """Mean batch size, queue wait and batch compute time between two /metrics scrapes."""

    def delta(name: str) -> float:
        key = f'{name}{{model="{model}"}}'
        return after.get(key, 0.0) - before.get(key, 0.0)

    out = {}
    for name, label, scale in (
        ("captioner_batch_size", "mean_batch_size", 1.0),
        ("captioner_queue_wait_seconds", "mean_queue_wait_ms", 1000.0),
        ("captioner_compute_seconds", "mean_batch_compute_ms", 1000.0),
    ):
        count = delta(f"{name}_count")
        out[label] = round(delta(f"{name}_sum") / count * scale, 2) if count else None
    out["batches"] = int(delta("captioner_compute_seconds_count"))
    return out
