"""The routes: parse the request, call the runtime, shape the JSON. Nothing else lives here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from captioner import ActivityClassifier, Captioner, MediaError, UnsupportedFormat
from captioner.inference import check_n_best
from service.middleware import ACTIVITY_ROUTE, CAPTION_ROUTE
from service.runtime import ActivityJob, CaptionJob, Runtime, Timed
from service.schemas import ActivityResponse, CaptionResponse, ModelsResponse, Problem

STATIC = Path(__file__).resolve().parent / "static"
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": text}
    for code, text in {
        401: "missing or wrong API key",
        413: "request body too large, too many files, or images too large to decode here",
        415: "not an allowed image or video type",
        422: "undecodable input or invalid options",
        429: "busy (queue, in-flight requests or decode memory): retry after Retry-After seconds",
        503: "models not ready yet, or shutting down",
        504: "the request did not finish within its deadline (request_timeout_s)",
    }.items()
}


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
# Declared for the OpenAPI schema only: UploadGate checks the key before the body is read.
_KEY_SCHEMES = [
    Depends(HTTPBearer(auto_error=False, description="the API key, when the server has one")),
    Depends(APIKeyHeader(name="X-API-Key", auto_error=False)),
]
# What both inference routes share: the error responses, no nulls in bodies, the API key.
_INFERENCE_ROUTE: dict[str, Any] = {
    "responses": ERRORS,
    "response_model_exclude_none": True,
    "dependencies": _KEY_SCHEMES,
}


async def page() -> Response:
    index = STATIC / "index.html"
    if index.is_file():
        return FileResponse(index, media_type="text/html")
    return HTMLResponse("<h1>captioner</h1><p>See <a href='/docs'>/docs</a>.</p>")


async def swagger(request: Request) -> HTMLResponse:
    """Swagger UI from the package's own copy: the page works with no internet access."""
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - API",
        swagger_js_url="/static/swagger-ui-bundle.js",
        swagger_css_url="/static/swagger-ui.css",
        swagger_favicon_url="/static/favicon.png",
    )


async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - API reference",
        redoc_js_url="/static/redoc.standalone.js",
        redoc_favicon_url="/static/favicon.png",
        with_google_fonts=False,
    )


async def healthz() -> dict[str, str]:
    return {"status": "alive"}


async def readyz(rt: RuntimeDep) -> JSONResponse:
    if rt.ready:
        body: dict[str, Any] = {"status": "ready", "models": sorted(rt.batchers)}
        if rt.models.failures:  # allow_partial: serving, but not everything that was asked
            body |= {"status": "partial", "failed": rt.models.failures}
        return JSONResponse(body)
    state = "failed" if rt.error else "loading"
    return JSONResponse(
        {"status": state, "detail": rt.not_ready_reason()},
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def prometheus(rt: RuntimeDep) -> Response:
    for name, batcher in rt.batchers.items():
        rt.metrics.queue_depth.labels(name).set(batcher.depth)
    return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def models(rt: RuntimeDep) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for task in ("caption", "activity"):
        model = rt.models.get(task)
        if model is not None:
            out[task] = _summary(model, task)
    return {"models": out}


def _summary(model: Captioner | ActivityClassifier, task: str) -> dict[str, Any]:
    """What a client may know of a bundle: never its training command or data paths."""
    out = _model_info(model, task)
    if isinstance(model, Captioner):
        out["vocabulary_size"] = len(model.vocab)
    else:
        out["classes"] = list(model.classes)
    if model.metrics:
        out["metrics"] = model.metrics
    return out


def _model_info(model: Captioner | ActivityClassifier, task: str) -> dict[str, Any]:
    return {"name": model.name, "version": model.version, "task": task}


def _timings(decode_ms: float, submitted: float, timed: Timed, t0: float) -> dict[str, Any]:
    return {
        "decode_ms": round(decode_ms, 2),
        "queue_ms": round(max(0.0, timed.started - submitted) * 1000, 2),
        "compute_ms": round(timed.compute_s * 1000, 2),
        "total_ms": round((time.perf_counter() - t0) * 1000, 2),
        "batch_size": timed.batch_size,
    }


def _media_status(errors: list[MediaError]) -> int:
    return 415 if all(isinstance(e, UnsupportedFormat) for e in errors) else 422


async def caption(
    request: Request,
    rt: RuntimeDep,
    file: Annotated[list[UploadFile], File(description="image files (JPEG, PNG, ...)")],
    beam_size: Annotated[int | None, Query(ge=1, le=50)] = None,
    n_best: Annotated[int, Query(ge=1, le=50)] = 1,
    attention: Annotated[
        bool, Query(description="also return one attention grid per word (large)")
    ] = False,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    model: Captioner = rt.model("caption")
    s = rt.settings
    if len(file) > s.max_files:
        raise HTTPException(413, f"{len(file)} files sent; at most {s.max_files} per request")
    beam = beam_size or model.default_search.beam_size
    if beam > s.max_beam_size:
        raise HTTPException(422, f"beam_size {beam} is above this server's {s.max_beam_size}")
    try:
        check_n_best(n_best, beam)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    datas = [await f.read() for f in file]
    names = [f.filename or f"file{i}" for i, f in enumerate(file)]
    started = time.perf_counter()
    decoded = await rt.decode_images(model, datas, request)
    decode_ms = (time.perf_counter() - started) * 1000
    errors = [d for d in decoded if isinstance(d, MediaError)]
    if len(errors) == len(decoded):
        detail = "; ".join(f"{n}: {e}" for n, e in zip(names, errors, strict=True))
        raise HTTPException(_media_status(errors), detail)
    ok = [i for i, d in enumerate(decoded) if not isinstance(d, MediaError)]
    submitted = time.perf_counter()
    jobs = [CaptionJob(decoded[i][0], beam_size, n_best, attention) for i in ok]
    timed = await asyncio.gather(*(rt.submit("caption", job, request) for job in jobs))
    by_index = dict(zip(ok, timed, strict=True))
    results = []
    for i, name in enumerate(names):
        if i not in by_index:
            results.append({"filename": name, "error": str(decoded[i])})
            continue
        item = by_index[i].value.to_record(details=True)
        probe = decoded[i][1]
        if probe is not None:  # the size as the picture is shown, after EXIF rotation
            item.update(width=probe.width, height=probe.height)
        results.append({**item, "filename": name})
    return {
        "model": _model_info(model, "caption"),
        "results": results,
        "timings": _timings(decode_ms, submitted, timed[0], t0),
    }


async def activity(
    request: Request,
    rt: RuntimeDep,
    file: Annotated[UploadFile, File(description="a video (MP4/MOV, AVI, MKV/WebM)")],
    top_k: Annotated[int, Query(ge=1, le=100)] = 5,
    timeline: bool = False,
    window: Annotated[
        float | None,
        Query(gt=0.0, le=600.0, description="seconds; default: the model's training clip length"),
    ] = None,
    stride: Annotated[
        float | None, Query(gt=0.0, le=600.0, description="seconds; default: half the window")
    ] = None,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    model: ActivityClassifier = rt.model("activity")
    if timeline:
        try:  # resolves the defaults and checks them (captioner.inference.check_timeline)
            window, stride = model.timeline_window(window, stride)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
    data = await file.read()

    def decode(should_stop: Callable[[], bool]) -> ActivityJob:
        clip = model.prepare(
            data,
            timeline,
            window,
            stride,
            max_windows=rt.settings.max_timeline_windows,
            should_stop=should_stop,
        )
        return ActivityJob(clip, top_k)

    try:
        job, decode_ms = await rt.decode_video(decode, request)
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


def add_routes(app: FastAPI) -> None:
    """Register every route on ``app`` (directly, so ``app.routes`` lists each path)."""
    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/docs", swagger, methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", redoc, methods=["GET"], include_in_schema=False)
    app.add_api_route("/healthz", healthz, methods=["GET"], summary="alive")
    app.add_api_route(
        "/readyz",
        readyz,
        methods=["GET"],
        summary="ready once the models are loaded and warm",
        responses=ERRORS,
    )
    app.add_api_route(
        "/metrics",
        prometheus,
        methods=["GET"],
        summary="Prometheus metrics (needs the API key when one is set, unless metrics_open)",
        response_class=Response,
    )
    app.add_api_route(
        "/v1/models",
        models,
        methods=["GET"],
        response_model=ModelsResponse,
        response_model_exclude_none=True,
        summary="the models served",
    )
    app.add_api_route(
        CAPTION_ROUTE,
        caption,
        methods=["POST"],
        response_model=CaptionResponse,
        summary="caption one or more images",
        **_INFERENCE_ROUTE,
    )
    app.add_api_route(
        ACTIVITY_ROUTE,
        activity,
        methods=["POST"],
        response_model=ActivityResponse,
        summary="label the activity in a video",
        **_INFERENCE_ROUTE,
    )
