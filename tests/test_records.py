"""One output shape per result: the CLI rows, the CSV and the HTTP answers are the results'
``to_record()``, rounded alike; the error row has one shape."""

from __future__ import annotations

import csv
import io
import json
import time

from fastapi.testclient import TestClient

from captioner.cli import main
from captioner.inference import error_record
from service.app import create_app
from service.runtime import LoadedModels
from service.settings import Settings
from tests.conftest import make_image, save_image


def _decimals(value: float) -> int:
    text = repr(value)
    return len(text.split(".")[1]) if "." in text and "e" not in text else 0


def test_csv_alternatives_are_rounded_like_the_jsonl_rows(tiny_bundle, tmp_path) -> None:
    image = save_image(tmp_path / "in" / "a.png", seed=2, fmt="PNG")
    rows = {}
    for suffix in ("jsonl", "csv"):
        out = tmp_path / f"rows.{suffix}"
        argv = ["caption", str(image), "--bundle", str(tiny_bundle), "--n-best", "3"]
        assert main([*argv, "--workers", "0", "--device", "cpu", "--out", str(out)]) == 0
        if suffix == "csv":
            (row,) = csv.DictReader(io.StringIO(out.read_text()))
            rows[suffix] = json.loads(row["alternatives"])
        else:
            rows[suffix] = json.loads(out.read_text())["alternatives"]
    assert rows["csv"] == rows["jsonl"]
    assert len(rows["csv"]) == 3
    for alt in rows["csv"]:
        assert _decimals(alt["log_prob"]) <= 4
        assert _decimals(alt["score"]) <= 4


def test_http_answers_are_the_records_of_the_results(tiny_captioner) -> None:
    image = make_image(11)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    settings = Settings(device="cpu", enable_activity=False, max_wait_ms=1.0)
    app = create_app(settings, models=LoadedModels(captioner=tiny_captioner, failures={}))
    with TestClient(app) as client:
        while client.get("/readyz").status_code != 200:
            time.sleep(0.01)
        files = {"file": ("a.png", buf.getvalue(), "image/png")}
        item = client.post("/v1/caption?n_best=3", files=files).json()["results"][0]
    record = tiny_captioner.caption(image, n_best=3).to_record(details=True)
    expected = {k: v for k, v in record.items() if v is not None}  # the API leaves out nulls
    assert item == {**expected, "filename": "a.png", "width": 96, "height": 96}
    assert all(_decimals(a["log_prob"]) <= 4 for a in item["alternatives"])


def test_the_error_row_has_one_shape(tmp_path) -> None:
    assert error_record(tmp_path / "x.jpg", "unreadable") == {
        "path": str(tmp_path / "x.jpg"),
        "error": "unreadable",
    }
    out = tmp_path / "rows.jsonl"
    assert main(["caption", str(tmp_path / "nothing-here.jpg"), "--out", str(out)]) == 1
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert set(row) == {"path", "error"}
