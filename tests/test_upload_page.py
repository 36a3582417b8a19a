"""The upload page in a real headless Chromium, against the real app on a local port.

Set ``CAPTIONER_PAGE_SCREENSHOTS=/some/dir`` to save a screenshot of each result there.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import captioner
from captioner.bundle import read_manifest
from captioner.inference import default_bundle_dir
from tests.browser import launch, outside, requested_urls, require_browser

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
WAIT_S = 60  # a hang guard, not a speed requirement
BEAM, N_BEST = 3, 3
UNSURE_BELOW = 0.5  # the page's threshold for "unsure" (service/static/index.html)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """The real app (default bundles, CPU) served by uvicorn in a thread, once it is ready."""
    require_browser()  # no point loading models when no browser can look at them
    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    settings = Settings(device="cpu", enable_activity=_has_activity_model())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # the server takes this socket: no race for the free port
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_ready(url, thread)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _has_activity_model() -> bool:
    return (default_bundle_dir("activity") / "manifest.json").is_file()


def _wait_ready(url: str, thread: threading.Thread) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if not thread.is_alive():
            pytest.fail("the app's server stopped during start-up (see the log above)")
        if _readyz(url) == "ready":
            return
        time.sleep(0.2)
    pytest.fail("the app did not report ready on /readyz within 180 s")


def _readyz(url: str) -> str:
    """'ready', 'loading', or fails the test at once when the app says loading failed."""
    try:
        with urllib.request.urlopen(url + "readyz", timeout=5) as reply:
            return "ready" if reply.status == 200 else "loading"
    except urllib.error.HTTPError as exc:  # 503 while loading
        body = json.loads(exc.read() or b"{}")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return "loading"
    if body.get("status") == "failed":
        pytest.fail(f"the app could not load its models: {body.get('detail')}")
    return "loading"


@pytest.fixture(scope="module")
def driver(base_url: str):
    browser = launch()
    yield browser
    browser.quit()


@pytest.fixture
def page(driver, base_url: str):
    """The upload page, freshly loaded."""
    driver.get(base_url)
    return driver


@pytest.fixture(scope="module")
def model() -> captioner.Captioner:
    return captioner.load(device="cpu")


# -- helpers --------------------------------------------------------------------------------


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def css_all(driver, selector: str) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def upload(driver, path: Path) -> None:
    """Choose ``path`` in the file input and press the button."""
    chooser = css(driver, "#file")
    chooser.clear()
    chooser.send_keys(str(path))
    css(driver, "#submit").click()


def set_number(driver, selector: str, value: int) -> None:
    field = css(driver, selector)
    field.clear()
    field.send_keys(str(value))


def wait_for_text(driver, selector: str) -> str:
    """Wait until ``selector`` shows text; fail at once with the page's error if one appears."""
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d) -> str | bool:
        error = css(d, "#error")
        if error.is_displayed():
            raise AssertionError(f"the page shows an error: {error.text}")
        return css(d, selector).text.strip() or False

    return WebDriverWait(driver, WAIT_S).until(shown)


def wait_for_error(driver) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(
        lambda d: css(d, "#error").is_displayed() and css(d, "#error").text
    )


def heatmap_pixels(driver) -> int:
    """How many pixels of the heatmap canvas are not fully transparent."""
    return driver.execute_script(
        """const c = document.querySelector('#heatmap');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
        return n;"""
    )


def screenshot(driver, name: str) -> None:
    folder = os.environ.get("CAPTIONER_PAGE_SCREENSHOTS")
    if folder:
        driver.save_screenshot(str(Path(folder) / f"page-{name}.png"))


def post_file(url: str, path: Path) -> tuple[int, dict]:
    """POST one file as multipart field ``file`` straight to the server -> (status, JSON)."""
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    )
    body = head.encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=WAIT_S) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# -- tests ----------------------------------------------------------------------------------


def test_image_caption_words_and_attention_heatmap(page, model):
    photo = EXAMPLES / "photo-chelsea.jpg"
    expected = model.caption(photo, beam_size=BEAM, n_best=N_BEST)
    set_number(page, "#beam-size", BEAM)
    set_number(page, "#n-best", N_BEST)
    upload(page, photo)

    caption = wait_for_text(page, "#caption")
    assert caption == expected.caption
    chips = css_all(page, ".word")
    assert [c.text for c in chips] == expected.words
    alternatives = [li.text for li in css_all(page, "#alternatives li")]
    assert [a.split("log p")[0].strip() for a in alternatives] == [
        alt["caption"] for alt in expected.alternatives
    ]
    assert css(page, "#preview").get_attribute("naturalWidth") == "451"

    # How far to trust it: confidence, the ImageNet tags, and the out-of-domain warning.
    assert f"{round(expected.confidence * 100)}%" in css(page, "#confidence").text
    tags = [li.text for li in css_all(page, "#tags li")]
    assert expected.tags
    assert len(tags) == len(expected.tags)
    assert tags[0].startswith(expected.tags[0]["name"])
    assert tags[0].startswith("cat")
    assert css(page, "#domain-warning").is_displayed() == bool(expected.out_of_domain)
    assert not expected.out_of_domain, "an everyday photo is in the default model's domain"
    assert css(page, "#unsure").is_displayed() == (expected.confidence < UNSURE_BELOW)

    # The API sends attention maps only when asked (?attention=true): the page must ask.
    assert "no attention maps" not in css(page, "#word-hint").text
    assert heatmap_pixels(page) == 0, "the heatmap is drawn before any word was chosen"
    chips[1].click()
    assert chips[1].get_attribute("aria-pressed") == "true"
    assert heatmap_pixels(page) > 0
    canvas, image = css(page, "#heatmap").rect, css(page, "#preview").rect
    assert canvas == image, "the heatmap does not lie exactly over the picture"
    screenshot(page, "image")


def test_video_activity_with_timeline(page):
    bundle = default_bundle_dir("activity")
    if not _has_activity_model():
        pytest.skip(f"no shipped activity model yet ({bundle} is missing)")
    classes = read_manifest(bundle)["classes"]
    clip = EXAMPLES / "clip-moving_left.webm"
    if not css(page, "#want-timeline").is_selected():
        css(page, "#want-timeline").click()
    upload(page, clip)

    label = wait_for_text(page, "#activity-label")
    assert label in classes
    assert label == clip.stem.removeprefix("clip-")
    topk = css_all(page, "#topk li")
    assert len(topk) == min(5, len(classes))
    assert topk[0].text.startswith(label)
    rows = css_all(page, "#timeline tbody tr")
    assert rows
    cells = [css_all(row, "td") for row in rows]
    assert all(c[2].text in classes for c in cells)
    assert all(c[4].text.endswith(".") for c in cells)  # each window's sentence
    assert len(css_all(page, "#timeline-strip > div")) == len(rows)
    sentence = wait_for_text(page, "#clip-sentence")  # what happens in the clip, in words
    assert sentence.endswith(".")
    assert sentence[0].isupper()
    # The example clip is VP9 WebM: Chromium plays it (the page hides the player otherwise).
    deadline = time.monotonic() + 10
    state = page.execute_script("const v = document.getElementById('video'); return v.readyState")
    while state < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
        state = page.execute_script(
            "const v = document.getElementById('video'); return v.readyState"
        )
    assert state >= 1, "Chromium could not load the example clip's metadata"
    duration = page.execute_script("return document.getElementById('video').duration")
    assert duration == pytest.approx(2.0, abs=0.1)
    assert not css(page, "#video").get_attribute("hidden")
    assert css(page, "#video-note").get_attribute("hidden") is not None
    screenshot(page, "video")


def test_bad_file_shows_server_message_then_page_still_works(page, model, base_url, tmp_path):
    fake = tmp_path / "notes.jpg"
    fake.write_text("these are my notes, not a picture\n")
    status, body = post_file(base_url + "v1/caption", fake)
    message = body["detail"] if status >= 400 else body["results"][0]["error"]
    assert message

    upload(page, fake)
    shown = wait_for_error(page)
    assert message in shown
    assert not css(page, "#caption").text
    screenshot(page, "error")

    good = EXAMPLES / "scene-0.jpg"
    upload(page, good)
    assert wait_for_text(page, "#caption") == model.caption(good, beam_size=BEAM).caption
    assert not css(page, "#error").is_displayed()


def test_a_foreign_picture_shows_the_domain_warning(page, model, tmp_path):
    from PIL import Image
    from skimage import data

    text = tmp_path / "text.png"
    Image.fromarray(data.text()).convert("RGB").save(text)  # printed text: nothing it knows
    expected = model.caption(text, beam_size=BEAM)
    assert expected.out_of_domain
    upload(page, text)
    assert wait_for_text(page, "#caption") == expected.caption
    note = css(page, "#domain-warning")
    assert note.is_displayed()
    assert "unlike the photographs the model knows" in note.text
    assert "guess" not in note.text  # a note, not a verdict on the caption


@pytest.mark.parametrize(
    ("confidence", "out_of_domain", "unsure", "note"),
    [(0.3, False, True, False), (0.9, True, False, True), (0.9, False, False, False)],
)
def test_unsure_follows_confidence_and_the_domain_note_is_separate(
    page, confidence, out_of_domain, unsure, note
):
    """The page's own rendering of a hand-made result: "unsure" for a low confidence only."""
    assert page.execute_script("return UNSURE_BELOW") == UNSURE_BELOW  # the README's figure
    result = {"confidence": confidence, "out_of_domain": out_of_domain, "tags": []}
    page.execute_script("showTrust(arguments[0]); $('#image-result').hidden = false;", result)
    assert css(page, "#unsure").is_displayed() == unsure
    assert css(page, "#domain-warning").is_displayed() == note
    if unsure:
        text = css(page, "#unsure").text
        assert text.startswith("Unsure")
        assert f"{round(confidence * 100)}%" in text
        assert f"below {round(UNSURE_BELOW * 100)}%" in text


@pytest.fixture(scope="module")
def offline_driver(base_url: str):
    browser = launch(offline=True)
    yield browser
    browser.quit()


# What shows that each page has rendered: then every request it makes at start has been made.
RENDERED = {
    "": "#file",
    "docs": ".swagger-ui .opblock-summary-path",
    "redoc": "img[alt='redocly logo']",
}


@pytest.mark.parametrize("path", list(RENDERED))
def test_pages_make_no_request_outside_this_server(offline_driver, base_url, path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver = offline_driver
    requested_urls(driver)  # forget what earlier pages asked for
    driver.get(base_url + path)
    WebDriverWait(driver, WAIT_S).until(lambda d: css_all(d, RENDERED[path]))
    urls = requested_urls(driver)
    deadline = time.monotonic() + 2  # late requests (images, workers) after the first render
    while time.monotonic() < deadline:
        time.sleep(0.25)
        urls += requested_urls(driver)
    assert base_url + path in urls, "the performance log saw no request: the check is blind"
    assert not outside(urls, base_url), f"/{path} asked for {outside(urls, base_url)}"
    refused = [
        e["message"] for e in driver.get_log("browser") if "Content Security" in e["message"]
    ]
    assert not refused, refused
    if path == "docs":
        shown = [e.text for e in css_all(driver, ".swagger-ui .opblock-summary-path")]
        assert "/v1/caption" in shown
    if path == "redoc":
        assert "captioner" in driver.title
        assert "/v1/activity" in driver.page_source
