"""``captioner caption`` (batch captioning of files, folders and globs) and ``captioner data``."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

import captioner.batch
from captioner.cli import main
from tests.conftest import save_image


@pytest.fixture
def fast_load(monkeypatch, tiny_bundle, tiny_captioner):
    """Hand the CLI the session's already-loaded model instead of rebuilding the encoder.

    The stand-in still checks that the CLI passed the bundle and device it was given; one test
    below runs the real loader end to end.
    """
    calls = []

    def load(bundle, device="auto"):
        calls.append((bundle, device))
        assert Path(bundle) == tiny_bundle
        assert device == "cpu"
        return tiny_captioner

    monkeypatch.setattr(captioner.batch, "load", load)
    return calls


def run(bundle: Path, *args: str, workers: int = 0) -> int:
    argv = ["caption", "--bundle", str(bundle), "--device", "cpu", "--workers", str(workers)]
    return main([*argv, *args])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def make_images(folder: Path, names: list[str], first_seed: int = 0) -> list[Path]:
    return [save_image(folder / n, seed=first_seed + i) for i, n in enumerate(names)]


# --------------------------------------------------------------------------- inputs


def test_folder_glob_and_file_are_each_captioned_once_in_a_stable_order(
    fast_load, tiny_bundle, tmp_path
) -> None:
    album = tmp_path / "album"
    make_images(album, ["b.jpg", "a.jpg", "sub/c.png"])
    (album / "notes.txt").write_text("not an image, and not matched by the folder scan")
    loose = make_images(tmp_path / "loose", ["x.jpg", "y.jpg", "z.jpeg"], first_seed=10)
    out = tmp_path / "captions.jsonl"
    inputs = [
        str(album),
        str(tmp_path / "loose" / "*.jpg"),  # x, y
        str(album / "sub" / ".." / "a.jpg"),  # already found through the folder
        str(loose[2]),  # z, named explicitly
        str(tmp_path / "loose" / "x.jpg"),  # already matched by the glob
    ]
    assert run(tiny_bundle, *inputs, "--out", str(out)) == 0
    rows = read_jsonl(out)
    expected = [
        album / "a.jpg",
        album / "b.jpg",
        album / "sub" / "c.png",
        loose[0],
        loose[1],
        loose[2],
    ]
    assert [r["path"] for r in rows] == [str(p) for p in expected]
    assert all(r["caption"] and isinstance(r["log_prob"], float) for r in rows)
    assert "error" not in {k for r in rows for k in r}

    second = tmp_path / "again.jsonl"
    assert run(tiny_bundle, *inputs, "--out", str(second)) == 0
    assert read_jsonl(second) == rows


def test_bad_files_get_error_rows_and_the_rest_are_captioned(
    fast_load, tiny_bundle, tmp_path
) -> None:
    folder = tmp_path / "pics"
    make_images(folder, ["good1.jpg", "good2.jpg"])
    (folder / "fake.jpg").write_text("this is a text file with an image name\n")
    whole = save_image(tmp_path / "whole.jpg", seed=7).read_bytes()
    (folder / "torn.jpg").write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "out.jsonl"
    missing = str(tmp_path / "nowhere" / "*.jpg")

    assert run(tiny_bundle, str(folder), missing, "--out", str(out)) == 0
    rows = {r["path"]: r for r in read_jsonl(out)}
    assert len(rows) == 5
    fake, torn = rows[str(folder / "fake.jpg")], rows[str(folder / "torn.jpg")]
    assert set(fake) == {"path", "error"}
    assert "not an image" in fake["error"]
    assert set(torn) == {"path", "error"}
    assert "truncated" in torn["error"]
    assert set(rows[missing]) == {"path", "error"}
    for name in ("good1.jpg", "good2.jpg"):
        assert rows[str(folder / name)]["caption"]


def test_only_failures_give_exit_code_1(fast_load, tiny_bundle, tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    assert run(tiny_bundle, str(tmp_path / "none-*.jpg"), "--out", str(out)) == 1
    assert [set(r) for r in read_jsonl(out)] == [{"path", "error"}]


# --------------------------------------------------------------------------- outputs


def test_jsonl_and_csv_outputs_agree(fast_load, tiny_bundle, tmp_path) -> None:
    folder = tmp_path / "pics"
    make_images(folder, ["a.jpg", "b.jpg", "c.jpg"])
    (folder / "bad.jpg").write_bytes(b"\x00\x01garbage")
    jsonl, table = tmp_path / "c.jsonl", tmp_path / "c.csv"
    assert run(tiny_bundle, str(folder), "--out", str(jsonl)) == 0
    assert run(tiny_bundle, str(folder), "--out", str(table)) == 0
    rows = read_jsonl(jsonl)
    with table.open(newline="") as f:
        table_rows = list(csv.DictReader(f))
    assert [r["path"] for r in table_rows] == [r["path"] for r in rows]
    for j, c in zip(rows, table_rows, strict=True):
        if "error" in j:
            assert c["error"] == j["error"]
            assert c["caption"] == ""
        else:
            assert c["caption"] == j["caption"]
            assert c["error"] == ""
            assert float(c["log_prob"]) == pytest.approx(j["log_prob"])


def test_n_best_adds_alternatives(fast_load, tiny_bundle, tmp_path, capsys) -> None:
    img = save_image(tmp_path / "one.jpg", seed=3)
    assert run(tiny_bundle, str(img), "--n-best", "2") == 0  # no --out: JSON lines on stdout
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(row["alternatives"]) == 2
    assert row["alternatives"][0]["caption"] == row["caption"]
    assert row["alternatives"][0]["score"] >= row["alternatives"][1]["score"]

    assert run(tiny_bundle, str(img)) == 0
    (plain,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert "alternatives" not in plain
    assert plain["caption"] == row["caption"]


def test_workers_do_not_change_captions(fast_load, tiny_bundle, tmp_path) -> None:
    folder = tmp_path / "pics"
    make_images(folder, [f"{i}.jpg" for i in range(5)])
    in_process, workers = tmp_path / "w0.jsonl", tmp_path / "w2.jsonl"
    assert run(tiny_bundle, str(folder), "--batch-size", "2", "--out", str(in_process)) == 0
    assert run(tiny_bundle, str(folder), "--batch-size", "2", "--out", str(workers), workers=2) == 0
    assert read_jsonl(workers) == read_jsonl(in_process)
    assert len(read_jsonl(workers)) == 5


# --------------------------------------------------------------------------- resume


def test_resume_skips_finished_rows_and_redoes_a_torn_one(
    fast_load, tiny_bundle, tmp_path, caplog
) -> None:
    folder = tmp_path / "pics"
    make_images(folder, ["1.jpg", "2.jpg", "3.jpg"])
    out = tmp_path / "out.jsonl"
    assert run(tiny_bundle, str(folder), "--out", str(out)) == 0
    first = read_jsonl(out)
    assert len(first) == 3

    # Mark row 1 so a re-captioning would show, and tear row 3 as if killed mid-write.
    first[0]["caption"] = "SENTINEL kept from the first run"
    lines = [json.dumps(r) for r in first]
    out.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][: len(lines[2]) // 2])
    make_images(folder, ["4.jpg", "5.jpg"], first_seed=20)

    with caplog.at_level(logging.INFO):
        assert run(tiny_bundle, str(folder), "--out", str(out), "--resume") == 0
    rows = read_jsonl(out)  # every line parses: the torn one was cut off
    paths = [r["path"] for r in rows]
    assert len(rows) == 5
    assert len(set(paths)) == 5
    assert sorted(paths) == sorted(str(folder / f"{i}.jpg") for i in range(1, 6))
    assert rows[0] == first[0]  # not redone
    assert rows[1] == first[1]
    redone = {r["path"]: r for r in rows}[first[2]["path"]]
    assert redone["caption"] == first[2]["caption"]
    assert "partly written row" in caplog.text


def test_resume_of_a_finished_run_adds_nothing(fast_load, tiny_bundle, tmp_path) -> None:
    folder = tmp_path / "pics"
    make_images(folder, ["1.jpg", "2.jpg"])
    out = tmp_path / "out.csv"
    assert run(tiny_bundle, str(folder), "--out", str(out)) == 0
    before = out.read_text()
    assert run(tiny_bundle, str(folder), "--out", str(out), "--resume") == 0
    assert out.read_text() == before


@pytest.mark.parametrize("spelling", ["absolute", "dot-slash", "symlink"])
def test_resume_knows_a_folder_however_it_is_spelt(
    fast_load, tiny_bundle, tmp_path, monkeypatch, caplog, spelling
) -> None:
    folder = tmp_path / "pics"
    make_images(folder, ["1.jpg", "2.jpg"])
    (tmp_path / "link").symlink_to(folder, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.jsonl"
    assert run(tiny_bundle, "pics", "--out", str(out)) == 0
    assert [r["path"] for r in read_jsonl(out)] == ["pics/1.jpg", "pics/2.jpg"]
    make_images(folder, ["3.jpg"], first_seed=30)
    again = {"absolute": str(folder), "dot-slash": "./pics/", "symlink": "link"}[spelling]
    with caplog.at_level(logging.INFO):
        assert run(tiny_bundle, again, "--out", str(out), "--resume") == 0
    assert "resuming: 2 of 3 inputs already done" in caplog.text
    paths = [r["path"] for r in read_jsonl(out)]
    # the new row is written as this run spells it; the old ones stay as they were
    new = {"absolute": str(folder / "3.jpg"), "dot-slash": "pics/3.jpg", "symlink": "link/3.jpg"}
    assert paths == ["pics/1.jpg", "pics/2.jpg", new[spelling]]


def test_resume_keeps_a_missing_input_once_however_it_is_spelt(
    fast_load, tiny_bundle, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.jsonl"
    assert run(tiny_bundle, "gone.jpg", "--out", str(out)) == 1
    assert run(tiny_bundle, str(tmp_path / "gone.jpg"), "--out", str(out), "--resume") == 0
    assert [r["path"] for r in read_jsonl(out)] == ["gone.jpg"]


# --------------------------------------------------------------------------- bad options


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n-best", "5", "--beam-size", "2"], "--n-best 5"),
        (["--out", "captions.txt"], ".jsonl or .csv"),
    ],
)
def test_bad_options_exit_2_with_a_message(
    fast_load, tiny_bundle, tmp_path, caplog, capsys, args, message
) -> None:
    img = save_image(tmp_path / "a.jpg", seed=0)
    args = [str(tmp_path / a) if a.endswith(".txt") else a for a in args]
    assert run(tiny_bundle, str(img), *args) == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors
    assert message in errors[-1].getMessage()
    assert "Traceback" not in caplog.text + capsys.readouterr().err
    assert not (tmp_path / "captions.txt").exists()


def test_argparse_refusals_exit_2_with_usage_on_stderr(tiny_bundle, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        run(tiny_bundle, str(tmp_path / "a.jpg"), "--workers", "-1")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--workers" in err
    assert "Traceback" not in err


def test_a_missing_bundle_exits_2_with_a_hint(tmp_path, caplog) -> None:
    img = save_image(tmp_path / "a.jpg", seed=0)
    assert run(tmp_path / "no-bundle", str(img)) == 2
    assert "manifest.json" in caplog.text


def test_real_loader_end_to_end(tiny_bundle, tiny_captioner, tmp_path) -> None:
    img = save_image(tmp_path / "a.jpg", seed=4)
    out = tmp_path / "out.jsonl"
    assert run(tiny_bundle, str(img), "--out", str(out)) == 0
    (row,) = read_jsonl(out)
    assert row["caption"] == tiny_captioner.caption(img).caption


# --------------------------------------------------------------------------- data


def test_data_scenes_writes_the_four_splits(tmp_path, capsys) -> None:
    out = tmp_path / "scenes"
    argv = ["data", "scenes", "--out", str(out), "--seed", "1"]
    argv += ["--n-train", "4", "--n-val", "2", "--n-test", "2", "--n-novel", "2"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    counts = {"train": 4, "val": 2, "test": 2, "novel": 2}
    assert set(printed) == set(counts)
    for split, n in counts.items():
        path = out / f"{split}.json"
        assert Path(printed[split]) == path
        doc = json.loads(path.read_text())
        assert len(doc["images"]) == n
        assert len(doc["annotations"]) >= 4 * n
        for image in doc["images"]:
            assert (out / "images" / image["file_name"]).is_file()


def test_a_misspelt_run_option_is_refused_naming_the_options(tiny_captioner, tmp_path) -> None:
    from captioner.batch import caption_files

    with pytest.raises(TypeError, match=r"\['wrkers'\].*batch_size, workers"):
        caption_files([str(tmp_path)], model=tiny_captioner, wrkers=0)
