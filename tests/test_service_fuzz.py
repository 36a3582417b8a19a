"""Schemathesis over the service's OpenAPI schema: no 5xx, and every error is JSON with `detail`.

Every operation in the schema, multipart uploads included, gets a bounded, seeded run of
generated requests (valid and invalid) against the real app under uvicorn with the shipped
bundles loaded. Uploaded parts are Schemathesis's own strings, sometimes swapped for real or
broken pictures so that the decoder and the model are fuzzed too, not only the validation.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import strategies as st
from PIL import Image
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig

from captioner import default_bundle_dir
from service.app import create_app
from service.settings import Settings
from tests.service_helpers import jpeg_bytes, live_server, png_header_only

pytestmark = pytest.mark.slow

SETTINGS = Settings(
    device="cpu",
    enable_activity=(default_bundle_dir("activity") / "manifest.json").is_file(),
    max_wait_ms=2.0,
    decode_workers=2,
)
# Fixed seed and derandomized: CI replays the same requests and no example database is written.
CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 20_240_601,
        "generation": {"max-examples": 50, "deterministic": True, "database": "none"},
        "phases": {"stateful": {"enabled": False}},
        "request-timeout": 60,
    }
)
# The schema is the app's own, built without running the lifespan so collection loads no model;
# the requests go to a live server whose lifespan did (test_live_schema_is_the_one_fuzzed).
schema = schemathesis.openapi.from_dict(create_app(SETTINGS).openapi(), config=CONFIG)


def _encoded(mode: str, fmt: str, size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, fmt)
    return buf.getvalue()


def _pictures() -> list[bytes]:
    """Small, so that a failure's curl reproduction stays readable."""
    good = jpeg_bytes(seed=1, size=64)
    return [
        good,
        good[: len(good) // 2],
        _encoded("RGBA", "PNG"),
        _encoded("I;16", "PNG"),
        _encoded("P", "GIF"),
        _encoded("CMYK", "JPEG"),
        _encoded("L", "PNG", (1, 1)),
        png_header_only(30_000, 30_000),
    ]


PICTURES = _pictures()


@schema.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy:
    """Swap some generated file parts of a caption upload for real or broken pictures."""
    op = context.operation
    if op is None or op.path != "/v1/caption" or not isinstance(body, dict):
        return st.just(body)
    parts = body.get("file")
    if not isinstance(parts, list):
        return st.just(body)
    picture = st.sampled_from(PICTURES)
    # Empty lists are Schemathesis's favourite file array; add pictures so the model runs too.
    files = st.lists(picture, min_size=1, max_size=3) | st.just(parts)
    if parts:
        files = st.tuples(*(picture | st.just(p) for p in parts)).map(list)
    return files.map(lambda chosen: {**body, "file": chosen})


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with live_server(SETTINGS) as (base, _):
        yield base


def test_live_schema_is_the_one_fuzzed(server: str) -> None:
    live = httpx.get(f"{server}/openapi.json", timeout=30).json()
    assert live == schema.raw_schema
    assert {"/v1/caption", "/v1/activity"} <= set(live["paths"])


def error_is_json_detail(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    """A Schemathesis check: a 4xx/5xx body is a Problem (`detail`, and `errors` for a 422)."""
    if response.status_code < 400 or case.method.upper() == "HEAD":
        return
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"error body is not JSON: {response.content[:200]!r}") from None
    assert isinstance(body, dict), f"error body has no 'detail': {body!r}"
    assert "detail" in body, f"error body has no 'detail': {body!r}"
    assert set(body) <= {"detail", "errors"}, f"error body is not a Problem: {body!r}"
    assert isinstance(body["detail"], str), body
    assert "\n" not in body["detail"], body
    if "errors" in body:  # only validation failures list their problems
        assert response.status_code == 422, body
        assert isinstance(body["errors"], list), body
    assert "x-request-id" in {k.lower() for k in response.headers}, "no X-Request-ID"


@schema.parametrize()
def test_no_server_errors_and_errors_are_json_detail(server: str, case: schemathesis.Case) -> None:
    case.call_and_validate(base_url=server, checks=[not_a_server_error, error_is_json_detail])
