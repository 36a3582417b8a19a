"""The HTTP service: ``create_app(settings)`` wires settings, runtime, middleware and routes.

Where things live: ``service/routes.py`` (the routes), ``service/runtime.py`` (models, warm-up,
model workers, batchers, readiness), ``service/middleware.py`` (request ids and the access log,
upload gate, API key, request metrics), ``service/clients.py`` (upload deadline and minimum
rate, the wrong-key throttle), ``service/errors.py`` (every error's HTTP answer),
``service/uploads.py`` (image header probe, decode budget, memory trim) and
``service/videos.py`` (video header check and the video pool).
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

import captioner
from service.errors import install_error_handlers
from service.metrics import Metrics
from service.middleware import RequestContext, RequestMetrics, UploadGate, key_matches
from service.pages import STATIC
from service.routes import add_routes
from service.runtime import LoadedModels, Runtime
from service.settings import Settings

__all__ = ["RequestContext", "RequestMetrics", "Runtime", "UploadGate", "create_app", "key_matches"]

ERRORS_DOC = """\
**Errors.** Every 4xx and 5xx answer is a JSON `Problem`: `{"detail": "...", "errors": [...]}`.
`detail` is one line saying what went wrong and what to do; `errors` is there only for a request
that failed validation (422): one entry per problem (`loc`, `msg`, `type`, and the value sent,
cut to 80 characters). Unknown routes (404) and methods (405) answer in the same shape.

**Request ids.** Send `X-Request-ID` (up to 128 letters, digits and `._:@+=/-`) to have it
echoed; otherwise the server makes one. Every answer carries it, and the access log names it.
"""


def create_app(settings: Settings | None = None, models: LoadedModels | None = None) -> FastAPI:
    """The service app; settings default to the ``CAPTIONER_*`` environment.

    ``models`` are models already loaded and warmed (``captioner serve`` loads them before it
    binds the port); without them the app loads them in its lifespan, in a thread, so
    ``/healthz`` answers meanwhile and ``/readyz`` says when they are ready or why they failed.
    """
    settings = settings or Settings()
    metrics = Metrics()
    runtime = Runtime(settings, metrics, models)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        runtime.start_loading()
        try:
            yield
        finally:
            await runtime.close()

    app = FastAPI(
        title="captioner",
        version=captioner.__version__,
        summary="Image captions and video activity labels from a CNN + LSTM",
        description=ERRORS_DOC,
        lifespan=lifespan,
        docs_url=None,  # served from the package's own assets by service.routes
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.settings = settings
    app.add_middleware(UploadGate, runtime=runtime)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.add_middleware(RequestContext)  # outermost: every answer gets its X-Request-ID
    install_error_handlers(app)
    add_routes(app, settings)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
