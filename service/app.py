"""The HTTP service: ``create_app(settings)`` wires settings, runtime, middleware and routes.

Where things live: ``service/routes.py`` (the routes), ``service/runtime.py`` (models, warm-up,
model workers, batchers, readiness), ``service/middleware.py`` (upload gate, API key, request
metrics, error shaping), ``service/uploads.py`` (image header probe and decode budget).
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

import captioner
from service.metrics import Metrics
from service.middleware import (
    RequestMetrics,
    UploadGate,
    install_error_handlers,
    key_matches,
)
from service.routes import STATIC, add_routes
from service.runtime import LoadedModels, Runtime
from service.settings import Settings

__all__ = ["RequestMetrics", "Runtime", "UploadGate", "create_app", "key_matches"]


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
        docs_url=None,  # served from the package's own assets by service.routes
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.settings = settings
    app.add_middleware(UploadGate, runtime=runtime)
    app.add_middleware(RequestMetrics, metrics=metrics)
    install_error_handlers(app)
    add_routes(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
