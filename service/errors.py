"""The one place errors become HTTP answers: every 4xx and 5xx body is ``Problem``-shaped.

``{"detail": "<one line: what went wrong and what to do>", "errors": [...]}``, where ``errors``
is there only for an invalid request (422 from validation): one entry per problem, with the
client's value cut down. The model runtime raises its own plain errors (``service.runtime``),
the batcher its own (``service.batch_protocol``), the decode budget ``BudgetFull``; the handlers
below map each to its status. Routes and middleware use this module; the runtime does not.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Send

from service.batch_protocol import (
    BatcherError,
    ClientGone,
    DeadlineExceeded,
    QueueFull,
    ShuttingDown,
)
from service.runtime import (
    BatchFailed,
    NotReady,
    RuntimeProblem,
    TaskNotServed,
    TaskUnavailable,
    TooMuchToDecode,
)
from service.uploads import BudgetFull

log = logging.getLogger("captioner.service")

ECHO_LIMIT = 80  # characters of a client's value a 422 repeats back
DETAIL_LIMIT = 400  # characters of a validation sentence
CLIENT_CLOSED = 499  # nginx's code for a client that left before its answer


def retry_after(seconds: float) -> dict[str, str]:
    """The ``Retry-After`` header for a wait of ``seconds`` (whole seconds, at least 1)."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def problem_response(
    status: int,
    detail: str,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    """The JSON answer for an error: ``{"detail": ...}`` plus ``errors`` when given."""
    body: dict[str, Any] = {"detail": " ".join(str(detail).split())}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers)


async def problem(send: Send, status: int, detail: str, headers: dict | None = None) -> None:
    """Answer straight from ASGI (middleware, before a route runs), in the same shape."""
    await problem_response(status, detail, headers)({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def busy(seconds: float) -> tuple[str, dict[str, str]]:
    """The 429 sentence and header for a server that likely has room in ``seconds``."""
    wait = retry_after(seconds)
    return f"the server is busy: retry in {wait['Retry-After']} s", wait


def status_of(exc: Exception) -> tuple[int, str, dict[str, str] | None]:
    """(status, detail, headers) for a batcher, budget or runtime error."""
    if isinstance(exc, QueueFull):
        return 429, *busy(exc.retry_after_s)
    if isinstance(exc, BudgetFull):
        return 429, str(exc), retry_after(exc.retry_after_s)
    if isinstance(exc, DeadlineExceeded):
        return 504, "the request did not finish within its deadline; retry later", None
    if isinstance(exc, ShuttingDown):
        return 503, "the server is shutting down: retry", {"Retry-After": "5"}
    if isinstance(exc, ClientGone):
        return CLIENT_CLOSED, "client closed the request", None
    if isinstance(exc, NotReady):
        return 503, str(exc), {"Retry-After": "5"}
    if isinstance(exc, TaskUnavailable):
        return 503, str(exc), None
    if isinstance(exc, TaskNotServed):
        return 404, str(exc), None
    if isinstance(exc, TooMuchToDecode):
        return 413, str(exc), None
    if isinstance(exc, BatchFailed):
        return 500, str(exc), None
    return 500, f"the model failed on this batch ({type(exc).__name__})", None


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


def validation_problems(exc: RequestValidationError) -> list[dict[str, Any]]:
    """FastAPI's validation errors, with the client's values cut down and no ``ctx``."""
    errors = []
    for error in exc.errors():
        error = dict(error)
        if "input" in error:
            error["input"] = short(error["input"])
        error.pop("ctx", None)  # may repeat the input, or hold an exception object
        error.pop("url", None)
        errors.append(jsonable_encoder(error))
    return errors


def validation_sentence(errors: list[dict[str, Any]]) -> str:
    """One human line for a list of validation errors, e.g.
    ``invalid request: query parameter beam_size: input should be less than or equal to 10``."""
    parts = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ())]
        where = {"query": "query parameter", "body": "form field", "header": "header"}
        if loc and loc[0] in where:
            place = f"{where[loc[0]]} {'.'.join(loc[1:])}".strip()
        else:
            place = ".".join(loc) or "request"
        msg = str(error.get("msg", "invalid"))
        parts.append(f"{place}: {msg[:1].lower()}{msg[1:]}")
    sentence = "invalid request: " + "; ".join(parts or ["it could not be read"])
    sentence = " ".join(sentence.split())
    if len(sentence) > DETAIL_LIMIT:
        sentence = f"{sentence[:DETAIL_LIMIT]}... (see errors)"
    return sentence


def _http_sentence(request: Request, exc: StarletteHTTPException) -> str:
    """Starlette's bare 'Not Found' / 'Method Not Allowed' as sentences that say what to do."""
    if isinstance(exc.detail, str) and exc.detail not in ("Not Found", "Method Not Allowed"):
        return exc.detail
    if exc.status_code == 404:
        return f"no such route: {request.url.path} (GET /docs lists the routes)"
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow")
        hint = f"; use {allowed}" if allowed else ""
        return f"{request.method} is not allowed on {request.url.path}{hint}"
    return str(exc.detail)


def install_error_handlers(app: FastAPI) -> None:
    """Every error in the Problem shape: validation, HTTP, batcher, budget and runtime errors,
    and a plain 500 with no stack trace."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_problems(exc)
        return problem_response(422, validation_sentence(errors), errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(exc.status_code, _http_sentence(request, exc), exc.headers)

    async def mapped(request: Request, exc: Exception) -> JSONResponse:
        status, detail, headers = status_of(exc)
        return problem_response(status, detail, headers)

    for kind in (BatcherError, BudgetFull, RuntimeProblem):
        app.add_exception_handler(kind, mapped)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return problem_response(500, "internal server error")
