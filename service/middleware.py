"""What runs around the routes: the ASGI upload gate, request metrics and error shaping.

The gate is the one place the API key is checked: it answers 401 before a body is read. The
routes only declare the key so that the OpenAPI schema shows it.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.batch_protocol import (
    BatcherError,
    ClientGone,
    DeadlineExceeded,
    QueueFull,
    ShuttingDown,
)
from service.metrics import Metrics

if TYPE_CHECKING:
    from service.runtime import Runtime

log = logging.getLogger("captioner.service")

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
ECHO_LIMIT = 80  # characters of a client's value a 422 repeats back


def key_matches(headers: Headers, key: str) -> bool:
    """``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, compared in constant time."""
    given = headers.get("x-api-key")
    auth = headers.get("authorization", "")
    if given is None and auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    return given is not None and hmac.compare_digest(given.encode(), key.encode())


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class UploadGate:
    """Refuses requests before reading them: API key, readiness, in-flight cap, body size.

    Starlette and uvicorn put no cap on a body and Content-Length can lie, so the bytes are
    counted as they arrive and the request fails with 413 at the first byte over the limit.
    """

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rt = self.runtime
        s = rt.settings
        path = scope["path"]
        headers = Headers(scope=scope)
        guarded = path in INFERENCE or (path == METRICS_ROUTE and not s.metrics_open)
        if guarded and s.api_key is not None and not key_matches(headers, s.api_key):
            await problem(send, 401, AUTH_HELP, {"WWW-Authenticate": "Bearer"})
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
                wait = retry_after(rt.retry_after_s())
                busy = f"the server is busy: retry in {wait['Retry-After']} s"
                await problem(send, 429, busy, wait)
                return
        limit = {CAPTION_ROUTE: s.max_image_bytes, ACTIVITY_ROUTE: s.max_video_bytes}.get(
            path, OTHER_BODY_LIMIT
        )
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await problem(send, 413, _too_large(limit))
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # FastAPI re-raises an HTTPException from body parsing as it is.
                    raise HTTPException(413, _too_large(limit))
            return message

        if path not in INFERENCE:
            await self.app(scope, counted, send)
            return
        scope.setdefault("state", {})["arrived"] = time.perf_counter()
        rt.inflight += 1
        try:
            await self.app(scope, counted, send)
        finally:
            rt.inflight -= 1


def _too_large(limit: int) -> str:
    return f"request body is over the {limit / 2**20:.1f} MiB limit for this route; send less"


async def problem(send: Send, status: int, detail: str, headers: dict | None = None) -> None:
    """Answer straight from ASGI with the same JSON shape as every other error."""
    response = JSONResponse({"detail": detail}, status_code=status, headers=headers)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


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


# ---------------------------------------------------------------------------- error shaping


def batcher_http_error(exc: BatcherError) -> HTTPException:
    """The HTTP answer for a batcher's refusal."""
    if isinstance(exc, QueueFull):
        wait = retry_after(exc.retry_after_s)
        return HTTPException(429, f"the server is busy: retry in {wait['Retry-After']} s", wait)
    if isinstance(exc, DeadlineExceeded):
        return HTTPException(504, "the request did not finish within its deadline; retry later")
    if isinstance(exc, ShuttingDown):
        return HTTPException(503, "the server is shutting down: retry", {"Retry-After": "5"})
    if isinstance(exc, ClientGone):
        return HTTPException(499, "client closed the request")
    return HTTPException(500, f"the model failed on this batch ({type(exc).__name__})")


def short(value: Any, limit: int = ECHO_LIMIT) -> Any:
    """A client's value cut down for echoing: long text is cut, big structures summarised."""
    if isinstance(value, bytes | bytearray):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]}... ({len(value)} characters)"
    if isinstance(value, dict | list | tuple):
        text = json.dumps(jsonable_encoder(value), default=str)
        if len(text) > limit:
            return f"{text[:limit]}... ({len(text)} characters of JSON)"
    return value


def install_error_handlers(app: FastAPI) -> None:
    """422s that do not echo a whole upload back, and a plain 500 with no stack trace."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for error in exc.errors():
            error = dict(error)
            if "input" in error:
                error["input"] = short(error["input"])
            error.pop("ctx", None)  # may repeat the input, or hold an exception object
            errors.append(error)
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"detail": "internal server error"}, status_code=500)
