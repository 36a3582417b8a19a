"""Service hardening with the tiny seeded captioner, in-process: answers, limits and docs.

The app gets its models preloaded (as ``captioner serve`` hands them over), so no bundle is
loaded per test; the encoder is built once per session by the ``tiny_captioner`` fixture.
"""

from __future__ import annotations

import dataclasses
import io
import re
import time
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.batch_protocol import ClientGone, DeadlineExceeded
from service.errors import status_of
from service.settings import MiB
from service.uploads import bytes_per_pixel, probe_image, trim_memory
from tests.service_helpers import client_for, jpeg_bytes

KEY = "s3cret-key-for-tests"


@pytest.fixture(scope="module")
def client(tiny_captioner) -> Iterator[TestClient]:
    with client_for(tiny_captioner) as c:
        yield c


def png(mode: str, size: tuple[int, int], **save) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG", **save)
    return buf.getvalue()


def rotated_jpeg(width: int, height: int, orientation: int) -> bytes:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    return buf.getvalue()


def post(client: TestClient, *datas: bytes, **params) -> object:
    files = [("file", (f"f{i}.png", d, "image/png")) for i, d in enumerate(datas)]
    return client.post("/v1/caption", files=files, params=params)


# ------------------------------------------------------------------------------- answers


def test_attention_maps_only_when_asked(client: TestClient) -> None:
    lean = post(client, jpeg_bytes(3))
    assert lean.status_code == 200, lean.text
    item = lean.json()["results"][0]
    assert item["caption"]
    assert "attention" not in item
    assert "grid" not in item
    full = post(client, jpeg_bytes(3), attention="true").json()["results"][0]
    assert full["caption"] == item["caption"]
    rows, cols = full["grid"]
    assert len(full["attention"]) == len(full["words"])
    assert len(full["attention"][0]) == rows * cols
    assert len(lean.content) < len(post(client, jpeg_bytes(3), attention="true").content) / 2


def test_exif_rotated_image_reports_the_size_it_is_shown_at(client: TestClient) -> None:
    item = post(client, rotated_jpeg(120, 60, orientation=6)).json()["results"][0]
    assert (item["width"], item["height"]) == (60, 120)
    item = post(client, rotated_jpeg(120, 60, orientation=1)).json()["results"][0]
    assert (item["width"], item["height"]) == (120, 60)


def test_models_tells_name_version_task_and_figures_but_not_how_it_was_trained(
    tiny_captioner,
) -> None:
    secret = {"command": "captioner train --data /home/alice/private", "data": {"train": "/x"}}
    spec = tiny_captioner.spec
    metrics = {"test": {"BLEU-4": 0.5}}
    tiny_captioner.spec = dataclasses.replace(spec, training=secret, metrics=metrics)
    try:
        with client_for(tiny_captioner) as c:
            body = c.get("/v1/models").json()["models"]["caption"]
    finally:
        tiny_captioner.spec = spec
    assert body == {
        "name": "tiny-test",
        "version": "1",
        "task": "caption",
        "vocabulary_size": 20,
        "metrics": {"test": {"BLEU-4": 0.5}},
    }


def test_422_does_not_echo_a_whole_field_back(client: TestClient) -> None:
    essay = "word " * 20_000
    r = client.post("/v1/caption", data={"file": essay})  # text where a file belongs
    assert r.status_code == 422
    assert len(r.content) < 2000
    assert "characters" in r.text
    r = client.post("/v1/caption", files={"file": ("a.png", b"x")}, params={"n_best": "9" * 3000})
    assert r.status_code == 422
    assert len(r.content) < 2000


# ------------------------------------------------------------------------ keys and metrics


def test_metrics_need_the_key_when_one_is_set_unless_opened(tiny_captioner) -> None:
    with client_for(tiny_captioner, api_key=KEY) as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"X-API-Key": KEY}).status_code == 200
        assert c.get("/healthz").status_code == 200
        assert c.get("/v1/models").status_code == 200
    with client_for(tiny_captioner, api_key=KEY, metrics_open=True) as c:
        assert c.get("/metrics").status_code == 200
    with client_for(tiny_captioner) as c:
        assert c.get("/metrics").status_code == 200


def test_in_flight_429_retry_after_comes_from_the_queue(tiny_captioner) -> None:
    with client_for(tiny_captioner, max_inflight=1) as c:
        runtime = c.app.state.runtime
        runtime.retry_after_s = lambda: 7.2  # what the batchers estimate now
        runtime.inflight = 1
        try:
            r = post(c, jpeg_bytes(1))
        finally:
            runtime.inflight = 0
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "8"


def test_partial_serving_says_so_on_readyz_and_on_the_missing_route(tiny_captioner) -> None:
    failed = {"activity": "BundleError: /nowhere has no manifest.json"}
    with client_for(tiny_captioner, failures=failed, enable_activity=True) as c:
        ready = c.get("/readyz").json()
        assert ready == {"status": "partial", "models": ["caption"], "failed": failed}
        r = c.post("/v1/activity", files={"file": ("a.mp4", b"x" * 100)})
        assert r.status_code == 503
        assert "no manifest.json" in r.json()["detail"]
        assert post(c, jpeg_bytes(2)).status_code == 200


# ----------------------------------------------------------------------- decode amplification


def test_header_probe_costs_pixels_times_bytes_and_jpeg_drafts_are_cheap() -> None:
    sixteen = probe_image(png("I;16", (300, 200)), 224)
    assert (sixteen.width, sixteen.height, sixteen.pixels) == (300, 200, 60_000)
    assert sixteen.cost == 60_000 * bytes_per_pixel("I;16") > 60_000 * bytes_per_pixel("RGB")
    rgba = probe_image(png("RGBA", (300, 200)), 224).cost
    assert rgba > probe_image(png("RGB", (300, 200)), 224).cost
    big_jpeg = probe_image(jpeg_bytes(0, size=1800), 224)
    assert big_jpeg.cost == (1800 * 1800 // 64) * bytes_per_pixel("RGB")  # decoded at 1/8
    assert probe_image(b"not an image", 224) is None


def test_the_probe_reads_headers_only_even_for_png_exif(monkeypatch) -> None:
    from PIL import ImageFile

    loads = []

    def no_pixels(self):
        loads.append(self.format)
        raise AssertionError("the probe decoded pixels")

    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.new("RGB", (120, 60)).save(buf, "PNG", exif=exif)
    rotated = buf.getvalue()
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_pixels)
    probe = probe_image(png("I;16", (3000, 2000)), 224)
    assert probe is not None
    assert probe.pixels == 6_000_000
    probe = probe_image(rotated, 224)
    assert probe is not None
    assert (probe.width, probe.height) == (60, 120)
    probe = probe_image(rotated_jpeg(120, 60, orientation=6), 224)
    assert probe is not None
    assert (probe.width, probe.height) == (60, 120)
    assert loads == []


def test_images_over_the_pixel_cap_are_refused_from_their_header(tiny_captioner) -> None:
    with client_for(tiny_captioner, max_image_pixels=100_000) as c:
        r = post(c, png("L", (400, 300)), jpeg_bytes(1))
        assert r.status_code == 200
        refused, ok = r.json()["results"]
        assert "400x300 = 120000 pixels" in refused["error"]
        assert "100000" in refused["error"]
        assert ok["caption"]


def test_decode_budget_refuses_what_cannot_fit_and_is_given_back(tiny_captioner) -> None:
    image = png("RGBA", (700, 700))  # about 9 MiB to decode
    with client_for(tiny_captioner, decode_budget_mb=16, max_image_pixels=500_000) as c:
        budget = c.app.state.runtime.budget
        assert post(c, image).status_code == 200
        assert budget.used == 0  # every decode gave its share back
        too_much = post(c, image, image)
        assert too_much.status_code == 413
        assert "budget" in too_much.json()["detail"]
        budget.acquire(10 * MiB)  # other uploads are decoding
        try:
            busy = post(c, image)
        finally:
            budget.release(10 * MiB)
        assert busy.status_code == 429
        assert int(busy.headers["Retry-After"]) >= 1
        assert "budget" in busy.json()["detail"]
        assert post(c, image).status_code == 200
        assert budget.used == 0
        metrics = c.get("/metrics").text
        assert 'captioner_rejections_total{reason="decode_budget"} 1.0' in metrics


def test_the_deadline_and_a_gone_client_stop_decoding_between_files(tiny_captioner) -> None:
    with client_for(tiny_captioner, request_timeout_s=0.001) as c:
        r = post(c, jpeg_bytes(1), jpeg_bytes(2))
        assert r.status_code == 504
        assert c.app.state.runtime.budget.used == 0
    with client_for(tiny_captioner) as c:
        runtime = c.app.state.runtime

        async def gone() -> bool:
            return True

        request = SimpleNamespace(state=SimpleNamespace(arrived=time.perf_counter()))
        request.is_disconnected = gone
        with pytest.raises(ClientGone):
            c.portal.call(runtime._still_wanted, request)
        assert status_of(ClientGone())[0] == 499


def test_memory_trim_is_safe_to_call() -> None:
    assert trim_memory() in (True, False)
    assert trim_memory() == trim_memory()


# ------------------------------------------------------------------------------- the docs


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_use_only_the_packages_own_assets(client: TestClient, page: str) -> None:
    r = client.get(page)
    assert r.status_code == 200
    assert "text/html" in r.headers["content-type"]
    linked = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", r.text)
    urls = re.findall(r"""url\s*:\s*["']([^"']+)["']""", r.text)
    assert linked, r.text
    for ref in linked + urls:
        assert ref.startswith("/"), f"{page} loads {ref} from elsewhere"
    assert "fonts.googleapis" not in r.text
    assert "cdn." not in r.text
    for ref in linked:
        asset = client.get(ref)
        assert asset.status_code == 200, ref
        assert len(asset.content) > 500, ref


def test_a_video_decode_stops_between_frames_at_the_deadline_or_when_the_client_leaves(
    tiny_captioner,
) -> None:
    from captioner.video import DecodeCancelled

    asked: list[bool] = []

    def decode(should_stop) -> None:  # stands in for a long video's frame loop
        for _ in range(2000):
            asked.append(True)
            if should_stop():
                raise DecodeCancelled("stopped")
            time.sleep(0.001)
        raise AssertionError("the decode was never told to stop")

    def request(disconnected: bool, arrived: float) -> SimpleNamespace:
        async def gone() -> bool:
            return disconnected

        return SimpleNamespace(state=SimpleNamespace(arrived=arrived), is_disconnected=gone)

    with client_for(tiny_captioner, request_timeout_s=0.05) as c:
        runtime = c.app.state.runtime
        with pytest.raises(DeadlineExceeded):
            c.portal.call(runtime.decode_video, decode, request(False, time.perf_counter()))
        assert len(asked) < 1000
    asked.clear()
    with client_for(tiny_captioner, request_timeout_s=30) as c:
        runtime = c.app.state.runtime
        with pytest.raises(ClientGone):
            c.portal.call(runtime.decode_video, decode, request(True, time.perf_counter()))
        assert len(asked) < 1000
