"""The command line as users expect it: version, -q/-v anywhere, early and one-line refusals,
stderr notes, CSV with n-best, resumable CSV headers, a full disk, progress bars."""

from __future__ import annotations

import csv
import json
import logging
import sys
from pathlib import Path

import pytest

import captioner
import captioner.batch
import captioner.inference
from captioner import progress
from captioner.cli import main
from tests.conftest import save_image
from tests.test_batch_cli import fast_load, read_jsonl, run  # noqa: F401  (fixture)


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a model is loaded: refusals must come before any loading."""

    def refuse(*_a, **_k):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(captioner.batch, "load", refuse)
    monkeypatch.setattr(captioner.inference, "load", refuse)


def one_error_line(caplog) -> str:
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "\n" not in errors[0] and "Traceback" not in errors[0]
    return errors[0]


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"captioner {captioner.__version__}"


@pytest.mark.parametrize("device", ["gpu", "CPU", "mps", "cuda:7", "cuda:x", ""])
def test_bad_devices_exit_2_naming_the_choices(device, no_model, tmp_path, caplog) -> None:
    img = save_image(tmp_path / "a.jpg", seed=1)
    assert main(["caption", str(img), "--device", device]) == 2
    message = one_error_line(caplog)
    assert "cpu" in message and ("auto" in message or "CUDA" in message)


def test_options_are_checked_before_the_model_loads(no_model, tmp_path, caplog) -> None:
    img = str(save_image(tmp_path / "a.jpg", seed=1))
    assert main(["caption", img, "--out", str(tmp_path / "out.txt")]) == 2
    assert ".jsonl or .csv" in one_error_line(caplog)
    caplog.clear()
    # The shipped bundle's beam is 3: asking for 4 alternatives cannot be honoured.
    assert main(["caption", img, "--n-best", "4"]) == 2
    assert "--n-best 4" in one_error_line(caplog)
    caplog.clear()
    assert main(["activity", "x.mp4", "--timeline", "--window", "1", "--stride", "2"]) == 2
    one_error_line(caplog)


@pytest.mark.usefixtures("fast_load")
def test_quiet_and_verbose_work_after_the_subcommand(tiny_bundle, tmp_path, caplog):
    img = save_image(tmp_path / "a.jpg", seed=1)
    out = tmp_path / "out.jsonl"
    caplog.set_level(logging.DEBUG)
    assert run(tiny_bundle, str(img), "--out", str(out), "-q") == 0
    assert logging.getLogger().level == logging.WARNING
    assert progress.showing() is False
    assert run(tiny_bundle, str(img), "--out", str(out), "--verbose") == 0
    assert logging.getLogger().level == logging.DEBUG


def test_progress_bars_only_on_a_terminal(monkeypatch) -> None:
    progress.set_quiet(False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert not progress.showing()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert progress.showing() and not progress.showing(enabled=False)
    progress.set_quiet(True)
    try:
        assert not progress.showing()
    finally:
        progress.set_quiet(False)


@pytest.mark.usefixtures("fast_load")
def test_no_carriage_returns_when_stderr_is_a_file(tiny_bundle, tmp_path, capfd):
    for i in range(3):
        save_image(tmp_path / "in" / f"{i}.jpg", seed=i)
    assert run(tiny_bundle, str(tmp_path / "in"), "--out", str(tmp_path / "o.jsonl")) == 0
    assert "\r" not in capfd.readouterr().err


@pytest.mark.usefixtures("fast_load")
def test_a_missing_input_is_said_on_stderr_too(tiny_bundle, tmp_path, caplog):
    missing = str(tmp_path / "nope.jpg")
    out = tmp_path / "out.jsonl"
    assert run(tiny_bundle, missing, "--out", str(out)) == 1
    assert any(missing in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert read_jsonl(out)[0]["path"] == missing


@pytest.mark.usefixtures("fast_load")
def test_n_best_with_csv_keeps_the_alternatives(tiny_bundle, tmp_path) -> None:
    img = save_image(tmp_path / "a.jpg", seed=3)
    out = tmp_path / "out.csv"
    assert run(tiny_bundle, str(img), "--beam-size", "3", "--n-best", "3", "--out", str(out)) == 0
    with out.open(newline="") as f:
        (row,) = list(csv.DictReader(f))
    alternatives = json.loads(row["alternatives"])
    assert len(alternatives) == 3 and alternatives[0]["caption"] == row["caption"]


@pytest.mark.usefixtures("fast_load")
def test_resuming_an_empty_csv_writes_its_header(tiny_bundle, tmp_path) -> None:
    imgs = [save_image(tmp_path / "in" / f"{i}.jpg", seed=i) for i in range(2)]
    out = tmp_path / "out.csv"
    out.write_text("")  # the disk filled up before the header was written
    for _ in range(2):  # resuming twice must not caption anything twice
        assert run(tiny_bundle, str(tmp_path / "in"), "--out", str(out), "--resume") == 0
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in imgs)


@pytest.mark.usefixtures("fast_load")
def test_resuming_a_csv_with_other_columns_is_refused(tiny_bundle, tmp_path, caplog):
    img = save_image(tmp_path / "a.jpg", seed=1)
    out = tmp_path / "out.csv"
    out.write_text("path,label,score\nx.mp4,static,0.9\n")
    assert run(tiny_bundle, str(img), "--out", str(out), "--resume") == 2
    assert "cannot resume" in one_error_line(caplog)
    assert out.read_text() == "path,label,score\nx.mp4,static,0.9\n"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
@pytest.mark.usefixtures("fast_load")
def test_a_full_disk_is_one_clear_message_and_exit_1(tiny_bundle, tmp_path, caplog, suffix) -> None:
    img = save_image(tmp_path / "a.jpg", seed=1)
    out = tmp_path / f"out{suffix}"
    out.symlink_to("/dev/full")  # every write fails with ENOSPC
    assert run(tiny_bundle, str(img), "--out", str(out)) == 1
    message = one_error_line(caplog)
    assert "No space left on device" in message and "--resume" in message


def test_help_shows_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["activity", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "labels listed per video (default: 5)" in text
    assert "timeline window, seconds (default: the length of the model's training clips" in text
