"""The routes: parse the request, call the runtime, shape the JSON. Nothing else lives here.

No ``from __future__ import annotations`` here: the inference routes are built per app with
bounds from its settings, and FastAPI must see those annotations as objects, not strings.
"""

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from captioner import ActivityClassifier, Captioner, MediaError, UnsupportedFormat
from captioner.inference import check_n_best
from service.middleware import ACTIVITY_ROUTE, CAPTION_ROUTE
from service.pages import add_pages
from service.runtime import ActivityJob, CaptionJob, Runtime, Timed
from service.schemas import ActivityResponse, CaptionResponse, ModelsResponse, Problem
from service.settings import Settings
from service.uploads import ImageProbe

MAX_TOP_K = 100  # labels per video answer
MAX_WINDOW_S = 600.0  # seconds: the longest timeline window or stride
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": text}
    for code, text in {
        401: "missing or wrong API key",
        404: "this server does not serve that task (started without it)",
        408: "the request body did not arrive within body_timeout_s, or came slower than "
        "min_upload_rate_kb_s after upload_grace_s",
        413: "request body too large, too many files, or images too large to decode here",
        415: "not an allowed image or video type",
        422: "undecodable input or invalid options",
        429: "busy (queue, in-flight requests, uploads in progress or decode memory), or too "
        "many wrong API keys from this address: retry after Retry-After seconds",
        500: "the model failed on the batch this request rode in",
        503: "models not ready yet, failed to load, or shutting down",
        504: "the request did not finish within its deadline (request_timeout_s)",
    }.items()
}


async def _runtime(request: Request) -> Runtime:
    # async: FastAPI runs a plain-def dependency in its threadpool, a thread hand-off per request
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
        out["metrics"] = public_figures(model.metrics)
    return out


_HIDDEN_KEYS = frozenset({"command", "cmd", "argv"})
_FILE_SUFFIX = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,9}$")


def looks_like_path(value: str) -> bool:
    """``data/objects/novel.json``, ``C:\\runs``, ``~/x``, ``novel.json``: a file or folder."""
    return (
        "/" in value or "\\" in value or value.startswith("~") or bool(_FILE_SUFFIX.search(value))
    )


def public_figures(value: Any) -> Any:
    """Evaluation figures without what a client must not see: path-like strings (data sets,
    plots, bundle folders) and commands, at any depth. Keys are kept (class-pair names)."""
    if isinstance(value, dict):
        return {
            k: public_figures(v)
            for k, v in value.items()
            if k not in _HIDDEN_KEYS and not (isinstance(v, str) and looks_like_path(v))
        }
    if isinstance(value, list | tuple):
        return [public_figures(v) for v in value if not (isinstance(v, str) and looks_like_path(v))]
    return value


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


def _check_count(files: list[UploadFile], s: Settings) -> None:
    if len(files) > s.max_files:
        raise HTTPException(413, f"{len(files)} files sent; at most {s.max_files} per request")


def _all_failed(names: list[str], errors: list[MediaError]) -> HTTPException:
    """Every file of the request was refused: the request fails, each file's reason named."""
    detail = "; ".join(f"{n}: {e}" for n, e in zip(names, errors, strict=True))
    return HTTPException(_media_status(errors), detail)


def _names(files: list[UploadFile], stem: str) -> list[str]:
    return [f.filename or f"{stem}{i}" for i, f in enumerate(files)]


# ---------------------------------------------------------------------------- captions


def _check_search(model: Captioner, s: Settings, beam_size: int | None, n_best: int) -> None:
    """The search options against this server's limits (the query bounds check the rest)."""
    beam = beam_size or model.default_search.beam_size
    if beam > s.max_beam_size:
        raise HTTPException(422, f"beam_size {beam} is above this server's {s.max_beam_size}")
    try:
        check_n_best(n_best, beam)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


def _caption_item(result: Any, probe: ImageProbe | None) -> dict[str, Any]:
    """One image's answer, from its CaptionResult and its header probe."""
    item = result.to_record(details=True)
    if probe is not None:  # the size as the picture is shown, after EXIF rotation
        item.update(width=probe.width, height=probe.height)
    return item


async def run_caption(
    request: Request,
    rt: Runtime,
    files: list[UploadFile],
    beam_size: int | None,
    n_best: int,
    attention: bool,
) -> dict[str, Any]:
    """Caption every uploaded image: one result per file, a per-file error for a bad one."""
    t0 = time.perf_counter()
    model: Captioner = rt.model("caption")
    s = rt.settings
    _check_count(files, s)
    _check_search(model, s, beam_size, n_best)
    datas = [await f.read() for f in files]
    names = _names(files, "file")
    started = time.perf_counter()
    decoded = await rt.decode_images(model, datas, request)
    decode_ms = (time.perf_counter() - started) * 1000
    errors = [d for d in decoded if isinstance(d, MediaError)]
    if len(errors) == len(decoded):
        raise _all_failed(names, errors)
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
        results.append({**_caption_item(by_index[i].value, decoded[i][1]), "filename": name})
    return {
        "model": _model_info(model, "caption"),
        "results": results,
        "timings": _timings(decode_ms, submitted, timed[0], t0),
    }


def caption_route(s: Settings) -> Callable[..., Awaitable[dict[str, Any]]]:
    """The caption route, its bounds taken from this server's settings (the schema shows them)."""

    async def caption(
        request: Request,
        rt: RuntimeDep,
        file: Annotated[
            list[UploadFile],
            File(
                description=f"image files (JPEG, PNG, ...); repeat the field for several, "
                f"at most {s.max_files} (more: 413)",
                json_schema_extra={"maxItems": s.max_files},
            ),
        ],
        beam_size: Annotated[
            int | None,
            Query(ge=1, le=s.max_beam_size, description="default: the model's own beam size"),
        ] = None,
        n_best: Annotated[
            int, Query(ge=1, le=s.max_beam_size, description="alternatives; at most beam_size")
        ] = 1,
        attention: Annotated[
            bool, Query(description="also return one attention grid per word (large)")
        ] = False,
    ) -> dict[str, Any]:
        return await run_caption(request, rt, file, beam_size, n_best, attention)

    return caption


# ---------------------------------------------------------------------------- activity


def _timeline_options(
    model: ActivityClassifier, window: float | None, stride: float | None
) -> tuple[float, float]:
    """The timeline's window and stride, the model's defaults filled in, checked."""
    try:  # resolves the defaults and checks them (captioner.inference.check_timeline)
        return model.timeline_window(window, stride)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


def _activity_item(result: Any) -> dict[str, Any]:
    """One video's answer, from its ActivityResult."""
    return result.to_dict()


async def run_activity(
    request: Request,
    rt: Runtime,
    files: list[UploadFile],
    top_k: int,
    timeline: bool,
    window: float | None,
    stride: float | None,
) -> dict[str, Any]:
    """Label every uploaded video: one result per file, a per-file error for a bad one.

    The videos share the request's body limit and deadline. Each header is checked first
    (over a limit or the decode-work cap: that file's error, before any decoding); the rest
    decode in the video pool (at most ``video_workers`` at once, apart from the images) and
    ride in the model's batches like any other.
    """
    t0 = time.perf_counter()
    model: ActivityClassifier = rt.model("activity")
    s = rt.settings
    _check_count(files, s)
    if timeline:
        window, stride = _timeline_options(model, window, stride)
    datas = [await f.read() for f in files]
    names = _names(files, "video")

    def decoder(path: Path) -> Callable[[Callable[[], bool]], ActivityJob]:
        def decode(should_stop: Callable[[], bool]) -> ActivityJob:
            clip = model.prepare(
                path,
                timeline,
                window,
                stride,
                max_windows=s.max_timeline_windows,
                should_stop=should_stop,
            )
            return ActivityJob(clip, top_k)

        return decode

    async def one(staged: Path | MediaError) -> Any:
        if isinstance(staged, MediaError):
            return staged
        return await rt.decode_video(decoder(staged), request)

    started = time.perf_counter()
    with contextlib.ExitStack() as uploads:  # the staged files go when the decodes are done
        staged = await rt.videos.stage(model, datas, uploads)
        del datas  # the bytes are in the files now
        outcomes = await asyncio.gather(*(one(v) for v in staged), return_exceptions=True)
    decode_ms = (time.perf_counter() - started) * 1000
    for outcome in outcomes:  # a deadline or a gone client fails the whole request
        if isinstance(outcome, BaseException) and not isinstance(outcome, MediaError):
            raise outcome
    errors = [o for o in outcomes if isinstance(o, MediaError)]
    if len(errors) == len(outcomes):
        raise _all_failed(names, errors)
    ok = [i for i, o in enumerate(outcomes) if not isinstance(o, MediaError)]
    submitted = time.perf_counter()
    timed = await asyncio.gather(*(rt.submit("activity", outcomes[i][0], request) for i in ok))
    by_index = dict(zip(ok, timed, strict=True))
    results = []
    for i, name in enumerate(names):
        if i not in by_index:
            results.append({"filename": name, "error": str(outcomes[i])})
            continue
        results.append({"filename": name, **_activity_item(by_index[i].value)})
    return {
        "model": _model_info(model, "activity"),
        "results": results,
        "timings": _timings(decode_ms, submitted, timed[0], t0),
    }


def activity_route(s: Settings) -> Callable[..., Awaitable[dict[str, Any]]]:
    """The activity route, its bounds taken from this server's settings."""

    async def activity(
        request: Request,
        rt: RuntimeDep,
        file: Annotated[
            list[UploadFile],
            File(
                description=f"videos (MP4/MOV, AVI, MKV/WebM); repeat the field for several, "
                f"at most {s.max_files} (more: 413)",
                json_schema_extra={"maxItems": s.max_files},
            ),
        ],
        top_k: Annotated[int, Query(ge=1, le=MAX_TOP_K)] = 5,
        timeline: bool = False,
        window: Annotated[
            float | None,
            Query(
                gt=0.0,
                le=MAX_WINDOW_S,
                description="seconds; default: the model's training clip length",
            ),
        ] = None,
        stride: Annotated[
            float | None,
            Query(gt=0.0, le=MAX_WINDOW_S, description="seconds; default: half the window"),
        ] = None,
    ) -> dict[str, Any]:
        return await run_activity(request, rt, file, top_k, timeline, window, stride)

    return activity


def add_routes(app: FastAPI, settings: Settings) -> None:
    """Register every route on ``app`` (directly, so ``app.routes`` lists each path); the
    inference routes' limits come from ``settings``, so the schema states the real ones."""
    add_pages(app)
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
        caption_route(settings),
        methods=["POST"],
        response_model=CaptionResponse,
        summary="caption one or more images",
        **_INFERENCE_ROUTE,
    )
    app.add_api_route(
        ACTIVITY_ROUTE,
        activity_route(settings),
        methods=["POST"],
        response_model=ActivityResponse,
        summary="label the activity in one or more videos",
        **_INFERENCE_ROUTE,
    )
