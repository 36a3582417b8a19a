"""What runs around the routes: request ids and the access log, the upload gate, metrics.

The gate is the one place the API key is checked: it answers 401 before a body is read. The
routes only declare the key so that the OpenAPI schema shows it. Error bodies are shaped in
``service.errors``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
import uuid
from typing import TYPE_CHECKING

from fastapi import HTTPException
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.clients import AuthThrottle, KiB, UploadClock
from service.errors import busy, problem, retry_after
from service.metrics import Metrics

if TYPE_CHECKING:
    from service.runtime import Runtime

log = logging.getLogger("captioner.service")
access_log = logging.getLogger("captioner.access")

CAPTION_ROUTE = "/v1/caption"
ACTIVITY_ROUTE = "/v1/activity"
METRICS_ROUTE = "/metrics"
INFERENCE = frozenset({CAPTION_ROUTE, ACTIVITY_ROUTE})
ROUTES = frozenset(
    {"/", "/healthz", "/readyz", METRICS_ROUTE, "/v1/models", "/docs", "/redoc", "/openapi.json"}
    | INFERENCE
)
OTHER_BODY_LIMIT = 64 * 1024
AUTH_HELP = "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
REQUEST_ID = "X-Request-ID"
# A client's request id is kept when it is a short token of these characters; else a new one.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:@+=/-]{1,128}")


def key_matches(headers: Headers, key: str) -> bool:
    """``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, compared in constant time."""
    given = headers.get("x-api-key")
    auth = headers.get("authorization", "")
    if given is None and auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    return given is not None and hmac.compare_digest(given.encode(), key.encode())


def request_id(headers: Headers) -> str:
    """The client's ``X-Request-ID`` when it is a short printable token, else a new uuid4 hex."""
    given = headers.get(REQUEST_ID.lower(), "")
    return given if REQUEST_ID_PATTERN.fullmatch(given) else uuid.uuid4().hex


class RequestContext:
    """The outermost layer: a request id on every response, one access-log line per request.

    The id (the client's ``X-Request-ID`` when valid, else a new one) is in
    ``request.state.request_id`` and returned as ``X-Request-ID`` on every answer, errors and
    the gate's refusals included. An exception no handler took gets a plain 500 here, so even
    that answer carries the id (Starlette's own error layer sits outside every middleware).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(Headers(scope=scope))
        scope.setdefault("state", {})["request_id"] = rid
        status, started = 500, False
        start = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                MutableHeaders(scope=message)[REQUEST_ID] = rid
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            log.exception("unhandled error on %s (request %s)", scope["path"], rid)
            if started:
                raise
            await problem(sending, 500, "internal server error")
        finally:
            self._log(scope, status, time.perf_counter() - start, rid)

    @staticmethod
    def _log(scope: Scope, status: int, seconds: float, rid: str) -> None:
        client = scope.get("client")
        where = f"{client[0]}:{client[1]}" if client else "-"
        query = scope.get("query_string", b"").decode("latin-1")
        target = scope.get("raw_path", scope["path"].encode()).decode("latin-1", "replace")
        target += f"?{query}" if query else ""
        version = scope.get("http_version", "1.1")
        access_log.info(
            '%s - "%s %s HTTP/%s" %d %.1f ms request_id=%s',
            where,
            scope["method"],
            target,
            version,
            status,
            seconds * 1000,
            rid,
        )


class UploadGate:
    """Refuses requests before reading them, and holds bodies to a deadline and a size.

    In order: a client address blocked for wrong API keys (429), the API key (401),
    readiness (503), the in-flight and upload caps (429), the declared size (413). Starlette
    and uvicorn put no cap on a body and Content-Length can lie, so the bytes are counted as
    they arrive and the request fails with 413 at the first byte over the limit, and with 408
    once the body misses its deadline or minimum rate (:class:`~service.clients.UploadClock`).

    A request on an inference route counts as an upload (``max_uploads``) while its body
    arrives and is admitted (``max_inflight``) only once the body is in, so slow bodies never
    hold the slots that finished requests need to be answered.
    """

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        s = runtime.settings
        self.auth = AuthThrottle(s.auth_failures, s.auth_window_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rt = self.runtime
        s = rt.settings
        path = scope["path"]
        headers = Headers(scope=scope)
        guarded = path in INFERENCE or (path == METRICS_ROUTE and not s.metrics_open)
        if guarded and s.api_key is not None and not await self._authorised(scope, send):
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        if path in INFERENCE:
            if not rt.ready:
                await problem(send, 503, rt.not_ready_reason(), {"Retry-After": "5"})
                return
            if rt.inflight >= s.max_inflight:
                rt.metrics.rejections.labels("inflight").inc()
                detail, wait = busy(rt.retry_after_s())
                await problem(send, 429, detail, wait)
                return
            if rt.uploading >= s.max_uploads:
                rt.metrics.rejections.labels("uploads").inc()
                detail, wait = busy(max(1.0, s.upload_grace_s))
                await problem(send, 429, f"too many uploads in progress; {detail}", wait)
                return
        limit = {CAPTION_ROUTE: s.max_image_bytes, ACTIVITY_ROUTE: s.max_video_bytes}.get(
            path, OTHER_BODY_LIMIT
        )
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await problem(send, 413, _too_large(limit))
            return
        body = _Body(rt, scope, receive, limit, admits=path in INFERENCE)
        try:
            await self.app(scope, body.receive, send)
        finally:
            body.close()

    async def _authorised(self, scope: Scope, send: Send) -> bool:
        """The key check, throttled per client address; answers 429 or 401 itself."""
        rt = self.runtime
        client = scope.get("client")
        address = client[0] if client else "-"
        blocked = self.auth.retry_after_s(address)
        if blocked > 0:
            rt.metrics.rejections.labels("auth_throttle").inc()
            wait = retry_after(blocked)
            detail = f"too many wrong API keys from this address: retry in {wait['Retry-After']} s"
            await problem(send, 429, detail, wait)
            return False
        assert rt.settings.api_key is not None
        if key_matches(Headers(scope=scope), rt.settings.api_key):
            return True
        self.auth.failed(address)
        rt.metrics.rejections.labels("auth").inc()
        await problem(send, 401, AUTH_HELP, {"WWW-Authenticate": "Bearer"})
        return False


class _Body:
    """One request's ``receive``: counts the body against its size limit and its clock, and
    on an inference route moves the request from uploading to admitted when the body is in."""

    def __init__(self, rt: Runtime, scope: Scope, receive: Receive, limit: int, admits: bool):
        s = rt.settings
        self.rt, self.scope, self._receive, self.limit = rt, scope, receive, limit
        self.clock = UploadClock(
            time.perf_counter(), s.body_timeout_s, s.min_upload_rate_kb_s * KiB, s.upload_grace_s
        )
        self.seen = 0
        self.complete = False
        self.counted = self.uploading = admits
        self.admitted = False
        if admits:
            rt.uploading += 1
            rt.expect(scope.setdefault("state", {}))

    async def receive(self) -> Message:
        if self.complete:  # later calls only wait for a disconnect
            return await self._receive()
        left = self.clock.time_left(self.seen, time.perf_counter())
        try:
            async with asyncio.timeout(max(0.0, left)):
                message = await self._receive()
        except TimeoutError:
            self.rt.metrics.rejections.labels("slow_upload").inc()
            log.debug("cut a slow upload on %s after %d bytes", self.scope["path"], self.seen)
            raise HTTPException(408, self.clock.why(self.seen), {"Connection": "close"}) from None
        if message["type"] != "http.request":  # the client left
            self.complete = True
            return message
        self.seen += len(message.get("body", b""))
        if self.seen > self.limit:
            # FastAPI re-raises an HTTPException from body parsing as it is.
            raise HTTPException(413, _too_large(self.limit))
        if not message.get("more_body", False):
            self.complete = True
            self._admit()
        return message

    def _admit(self) -> None:
        """The body is in: take an in-flight slot, or refuse with 429 if none is left."""
        if not self.uploading:
            return
        rt = self.rt
        self.uploading = False
        rt.uploading -= 1
        if rt.inflight >= rt.settings.max_inflight:
            rt.metrics.rejections.labels("inflight").inc()
            detail, wait = busy(rt.retry_after_s())
            raise HTTPException(429, detail, wait)
        rt.inflight += 1
        self.admitted = True
        # The request's deadline (request_timeout_s) counts from here; the upload had its own.
        self.scope.setdefault("state", {})["arrived"] = time.perf_counter()

    def close(self) -> None:
        """Give back whichever slot the request holds (it ended, answered or not)."""
        self.rt.arrived(self.scope.get("state"))
        if self.uploading:
            self.uploading = False
            self.rt.uploading -= 1
        if self.admitted:
            self.admitted = False
            self.rt.inflight -= 1
        if self.counted:
            self.counted = False
            self.rt.idle.done()


def _too_large(limit: int) -> str:
    return f"request body is over the {limit / 2**20:.1f} MiB limit for this route; send less"


class RequestMetrics:
    """Counts requests by route and status and times them (pure ASGI: no body buffering)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in ROUTES else "other"
        status = 500
        start = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
