"""What a client of the HTTP service can rely on, in-process with the tiny seeded captioner:
one error shape, request ids, an OpenAPI schema whose limits are the server's, /v1/models
without paths, and a model runtime that knows nothing of HTTP.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import captioner
from captioner.bundle import read_manifest
from service.routes import looks_like_path, public_figures
from tests.service_helpers import ROOT, client_for, jpeg_bytes

KEY = "s3cret-key-for-tests"
HEX32 = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def client(tiny_captioner) -> TestClient:
    with client_for(tiny_captioner, max_beam_size=4, max_files=3) as c:
        yield c


def post(client: TestClient, n: int = 1, **params: Any):
    files = [("file", (f"f{i}.jpg", jpeg_bytes(i, 48), "image/jpeg")) for i in range(n)]
    return client.post("/v1/caption", files=files, params=params)


def assert_problem(body: Any, *, with_errors: bool = False) -> None:
    """The one error shape: {"detail": one line, "errors": [...]} with errors only for 422s."""
    assert isinstance(body, dict), body
    assert set(body) <= {"detail", "errors"}, body
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert "\n" not in body["detail"]
    assert ("errors" in body) == with_errors, body
    if with_errors:
        assert isinstance(body["errors"], list)
        assert body["errors"]
        assert all({"loc", "msg", "type"} <= set(e) for e in body["errors"])


# ------------------------------------------------------------------------------ error shape


def test_validation_errors_have_a_sentence_and_the_list(client: TestClient) -> None:
    r = post(client, beam_size="wide", n_best=0)
    assert r.status_code == 422
    body = r.json()
    assert_problem(body, with_errors=True)
    assert body["detail"].startswith("invalid request: query parameter beam_size")
    assert "n_best" in body["detail"]
    assert {tuple(e["loc"]) for e in body["errors"]} == {
        ("query", "beam_size"),
        ("query", "n_best"),
    }
    missing = client.post("/v1/caption")  # no file at all
    assert missing.status_code == 422
    assert "form field file" in missing.json()["detail"]
    assert_problem(missing.json(), with_errors=True)


@pytest.mark.parametrize(
    ("method", "path", "status", "words"),
    [
        ("GET", "/no/such/route", 404, "no such route: /no/such/route"),
        ("POST", "/healthz", 405, "POST is not allowed on /healthz"),
        ("GET", "/v1/caption", 405, "use POST"),
        ("GET", "/static/nothing-here.js", 404, "no such route"),
        ("GET", "/v1/activity", 405, "use POST"),
    ],
)
def test_router_errors_have_the_same_shape(client, method, path, status, words) -> None:
    r = client.request(method, path)
    assert r.status_code == status
    assert_problem(r.json())
    assert words in r.json()["detail"]


def test_every_refusal_has_the_same_shape(tiny_captioner, client: TestClient) -> None:
    cases = [
        post(client, beam_size=3, n_best=4),  # the route's own 422
        post(client, n=4),  # 413: too many files
        client.post("/v1/caption", files={"file": ("t.jpg", b"plain words " * 20)}),  # 415
        client.post("/v1/activity", files={"file": ("a.mp4", b"x")}),  # 404: not served
    ]
    assert [r.status_code for r in cases] == [422, 413, 415, 404]
    with client_for(tiny_captioner, api_key=KEY) as keyed:
        cases.append(keyed.post("/v1/caption", files={"file": ("a.jpg", b"x")}))  # 401
    assert cases[-1].status_code == 401
    for r in cases:
        assert_problem(r.json())


def test_the_schema_documents_the_error_shape(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    problem = schema["components"]["schemas"]["Problem"]
    assert problem["required"] == ["detail"]
    assert problem["properties"]["detail"]["type"] == "string"
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path in ("/v1/caption", "/v1/activity"):
        responses = schema["paths"][path]["post"]["responses"]
        for code in ("401", "413", "415", "422", "429", "503", "504"):
            ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/Problem"), (path, code)
    assert '"errors"' in schema["info"]["description"]


# ------------------------------------------------------------------------------ request ids


def test_request_id_is_echoed_or_made_on_every_answer(client: TestClient) -> None:
    given = {"X-Request-ID": "trace-42.a:b"}
    assert client.get("/healthz", headers=given).headers["X-Request-ID"] == "trace-42.a:b"
    assert post(client).headers["X-Request-ID"] != post(client).headers["X-Request-ID"]
    assert HEX32.fullmatch(client.get("/healthz").headers["X-Request-ID"])
    for bad in ("x" * 129, "has space", "semi;colon", ""):
        made = client.get("/healthz", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert HEX32.fullmatch(made), bad
    for r in (
        client.get("/nowhere", headers=given),
        client.post("/v1/caption", headers=given),
        client.post("/v1/caption", headers=given, files={"file": ("t.jpg", b"words " * 40)}),
    ):
        assert r.status_code >= 400
        assert r.headers["X-Request-ID"] == "trace-42.a:b"


def test_request_id_on_the_gates_refusals_and_on_a_500(tiny_captioner, monkeypatch) -> None:
    with client_for(tiny_captioner, api_key=KEY) as c:
        r = c.post("/v1/caption", headers={"X-Request-ID": "gate-1"})
        assert r.status_code == 401
        assert r.headers["X-Request-ID"] == "gate-1"
    with client_for(tiny_captioner) as c:

        async def broken(*args: Any) -> None:
            raise RuntimeError("a bug, not the client's fault")

        monkeypatch.setattr(c.app.state.runtime, "decode_images", broken)
        c_raise = TestClient(c.app, raise_server_exceptions=False)
        files = {"file": ("a.jpg", jpeg_bytes(1))}
        r = c_raise.post("/v1/caption", files=files, headers={"X-Request-ID": "bug-1"})
        assert r.status_code == 500
        assert r.headers["X-Request-ID"] == "bug-1"
        assert r.json() == {"detail": "internal server error"}


def test_the_access_log_line_names_the_request_id(client: TestClient, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="captioner.access"):
        client.get("/healthz?x=1", headers={"X-Request-ID": "log-me-7"})
        post(client, beam_size=99)
    lines = [r.getMessage() for r in caplog.records if r.name == "captioner.access"]
    assert any('"GET /healthz?x=1 HTTP/1.1" 200' in x and "request_id=log-me-7" in x for x in lines)
    refused = [x for x in lines if "/v1/caption" in x]
    assert refused
    assert " 422 " in refused[-1]
    assert re.search(r"request_id=[0-9a-f]{32}$", refused[-1])


# -------------------------------------------------------------------- schema == server limits


def _query_maximum(schema: dict, path: str, name: str) -> float:
    (param,) = [p for p in schema["paths"][path]["post"]["parameters"] if p["name"] == name]
    types = param["schema"].get("anyOf", [param["schema"]])
    return next(t["maximum"] for t in types if "maximum" in t)


def test_the_schemas_limits_are_the_servers(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    settings = client.app.state.settings
    beam_max = _query_maximum(schema, "/v1/caption", "beam_size")
    assert beam_max == settings.max_beam_size == 4  # the server's setting, not a constant
    assert post(client, beam_size=beam_max).status_code == 200
    assert post(client, beam_size=beam_max + 1).status_code == 422
    n_best_max = _query_maximum(schema, "/v1/caption", "n_best")
    assert post(client, beam_size=beam_max, n_best=n_best_max).status_code == 200
    assert post(client, beam_size=beam_max, n_best=n_best_max + 1).status_code == 422
    body = schema["paths"]["/v1/caption"]["post"]["requestBody"]["content"]
    ref = body["multipart/form-data"]["schema"]["$ref"].split("/")[-1]
    files_max = schema["components"]["schemas"][ref]["properties"]["file"]["maxItems"]
    assert files_max == settings.max_files == 3
    assert post(client, n=files_max).status_code == 200
    assert post(client, n=files_max + 1).status_code == 413


# ------------------------------------------------------------------------------ /v1/models


@pytest.mark.parametrize("task", ["caption", "activity"])
def test_shipped_bundles_figures_show_no_path(task: str) -> None:
    manifest = read_manifest(captioner.default_bundle_dir(task))
    shown = public_figures(manifest["metrics"])
    text = json.dumps(shown)
    strings: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            strings.append(value)

    walk(shown)
    assert not [s for s in strings if looks_like_path(s)]
    for secret in ("data/", ".json", "runs/", "weights/", "captioner train"):
        assert secret not in text, secret
    assert shown["test"]  # the figures themselves are still there
    figures = json.dumps(manifest["metrics"])
    assert "data/" in figures, "the shipped figures name their data: this test would prove nothing"


def test_models_route_strips_paths_and_commands(tiny_captioner) -> None:
    figures = {
        "test": {"BLEU-4": 0.5, "data": "data/objects/novel.json", "images": 500},
        "plots": ["runs/confusion.png", "C:\\runs\\x", 0.25],
        "run": {"command": "captioner evaluate --data /home/alice", "precision": "fp32"},
        "pairs": {"moving_left/moving_right": 1.0},
        "where": "novel.json",
    }
    spec = tiny_captioner.spec
    tiny_captioner.spec = dataclasses.replace(spec, metrics=figures)
    try:
        with client_for(tiny_captioner) as c:
            shown = c.get("/v1/models").json()["models"]["caption"]["metrics"]
    finally:
        tiny_captioner.spec = spec
    assert shown == {
        "test": {"BLEU-4": 0.5, "images": 500},
        "plots": [0.25],
        "run": {"precision": "fp32"},
        "pairs": {"moving_left/moving_right": 1.0},
    }


# --------------------------------------------------------------------------- the arrows


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def test_the_model_runtime_knows_nothing_of_http() -> None:
    found = _imported(ROOT / "service" / "runtime.py")
    http = {"service.errors", "service.middleware", "service.routes", "fastapi.HTTPException"}
    assert not found & http, found & http
    assert not any(n.startswith("fastapi") for n in found), found
    errors = _imported(ROOT / "service" / "errors.py")
    assert "service.runtime" in errors  # the mapping reads the runtime's errors, not back
