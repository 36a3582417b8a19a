"""The HTML pages: the upload page and the API docs (Swagger UI, ReDoc), all from the package.

Every page makes no request outside this server, so the docs work offline and tell no third
party who reads them: the assets are the package's own copies, Swagger UI's validator badge is
off, ReDoc's bundle is served with its one outside URL (the Redocly logo on a CDN) swapped for
an inline image, and a Content-Security-Policy tells the browser to refuse anything else.
"""

from __future__ import annotations

import functools
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

STATIC = Path(__file__).resolve().parent / "static"
REDOC_JS = "/docs-assets/redoc.standalone.js"
# What the vendored ReDoc bundle fetches by itself, and what it gets instead.
REDOC_OUTSIDE = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
INLINE_LOGO = (
    b"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='1' height='1'/%3E"
)
# The pages' inline scripts and styles need 'unsafe-inline'; ReDoc's worker and the upload
# page's previews are blob: URLs.
CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "media-src 'self' blob:",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "frame-ancestors 'self'",
    )
)
_LOCAL_ONLY = {"Content-Security-Policy": CSP}


async def page() -> Response:
    index = STATIC / "index.html"
    if index.is_file():
        return FileResponse(index, media_type="text/html", headers=_LOCAL_ONLY)
    return HTMLResponse("<h1>captioner</h1><p>See <a href='/docs'>/docs</a>.</p>")


async def swagger(request: Request) -> HTMLResponse:
    """Swagger UI from the package's own copy: the page works with no internet access."""
    html = get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - API",
        swagger_js_url="/static/swagger-ui-bundle.js",
        swagger_css_url="/static/swagger-ui.css",
        swagger_favicon_url="/static/favicon.png",
        # No badge from validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
    )
    html.headers.update(_LOCAL_ONLY)
    return html


async def redoc(request: Request) -> HTMLResponse:
    html = get_redoc_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - API reference",
        redoc_js_url=REDOC_JS,
        redoc_favicon_url="/static/favicon.png",
        with_google_fonts=False,
    )
    html.headers.update(_LOCAL_ONLY)
    return html


@functools.cache
def redoc_bundle() -> bytes:
    """The vendored ReDoc bundle with its CDN logo swapped for an inline image (read once)."""
    return (STATIC / "redoc.standalone.js").read_bytes().replace(REDOC_OUTSIDE, INLINE_LOGO)


async def redoc_script() -> Response:
    return Response(
        redoc_bundle(),
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=3600"},
    )


def add_pages(app: FastAPI) -> None:
    """Register the pages (none is in the OpenAPI schema)."""
    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/docs", swagger, methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", redoc, methods=["GET"], include_in_schema=False)
    app.add_api_route(REDOC_JS, redoc_script, methods=["GET"], include_in_schema=False)
