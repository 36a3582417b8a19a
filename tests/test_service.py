"""The HTTP service end to end on loopback: the real app, the shipped bundles, real uploads."""

from __future__ import annotations

import concurrent.futures as cf
import re
import time

import httpx
import pytest

import captioner
from service.settings import Settings
from tests.service_helpers import EXAMPLES, hostile_files, jpeg_bytes, live_server

pytestmark = pytest.mark.slow

CHELSEA = EXAMPLES / "photo-chelsea.jpg"
SCENE = EXAMPLES / "scene-0.jpg"
CLIP = EXAMPLES / "clip-moving_left.webm"


def _settings(**kw) -> Settings:
    base = {"device": "cpu", "max_wait_ms": 5.0, "decode_workers": 2}
    return Settings(**{**base, **kw})


@pytest.fixture(scope="module")
def server():
    with live_server(_settings()) as (base, _):
        yield base


@pytest.fixture(scope="module")
def reference():
    return {
        "caption": captioner.load(captioner.default_bundle_dir("caption"), device="cpu"),
        "activity": captioner.load(captioner.default_bundle_dir("activity"), device="cpu"),
    }


def _post_image(base: str, *paths, **params) -> httpx.Response:
    files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
    return httpx.post(f"{base}/v1/caption", files=files, params=params, timeout=60)


# ---------------------------------------------------------------------------- health, models


def test_health_ready_models_docs_and_page(server: str) -> None:
    assert httpx.get(f"{server}/healthz").json() == {"status": "alive"}
    ready = httpx.get(f"{server}/readyz")
    assert ready.status_code == 200
    assert set(ready.json()["models"]) == {"caption", "activity"}
    shown = httpx.get(f"{server}/v1/models")
    models = shown.json()["models"]
    for path in ("data/objects/novel.json", "data/", "runs/", ".json", "captioner train"):
        assert path not in shown.text, path  # the shipped figures name these in the manifest
    assert models["caption"]["metrics"]["novel_objects"]["BLEU-4"] > 0
    assert models["caption"]["task"] == "caption"
    assert models["caption"]["vocabulary_size"] > 10
    assert models["activity"]["classes"][0] == "moving_left"
    assert "vocabulary" not in models["caption"]
    for task in ("caption", "activity"):  # what a client may know, not how it was trained
        assert models[task]["metrics"]
        assert not {"training", "files", "encoder"} & set(models[task])
    assert httpx.get(f"{server}/docs").status_code == 200
    assert httpx.get(f"{server}/redoc").status_code == 200
    schema = httpx.get(f"{server}/openapi.json").json()
    assert {"/v1/caption", "/v1/activity"} <= set(schema["paths"])
    page = httpx.get(f"{server}/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]


# ------------------------------------------------------------------------------- captioning


def test_caption_matches_the_library(server: str, reference) -> None:
    r = _post_image(server, SCENE, beam_size=3, n_best=3, attention="true")
    assert r.status_code == 200, r.text
    body = r.json()
    item = body["results"][0]
    expected = reference["caption"].caption(SCENE.read_bytes(), beam_size=3, n_best=3)
    assert item["caption"] == expected.caption
    assert item["log_prob"] == pytest.approx(expected.log_prob, abs=1e-4)
    assert [a["caption"] for a in item["alternatives"]] == [
        a["caption"] for a in expected.alternatives
    ]
    assert len(item["alternatives"]) == 3
    rows, cols = item["grid"]
    assert len(item["attention"]) == len(item["words"]) == len(item["caption"].split())
    for weights in item["attention"]:
        assert len(weights) == rows * cols
        assert sum(weights) == pytest.approx(1.0, abs=1e-3)
    assert item["filename"] == SCENE.name
    assert item["width"] > 0
    assert item["height"] > 0
    assert body["model"]["task"] == "caption"
    assert body["model"]["name"]
    t = body["timings"]
    assert t["total_ms"] >= t["compute_ms"] > 0
    assert t["batch_size"] >= 1


def test_several_files_and_one_bad_file(server: str) -> None:
    files = [
        ("file", ("a.jpg", SCENE.read_bytes(), "image/jpeg")),
        ("file", ("bad.jpg", b"not an image at all, just words\n" * 8, "image/jpeg")),
        ("file", ("c.jpg", CHELSEA.read_bytes(), "image/jpeg")),
    ]
    r = httpx.post(f"{server}/v1/caption", files=files, timeout=60)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["filename"] for x in results] == ["a.jpg", "bad.jpg", "c.jpg"]
    assert results[0]["caption"]
    assert results[2]["caption"]
    assert "not an image" in results[1]["error"]
    assert "caption" not in results[1]


def test_bad_options_get_422(server: str) -> None:
    assert _post_image(server, SCENE, beam_size=2, n_best=3).status_code == 422
    assert _post_image(server, SCENE, beam_size=0).status_code == 422
    assert _post_image(server, SCENE, beam_size=40).status_code == 422  # above max_beam_size
    r = httpx.post(f"{server}/v1/caption", timeout=30)  # no file at all
    assert r.status_code == 422
    assert "detail" in r.json()


def test_concurrent_requests_are_batched(server: str) -> None:
    with cf.ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(lambda _: _post_image(server, SCENE), range(24)))
    assert all(r.status_code == 200 for r in replies)
    assert len({r.json()["results"][0]["caption"] for r in replies}) == 1
    assert max(r.json()["timings"]["batch_size"] for r in replies) > 1


# --------------------------------------------------------------------------------- activity


def test_activity_matches_the_library(server: str, reference) -> None:
    files = {"file": (CLIP.name, CLIP.read_bytes(), "video/webm")}
    params = {"top_k": 3, "timeline": "true", "window": 0.5, "stride": 0.25}
    r = httpx.post(f"{server}/v1/activity", files=files, params=params, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    (item,) = body["results"]
    expected = reference["activity"].classify(CLIP, top_k=3, timeline=True, window=0.5, stride=0.25)
    assert item["filename"] == CLIP.name
    assert item["label"] == expected.label == "moving_left"
    assert [x["label"] for x in item["top_k"]] == [x["label"] for x in expected.top_k]
    assert item["score"] == pytest.approx(expected.score, abs=1e-3)
    assert [(w["start"], w["end"]) for w in item["timeline"]] == [
        (w["start"], w["end"]) for w in expected.timeline
    ]
    assert [w["label"] for w in item["timeline"]] == [w["label"] for w in expected.timeline]
    assert body["model"]["task"] == "activity"
    assert body["timings"]["batch_size"] >= 1
    no_timeline = httpx.post(f"{server}/v1/activity", files=files, timeout=120).json()
    (plain,) = no_timeline["results"]
    assert "timeline" not in plain
    assert plain["label"] == "moving_left"


def test_several_videos_get_one_result_each(server: str, reference) -> None:
    other = EXAMPLES / "clip-growing.webm"
    files = [
        ("file", (CLIP.name, CLIP.read_bytes(), "video/webm")),
        ("file", ("notes.mp4", b"these are notes, not a video\n" * 8, "video/mp4")),
        ("file", (other.name, other.read_bytes(), "video/webm")),
    ]
    r = httpx.post(f"{server}/v1/activity", files=files, params={"top_k": 2}, timeout=120)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["filename"] for x in results] == [CLIP.name, "notes.mp4", other.name]
    assert results[0]["label"] == reference["activity"].classify(CLIP).label
    assert results[2]["label"] == reference["activity"].classify(other).label
    assert results[1]["error"]
    assert "label" not in results[1]
    both_bad = [("file", ("a.mp4", b"x" * 64)), ("file", ("b.mp4", b"y" * 64))]
    r = httpx.post(f"{server}/v1/activity", files=both_bad, timeout=60)
    assert r.status_code in (415, 422)
    assert "a.mp4" in r.json()["detail"]
    assert "b.mp4" in r.text


def test_activity_schema_limits_are_the_servers(server: str) -> None:
    schema = httpx.get(f"{server}/openapi.json").json()
    params = {p["name"]: p["schema"] for p in schema["paths"]["/v1/activity"]["post"]["parameters"]}

    def maximum(name: str) -> float:
        types = params[name].get("anyOf", [params[name]])
        return next(t["maximum"] for t in types if "maximum" in t)

    files = {"file": (CLIP.name, CLIP.read_bytes(), "video/webm")}

    def status(**query) -> int:
        return httpx.post(
            f"{server}/v1/activity", files=files, params=query, timeout=120
        ).status_code

    top = maximum("top_k")
    assert status(top_k=top) == 200
    assert status(top_k=top + 1) == 422
    longest = maximum("window")
    assert maximum("stride") == longest
    assert status(timeline="true", window=longest, stride=longest) == 200
    assert status(timeline="true", window=longest + 1) == 422
    assert status(timeline="true", window=1, stride=longest + 1) == 422


# ---------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize("name", list(hostile_files()))
def test_hostile_files_get_4xx_and_the_service_keeps_answering(server: str, name: str) -> None:
    route, data, filename = hostile_files()[name]
    r = httpx.post(f"{server}/v1/{route}", files={"file": (filename, data)}, timeout=60)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str)
    assert "Traceback" not in detail
    assert len(detail) > 10
    expected = {
        "text named .jpg": 415,
        "hls named .mp4": 415,
        "png bomb": 422,
        "30000x30000 header": 422,
        "truncated jpeg": 422,
        "corrupt mp4": 422,
    }
    if name in expected:
        assert r.status_code == expected[name], r.text
    assert _post_image(server, SCENE).status_code == 200


def test_metrics_count_requests_batches_and_rejections(server: str) -> None:
    _post_image(server, SCENE)
    httpx.post(f"{server}/v1/caption", files={"file": ("t.jpg", b"text " * 50)}, timeout=30)
    text = httpx.get(f"{server}/metrics").text
    ok = re.search(r'captioner_requests_total\{route="/v1/caption",status="200"\} (\d+)', text)
    assert ok
    assert float(ok.group(1)) >= 1
    assert re.search(r'captioner_requests_total\{route="/v1/caption",status="415"\}', text)
    for name in (
        "captioner_request_seconds_bucket",
        'captioner_batch_size_count{model="caption"}',
        'captioner_queue_wait_seconds_count{model="caption"}',
        'captioner_compute_seconds_count{model="caption"}',
        'captioner_queue_depth{model="caption"}',
        "captioner_ready 1.0",
    ):
        assert name in text, name


# ------------------------------------------------------------------------ limits and guards


def test_body_limits_413_even_when_content_length_lies() -> None:
    with live_server(_settings(max_image_bytes=64 * 1024, enable_activity=False)) as (base, _):
        big = jpeg_bytes(1, size=400) + bytes(200_000)
        r = httpx.post(f"{base}/v1/caption", files={"file": ("big.jpg", big)}, timeout=30)
        assert r.status_code == 413
        assert "limit" in r.json()["detail"]

        def chunks():  # no Content-Length at all: chunked transfer, counted as it streams
            yield (
                b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
                b"Content-Type: image/jpeg\r\n\r\n"
            )
            for _ in range(40):
                yield bytes(8192)

        r = httpx.post(
            f"{base}/v1/caption",
            content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=xyz"},
            timeout=30,
        )
        assert r.status_code == 413
        many = [("file", (f"{i}.jpg", jpeg_bytes(i, 32))) for i in range(20)]
        r = httpx.post(f"{base}/v1/caption", files=many, timeout=30)
        assert r.status_code == 413
        assert "at most 16" in r.json()["detail"]
        assert _post_image(base, SCENE).status_code == 200


def test_api_key_guards_inference_routes_only() -> None:
    key = "s3cret-key-for-tests"
    with live_server(_settings(api_key=key, enable_activity=False)) as (base, _):
        assert _post_image(base, SCENE).status_code == 401
        files = {"file": (SCENE.name, SCENE.read_bytes())}
        wrong = httpx.post(f"{base}/v1/caption", files=files, headers={"X-API-Key": "nope-nope"})
        assert wrong.status_code == 401
        assert "API key" in wrong.json()["detail"]
        for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
            r = httpx.post(f"{base}/v1/caption", files=files, headers=headers, timeout=60)
            assert r.status_code == 200, r.text
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").status_code == 200


def test_full_queue_gets_429_with_retry_after_and_deadline_504() -> None:
    settings = _settings(max_queue=1, max_batch_size=1, max_wait_ms=0.0, enable_activity=False)
    with live_server(settings) as (base, _):
        with cf.ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(lambda _: _post_image(base, SCENE, beam_size=8), range(32)))
        codes = [r.status_code for r in replies]
        assert set(codes) <= {200, 429}
        assert 200 in codes
        assert 429 in codes
        busy = next(r for r in replies if r.status_code == 429)
        assert int(busy.headers["Retry-After"]) >= 1
        assert "busy" in busy.json()["detail"]
        assert _post_image(base, SCENE).status_code == 200  # and it recovers

    settings = _settings(max_inflight=2, max_wait_ms=100.0, enable_activity=False)
    with live_server(settings) as (base, _):
        with cf.ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda _: _post_image(base, SCENE, beam_size=8), range(16)))
        codes = [r.status_code for r in replies]
        assert set(codes) <= {200, 429}
        assert 200 in codes
        assert 429 in codes
        metrics = httpx.get(f"{base}/metrics").text
        assert 'captioner_rejections_total{reason="inflight"}' in metrics

    settings = _settings(request_timeout_s=0.001, max_wait_ms=200.0, enable_activity=False)
    with live_server(settings) as (base, _):
        r = _post_image(base, SCENE)
        assert r.status_code == 504
        assert "deadline" in r.json()["detail"]


def test_a_lone_client_does_not_wait_max_wait_ms_for_company() -> None:
    # 4 s of batching wait: a lone client would pay it on every request without the hook
    settings = _settings(max_wait_ms=4000.0, enable_activity=False)
    with live_server(settings) as (base, _):
        assert _post_image(base, SCENE).status_code == 200  # warm
        took = []
        for body in (SCENE.read_bytes(), b"not an image", CHELSEA.read_bytes()):
            start = time.monotonic()
            files = [("file", ("x.jpg", body, "image/jpeg"))]
            r = httpx.post(f"{base}/v1/caption", files=files, timeout=60)
            took.append((r.status_code, time.monotonic() - start))
        assert [code for code, _ in took] == [200, 415, 200]
        # a broken upload is announced and then never queued: it must not hold the next one
        assert all(s < 3.0 for _, s in took), took


def test_graceful_shutdown_finishes_requests_in_flight() -> None:
    settings = _settings(max_batch_size=4, max_wait_ms=50.0, enable_activity=False)
    with live_server(settings) as (base, server), cf.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(_post_image, base, SCENE, beam_size=8) for _ in range(8)]
        # Stop once all eight have reached the server, while batches are still running.
        deadline = time.monotonic() + 60
        while server.server_state.total_requests < 8 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert not all(f.done() for f in futures)
        server.should_exit = True
        replies = [f.result(timeout=120) for f in futures]
    assert [r.status_code for r in replies] == [200] * 8
