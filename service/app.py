"""The HTTP service: ``create_app(settings)`` wires settings, models, batchers, routes and the page.

Models load once in the lifespan (in a thread, so ``/healthz`` answers while they load) and
``/readyz`` turns green after a warm-up batch. Uploads are decoded in a CPU pool; model work
runs on each batcher's own thread, so neither blocks the event loop.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import captioner
from captioner import ActivityClassifier, Captioner, MediaError, UnsupportedFormat
from captioner.inference import ClipInput
from service.batching import (
    BatcherError,
    ClientGone,
    DeadlineExceeded,
    DynamicBatcher,
    QueueFull,
    ShuttingDown,
)
from service.metrics import Metrics
from service.schemas import ActivityResponse, CaptionResponse, ModelsResponse, Problem
from service.settings import Settings

log = logging.getLogger("captioner.service")

STATIC = Path(__file__).resolve().parent / "static"
CAPTION_ROUTE = "/v1/caption"
ACTIVITY_ROUTE = "/v1/activity"
_INFERENCE = frozenset({CAPTION_ROUTE, ACTIVITY_ROUTE})
_OTHER_BODY_LIMIT = 64 * 1024
_ROUTES = frozenset(
    {"/", "/healthz", "/readyz", "/metrics", "/v1/models", "/docs", "/openapi.json"} | _INFERENCE
)
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": text}
    for code, text in {
        401: "missing or wrong API key",
        413: "request body too large, or too many files",
        415: "not an allowed image or video type",
        422: "undecodable input or invalid options",
        429: "queue full: retry after the Retry-After header's seconds",
        503: "models not ready yet, or shutting down",
        504: "the request did not finish within its deadline (request_timeout_s)",
    }.items()
}


# ------------------------------------------------------------------------------ the runtime


@dataclass
class _Timed:
    """A batch result with when its batch started, how long it ran and how many rode in it."""

    value: Any
    started: float
    compute_s: float
    batch_size: int


@dataclass
class _CaptionJob:
    image: torch.Tensor  # (3, S, S) uint8
    beam_size: int | None
    n_best: int


@dataclass
class _ActivityJob:
    clip: ClipInput  # decoded frames for the whole clip and any timeline windows
    top_k: int

    @property
    def frames(self) -> int:
        return self.clip.cost


class Runtime:
    """The loaded models, their batchers and the decoding pool; owned by one app."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.captioner: Captioner | None = None
        self.activity: ActivityClassifier | None = None
        self.batchers: dict[str, DynamicBatcher] = {}
        self.decode_pool = ThreadPoolExecutor(settings.decode_workers, "captioner-decode")
        self.ready = False
        self.error: str | None = None
        self.inflight = 0  # requests inside the inference routes (counted by UploadGate)
        self._loading: asyncio.Task | None = None

    # -- life cycle -------------------------------------------------------------------------

    def start_loading(self) -> None:
        self._loading = asyncio.create_task(self._load())

    async def _load(self) -> None:
        try:
            await asyncio.to_thread(self._load_models)
            s = self.settings
            if self.captioner is not None:
                beam = self.captioner.default_search.beam_size
                self.batchers["caption"] = DynamicBatcher(
                    self._caption_batch,
                    max_batch_size=s.max_batch_size,
                    max_wait_ms=s.max_wait_ms,
                    max_queue=s.max_queue,
                    # Beam search costs images x beams: a batch of wide beams holds fewer images.
                    cost=lambda job: job.beam_size or beam,
                    max_batch_cost=s.max_batch_size * beam,
                    name="caption",
                    observer=self.metrics.observer("caption"),
                )
            if self.activity is not None:
                self.batchers["activity"] = DynamicBatcher(
                    self._activity_batch,
                    max_batch_size=s.max_batch_size,
                    max_wait_ms=s.max_wait_ms,
                    max_queue=s.max_queue,
                    cost=lambda job: job.frames,
                    max_batch_cost=s.max_batch_frames,
                    name="activity",
                    observer=self.metrics.observer("activity"),
                )
            for batcher in self.batchers.values():
                await batcher.start()
            self.ready = True
            self.metrics.ready.set(1)
            log.info("ready: %s", ", ".join(self.batchers))
        except Exception as exc:  # a bad bundle must leave /healthz up and say why on /readyz
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("loading the models failed")

    def _load_models(self) -> None:
        s = self.settings
        if s.enable_caption:
            path = s.caption_bundle or captioner.default_bundle_dir("caption")
            model = captioner.load(path, device=s.device)
            if not isinstance(model, Captioner):
                raise ValueError(f"{path} is not a caption bundle")
            self.captioner = model
        if s.enable_activity:
            path = s.activity_bundle or captioner.default_bundle_dir("activity")
            model = captioner.load(path, device=s.device)
            if not isinstance(model, ActivityClassifier):
                raise ValueError(f"{path} is not an activity bundle")
            self.activity = model
        if s.warmup:
            self._warm_up()

    def _warm_up(self) -> None:
        """One tiny batch per model, so the first request does not pay for lazy set-up."""
        if self.captioner is not None:
            size = self.captioner.preprocess.size
            blank = torch.zeros(3, size, size, dtype=torch.uint8)
            self._caption_batch([_CaptionJob(blank, None, 1)])
        if self.activity is not None:
            size = self.activity.size
            frames = torch.zeros(1, 3, size, size, dtype=torch.uint8)
            clip = ClipInput(frames, [0] * self.activity.num_frames)
            self._activity_batch([_ActivityJob(clip, 1)])

    async def close(self) -> None:
        """Graceful: finish what is queued and in flight, then free the threads."""
        self.ready = False
        self.metrics.ready.set(0)
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        for batcher in self.batchers.values():
            await batcher.stop(drain_timeout_s=self.settings.request_timeout_s)
        self.decode_pool.shutdown(wait=False, cancel_futures=True)

    # -- batch functions (run on each batcher's model thread) --------------------------------

    def _caption_batch(self, jobs: list[_CaptionJob]) -> list[_Timed]:
        assert self.captioner is not None
        started = time.perf_counter()
        groups: dict[tuple[int | None, int], list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault((job.beam_size, job.n_best), []).append(i)
        out: list[Any] = [None] * len(jobs)
        for (beam, n_best), idx in groups.items():
            results = self.captioner.caption_batch(
                [jobs[i].image for i in idx], beam_size=beam, n_best=n_best, return_attention=True
            )
            for i, result in zip(idx, results, strict=True):
                out[i] = result
        spent = time.perf_counter() - started
        return [_Timed(r, started, spent, len(jobs)) for r in out]

    def _activity_batch(self, jobs: list[_ActivityJob]) -> list[_Timed]:
        assert self.activity is not None
        started = time.perf_counter()
        results = self.activity.classify_inputs(
            [job.clip for job in jobs], [job.top_k for job in jobs]
        )
        spent = time.perf_counter() - started
        return [_Timed(r, started, spent, len(jobs)) for r in results]

    # -- used by the routes ------------------------------------------------------------------

    async def decode(self, fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
        """Run a decoding function in the CPU pool -> (its result, milliseconds)."""
        t = time.perf_counter()
        value = await asyncio.get_running_loop().run_in_executor(self.decode_pool, fn, *args)
        return value, (time.perf_counter() - t) * 1000

    async def submit(self, name: str, job: Any, request: Request) -> _Timed:
        # The deadline counts from the request's arrival, upload and decoding included.
        arrived = getattr(request.state, "arrived", time.perf_counter())
        left = self.settings.request_timeout_s - (time.perf_counter() - arrived)
        if left <= 0:
            self.metrics.rejections.labels("deadline").inc()
            raise _batcher_http_error(DeadlineExceeded())
        try:
            return await self.batchers[name].submit(
                job, timeout_s=left, is_disconnected=request.is_disconnected
            )
        except BatcherError as exc:
            raise _batcher_http_error(exc) from None
        except Exception as exc:  # the model failed: only this batch's requests see it
            log.exception("%s batch failed", name)
            raise HTTPException(
                500, f"the model failed on this batch ({type(exc).__name__})"
            ) from None


def _batcher_http_error(exc: BatcherError) -> HTTPException:
    if isinstance(exc, QueueFull):
        seconds = max(1, math.ceil(getattr(exc, "retry_after_s", 1.0)))
        return HTTPException(
            429, f"the server is busy: retry in {seconds} s", {"Retry-After": str(seconds)}
        )
    if isinstance(exc, DeadlineExceeded):
        return HTTPException(504, "the request did not finish within its deadline; retry later")
    if isinstance(exc, ShuttingDown):
        return HTTPException(503, "the server is shutting down: retry", {"Retry-After": "5"})
    if isinstance(exc, ClientGone):
        return HTTPException(499, "client closed the request")
    return HTTPException(500, f"the model failed on this batch ({type(exc).__name__})")


def _timings(decode_ms: float, submitted: float, timed: _Timed, t0: float) -> dict[str, Any]:
    now = time.perf_counter()
    return {
        "decode_ms": round(decode_ms, 2),
        "queue_ms": round(max(0.0, timed.started - submitted) * 1000, 2),
        "compute_ms": round(timed.compute_s * 1000, 2),
        "total_ms": round((now - t0) * 1000, 2),
        "batch_size": timed.batch_size,
    }


def _model_info(model: Captioner | ActivityClassifier, task: str) -> dict[str, str]:
    return {"name": model.name, "version": str(model.manifest.get("version", "")), "task": task}


# ------------------------------------------------------------------------ upload gate (ASGI)


def key_matches(headers: Headers, key: str) -> bool:
    """``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, compared in constant time."""
    given = headers.get("x-api-key")
    auth = headers.get("authorization", "")
    if given is None and auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    return given is not None and hmac.compare_digest(given.encode(), key.encode())


class UploadGate:
    """Refuses uploads before reading them: API key, readiness, and a byte count as they stream.

    Starlette and uvicorn put no cap on a body and Content-Length can lie, so the bytes are
    counted as they arrive and the request fails with 413 at the first byte over the limit.
    """

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        s = self.runtime.settings
        path = scope["path"]
        headers = Headers(scope=scope)
        if path in _INFERENCE:
            if s.api_key is not None and not key_matches(headers, s.api_key):
                await _problem(send, 401, _AUTH_HELP, {"WWW-Authenticate": "Bearer"})
                return
            if not self.runtime.ready:
                await _problem(send, 503, _not_ready(self.runtime), {"Retry-After": "5"})
                return
            if self.runtime.inflight >= s.max_inflight:
                self.runtime.metrics.rejections.labels("inflight").inc()
                await _problem(send, 429, "the server is busy: retry in 1 s", {"Retry-After": "1"})
                return
        limit = {CAPTION_ROUTE: s.max_image_bytes, ACTIVITY_ROUTE: s.max_video_bytes}.get(
            path, _OTHER_BODY_LIMIT
        )
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _problem(send, 413, _too_large(limit))
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

        if path not in _INFERENCE:
            await self.app(scope, counted, send)
            return
        scope.setdefault("state", {})["arrived"] = time.perf_counter()
        self.runtime.inflight += 1
        try:
            await self.app(scope, counted, send)
        finally:
            self.runtime.inflight -= 1


_AUTH_HELP = "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


def _too_large(limit: int) -> str:
    return f"request body is over the {limit / 2**20:.1f} MiB limit for this route; send less"


def _not_ready(runtime: Runtime) -> str:
    if runtime.error:
        return f"models failed to load: {runtime.error}"
    return "models are loading: retry shortly (GET /readyz turns 200 when ready)"


async def _problem(send: Send, status: int, detail: str, headers: dict | None = None) -> None:
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
        route = scope["path"] if scope["path"] in _ROUTES else "other"
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


# ----------------------------------------------------------------------------------- routes


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
_bearer = HTTPBearer(auto_error=False, description="the API key, when the server has one")
_header_key = APIKeyHeader(name="X-API-Key", auto_error=False)


def require_key(
    runtime: RuntimeDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header_key)],
) -> None:
    """The same check as the gate, declared here so the OpenAPI schema shows it."""
    key = runtime.settings.api_key
    if key is None:
        return
    given = header if header is not None else (bearer.credentials if bearer else None)
    if given is None or not hmac.compare_digest(given.encode(), key.encode()):
        raise HTTPException(401, _AUTH_HELP, {"WWW-Authenticate": "Bearer"})


# What both inference routes share: the error responses, no nulls in bodies, the API key.
_INFERENCE_ROUTE: dict[str, Any] = {
    "responses": _ERRORS,
    "response_model_exclude_none": True,
    "dependencies": [Depends(require_key)],
}


def _ready_model(runtime: Runtime, name: str) -> Any:
    model = runtime.captioner if name == "caption" else runtime.activity
    if not runtime.ready or model is None or name not in runtime.batchers:
        if runtime.ready:
            raise HTTPException(404, f"this server does not serve {name}; enable it in settings")
        raise HTTPException(503, _not_ready(runtime), {"Retry-After": "5"})
    return model


def _load_image(model: Captioner, data: bytes) -> tuple[torch.Tensor, tuple[int, int]]:
    tensor = model.load_image(data)
    with Image.open(io.BytesIO(data)) as img:  # header only: the size the user sent
        return tensor, img.size


def _media_status(errors: list[MediaError]) -> int:
    return 415 if all(isinstance(e, UnsupportedFormat) for e in errors) else 422


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service app; settings default to the ``CAPTIONER_*`` environment."""
    settings = settings or Settings()
    metrics = Metrics()
    runtime = Runtime(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        runtime.start_loading()
        try:
            yield
        finally:
            await runtime.close()

    app = FastAPI(
        title="captioner",
        version=captioner.__version__,
        summary="Image captions and video activity labels from a CNN + LSTM",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.settings = settings
    app.add_middleware(UploadGate, runtime=runtime)
    app.add_middleware(RequestMetrics, metrics=metrics)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        index = STATIC / "index.html"
        if index.is_file():
            return FileResponse(index, media_type="text/html")
        return HTMLResponse("<h1>captioner</h1><p>See <a href='/docs'>/docs</a>.</p>")

    @app.get("/healthz", summary="alive")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", summary="ready once the models are loaded and warm", responses=_ERRORS)
    async def readyz(rt: RuntimeDep) -> JSONResponse:
        if rt.ready:
            return JSONResponse({"status": "ready", "models": sorted(rt.batchers)})
        state = "failed" if rt.error else "loading"
        return JSONResponse(
            {"status": state, "detail": _not_ready(rt)},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus(rt: RuntimeDep) -> Response:
        for name, batcher in rt.batchers.items():
            rt.metrics.queue_depth.labels(name).set(batcher.depth)
        return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", response_model=ModelsResponse, summary="loaded bundles")
    async def models(rt: RuntimeDep) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for task, model in (("caption", rt.captioner), ("activity", rt.activity)):
            if model is not None:
                manifest = {k: v for k, v in model.manifest.items() if k != "vocabulary"}
                if task == "caption":
                    manifest["vocabulary_size"] = len(model.vocab)
                out[task] = manifest
        return {"models": out}

    @app.post(
        CAPTION_ROUTE,
        response_model=CaptionResponse,
        summary="caption one or more images",
        **_INFERENCE_ROUTE,
    )
    async def caption(
        request: Request,
        rt: RuntimeDep,
        file: Annotated[list[UploadFile], File(description="image files (JPEG, PNG, ...)")],
        beam_size: Annotated[int | None, Query(ge=1, le=50)] = None,
        n_best: Annotated[int, Query(ge=1, le=50)] = 1,
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        model: Captioner = _ready_model(rt, "caption")
        s = rt.settings
        if len(file) > s.max_files:
            raise HTTPException(413, f"{len(file)} files sent; at most {s.max_files} per request")
        beam = beam_size or model.default_search.beam_size
        if beam > s.max_beam_size:
            raise HTTPException(422, f"beam_size {beam} is above this server's {s.max_beam_size}")
        if n_best > beam:
            raise HTTPException(422, f"n_best ({n_best}) cannot exceed beam_size ({beam})")
        datas = [await f.read() for f in file]
        names = [f.filename or f"file{i}" for i, f in enumerate(file)]
        decoded = await asyncio.gather(
            *(rt.decode(_load_image, model, d) for d in datas), return_exceptions=True
        )
        errors = [d for d in decoded if isinstance(d, BaseException)]
        for err in errors:
            if not isinstance(err, MediaError):
                raise err
        if len(errors) == len(decoded):
            detail = "; ".join(f"{n}: {e}" for n, e in zip(names, errors, strict=True))
            raise HTTPException(_media_status(errors), detail)
        ok = [i for i, d in enumerate(decoded) if not isinstance(d, BaseException)]
        decode_ms = max(decoded[i][1] for i in ok)
        submitted = time.perf_counter()
        timed = await asyncio.gather(
            *(
                rt.submit(
                    "caption",
                    _CaptionJob(decoded[i][0][0], beam_size, n_best),
                    request,
                )
                for i in ok
            )
        )
        by_index = dict(zip(ok, timed, strict=True))
        results = []
        for i, name in enumerate(names):
            if i not in by_index:
                results.append({"filename": name, "error": str(decoded[i])})
                continue
            item = by_index[i].value.to_dict()
            width, height = decoded[i][0][1]
            item.update(filename=name, width=width, height=height)
            item.pop("finished", None)
            results.append(item)
        return {
            "model": _model_info(model, "caption"),
            "results": results,
            "timings": _timings(decode_ms, submitted, timed[0], t0),
        }

    @app.post(
        ACTIVITY_ROUTE,
        response_model=ActivityResponse,
        summary="label the activity in a video",
        **_INFERENCE_ROUTE,
    )
    async def activity(
        request: Request,
        rt: RuntimeDep,
        file: Annotated[UploadFile, File(description="a video (MP4/MOV, AVI, MKV/WebM)")],
        top_k: Annotated[int, Query(ge=1, le=100)] = 5,
        timeline: bool = False,
        window: Annotated[float, Query(gt=0.0, le=600.0)] = 2.0,
        stride: Annotated[float, Query(gt=0.0, le=600.0)] = 1.0,
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        model: ActivityClassifier = _ready_model(rt, "activity")
        if timeline and stride > window:
            raise HTTPException(422, f"stride ({stride}) must not exceed window ({window})")
        data = await file.read()

        def decode() -> _ActivityJob:
            clip = model.prepare(
                data, timeline, window, stride, max_windows=rt.settings.max_timeline_windows
            )
            return _ActivityJob(clip, top_k)

        try:
            job, decode_ms = await rt.decode(decode)
        except MediaError as exc:
            raise HTTPException(_media_status([exc]), str(exc)) from None
        submitted = time.perf_counter()
        timed = await rt.submit("activity", job, request)
        return {
            "model": _model_info(model, "activity"),
            "filename": file.filename or "video",
            **timed.value.to_dict(),
            "timings": _timings(decode_ms, submitted, timed, t0),
        }

    return app
