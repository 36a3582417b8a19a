"""The command line as users expect it: version, -q/-v anywhere, early and one-line refusals,
stderr notes, CSV with n-best, resumable CSV headers, a full disk, progress bars, broken links,
file permissions, help texts that tell the truth, and --help / --version without torch."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import captioner
import captioner.batch
import captioner.inference
import captioner.records
from captioner import progress
from captioner.cli import main
from tests.conftest import save_image
from tests.test_batch_cli import fast_load, read_jsonl, run  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parent.parent


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
    assert "\n" not in errors[0]
    assert "Traceback" not in errors[0]
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
    assert "cpu" in message
    assert "auto" in message or "CUDA" in message


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
    assert progress.showing()
    assert not progress.showing(enabled=False)
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
    assert len(alternatives) == 3
    assert alternatives[0]["caption"] == row["caption"]


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


HEADER = ",".join(captioner.records.CSV_FIELDS)


@pytest.mark.parametrize(
    "torn",
    [HEADER, HEADER + "\r", HEADER[:9]],
    ids=["no-newline", "no-line-feed", "partial"],
)
@pytest.mark.usefixtures("fast_load")
def test_resuming_a_csv_torn_inside_its_header_rewrites_it(tiny_bundle, tmp_path, caplog, torn):
    imgs = [save_image(tmp_path / "in" / f"{i}.jpg", seed=i) for i in range(2)]
    out = tmp_path / "out.csv"
    out.write_text(torn, newline="")  # killed (or the disk filled) while writing the header
    assert run(tiny_bundle, str(tmp_path / "in"), "--out", str(out), "--resume") == 0
    assert "partly written header" in caplog.text
    with out.open(newline="") as f:
        assert f.readline() == HEADER + "\r\n"
    before = out.read_text()
    assert run(tiny_bundle, str(tmp_path / "in"), "--out", str(out), "--resume") == 0
    assert out.read_text() == before  # nothing twice
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in imgs)
    assert all(r["caption"] for r in rows)


@pytest.mark.usefixtures("fast_load")
def test_a_torn_first_line_that_is_not_this_header_is_refused(tiny_bundle, tmp_path, caplog):
    img = save_image(tmp_path / "a.jpg", seed=1)
    out = tmp_path / "out.csv"
    out.write_text("path,label,sc")  # another command's header, torn: not ours to repair
    assert run(tiny_bundle, str(img), "--out", str(out), "--resume") == 2
    assert "cannot resume" in one_error_line(caplog)
    assert out.read_text() == "path,label,sc"


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
    assert "No space left on device" in message
    assert "--resume" in message


# The CLI in a process whose files may not grow past a size: writes past it fail (EFBIG) as
# they would on a disk that fills up at that byte, part-way through a batch's rows.
SIZE_LIMITED = """
import resource, signal, sys
limit = int(sys.argv.pop(1))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
from captioner.cli import console
sys.argv = ["captioner", *sys.argv[1:]]
sys.exit(console())
"""


@pytest.mark.skipif(sys.platform == "win32", reason="needs RLIMIT_FSIZE (POSIX)")
@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
@pytest.mark.usefixtures("fast_load")
def test_a_failed_write_counts_the_rows_that_are_on_disk(
    tiny_bundle, tmp_path, caplog, suffix
) -> None:
    folder = tmp_path / "pics"
    for i in range(12):
        save_image(folder / f"{i:02d}.jpg", seed=i)
    whole = tmp_path / f"whole{suffix}"
    assert run(tiny_bundle, str(folder), "--out", str(whole)) == 0
    ends = [i + 1 for i, byte in enumerate(whole.read_bytes()) if byte == ord("\n")]
    # The limit falls inside the 8th row, 7 whole rows before it: the first 3 rows of the
    # 2nd batch of 4 reached the disk though that batch's write failed.
    first = 1 if suffix == ".csv" else 0  # the header line
    limit = ends[first + 7] - 5
    out = tmp_path / f"out{suffix}"
    args = ["caption", str(folder), "--bundle", str(tiny_bundle), "--device", "cpu"]
    args += ["--workers", "0", "--batch-size", "4", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", SIZE_LIMITED, str(limit), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    said = re.search(r"the (\d+) rows already written are kept", done.stderr)
    assert said, done.stderr[-2000:]
    assert "--resume" in done.stderr
    with caplog.at_level(logging.INFO):
        assert run(tiny_bundle, str(folder), "--out", str(out), "--resume") == 0
    assert f"resuming: {said[1]} of 12 inputs already done" in caplog.text
    assert said[1] == "7"
    assert out.read_bytes() == whole.read_bytes()


def test_help_shows_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["activity", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "labels listed per video (default: 5)" in text
    assert "timeline window, seconds (default: the length of the model's training clips" in text


# -- refusals and rows -----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["caption", "activity"])
def test_resume_without_out_is_refused(command, no_model, tmp_path, caplog) -> None:
    img = save_image(tmp_path / "a.jpg", seed=1)
    assert main([command, str(img), "--resume"]) == 2
    assert "--resume needs --out: add --out" in one_error_line(caplog)


@pytest.mark.usefixtures("fast_load")
def test_a_broken_symlink_in_a_folder_gets_an_error_row(tiny_bundle, tmp_path) -> None:
    album = tmp_path / "album"
    good = save_image(album / "a.jpg", seed=1)
    (album / "b.jpg").symlink_to(tmp_path / "moved-away.jpg")
    out = tmp_path / "out.jsonl"
    assert run(tiny_bundle, str(album), "--out", str(out)) == 0
    rows = read_jsonl(out)
    assert [r["path"] for r in rows] == [str(good), str(album / "b.jpg")]
    assert rows[0]["caption"]
    assert "broken symbolic link" in rows[1]["error"]


@pytest.mark.usefixtures("fast_load")
def test_output_files_get_the_usual_permissions(tiny_bundle, tmp_path) -> None:
    """Readable by others as any file the user writes (umask 022 -> 0644), not private."""
    img = save_image(tmp_path / "a.jpg", seed=1)
    old = os.umask(0o022)
    try:
        for name in ("out.jsonl", "out.csv", "out.part-0-of-1.jsonl"):
            assert run(tiny_bundle, str(img), "--out", str(tmp_path / name)) == 0
        assert (
            main(
                [
                    "merge",
                    str(tmp_path / "out.part-0-of-1.jsonl"),
                    "--out",
                    str(tmp_path / "m.jsonl"),
                ]
            )
            == 0
        )
    finally:
        os.umask(old)
    for name in ("out.jsonl", "out.csv", "m.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_data_commands_name_the_extra_they_need(monkeypatch, tmp_path, caplog) -> None:
    monkeypatch.setitem(sys.modules, "skimage", None)  # as if scikit-image were not installed
    assert main(["data", "scenes", "--out", str(tmp_path / "d"), "--n-train", "1"]) == 2
    assert "pip install 'captioner[data]'" in one_error_line(caplog)
    assert not (tmp_path / "d").exists()


# -- help and version: true, complete, and without torch -------------------------------------


def _commands(parser=None, prefix=()) -> list[tuple[str, ...]]:
    """Every command path of the parser: (), ("caption",), ("data", "scenes"), ..."""
    import argparse

    from captioner.cli import build_parser

    parser = parser or build_parser()
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += _commands(sub, (*prefix, name))
    return paths


def _imports(*args: str) -> tuple[str, set[str]]:
    """Run ``python -m captioner ARGS`` and list every module it imported (-X importtime),
    also in the process ``captioner serve`` hands over to."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "captioner", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("import time:")]
    return done.stdout, {ln.rsplit("|", 1)[1].strip() for ln in lines}


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c) or "captioner")
def test_help_imports_no_torch(command) -> None:
    out, modules = _imports(*command, "--help")
    assert "usage:" in out
    assert "torch" not in modules
    assert "skimage" not in modules


def test_version_imports_no_torch() -> None:
    out, modules = _imports("--version")
    assert out.strip() == f"captioner {captioner.__version__}"
    assert "torch" not in modules


def test_help_names_the_shipped_models_defaults(capsys) -> None:
    decoding = json.loads((ROOT / "weights/caption-default/manifest.json").read_text())["decoding"]
    with pytest.raises(SystemExit):
        main(["caption", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    # The records as they are today, not the {path, caption, log_prob} of long ago.
    assert "{path, caption, log_prob, confidence, tags, out_of_domain, domain_distance}" in text
    assert f"(default: the bundle's, {decoding['max_len']} for the shipped model)" in text
    assert f"beam width (default: the bundle's, {decoding['beam_size']} for the shipped" in text
    assert "(needs --out)" in text


def test_help_shows_zero_defaults_too(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["data", "scenes", "--help"])
    assert "the same seed gives the same files (default: 0)" in " ".join(
        capsys.readouterr().out.split()
    )
