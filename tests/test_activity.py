"""Activity recognition end to end on tiny motion clips: train, load, label, evaluate, CLI.

The encoder is the seeded toy one (no ImageNet features); the activity model is tiny and
trained for two epochs, so the tests check plumbing and contracts, not accuracy.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from PIL import Image

import captioner
import captioner.data.features as feature_caches
from captioner.bundle import load_bundle, read_manifest
from captioner.cli import main
from captioner.data.motion import CLASSES
from captioner.evaluation import evaluate_activity, plot_confusion
from captioner.inference import ActivityClassifier, ActivityResult
from captioner.training.activity import ActivityOptions, train_activity
from captioner.training.loop import RunConfig, TrainConfig

OPTS = ActivityOptions(
    num_frames=4, train_samples=2, hidden_dim=16, embed_dim=16, cell_dim=8, batch_size=8
)
CFG = TrainConfig(epochs=2, monitor="top1", progress=False)
DURATION = 1.0  # 12 frames at the generator's default 12 fps


@contextmanager
def count_clip_encodes() -> Iterator[list[int]]:
    """Record how many videos each call of the clip encoder (feature cache) is given."""
    real = feature_caches.encode_clips
    seen: list[int] = []

    def spy(encode, clips):
        seen.append(clips.size(0))
        return real(encode, clips)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(feature_caches, "encode_clips", spy)
        yield seen


@pytest.fixture(scope="module")
def motion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """9 classes x (2 train, 1 val, 1 test) clips of 12 frames, 64 x 64."""
    from captioner.data.motion import generate_motion

    root = tmp_path_factory.mktemp("motion")
    generate_motion(
        root,
        seed=5,
        n_per_class=2,
        n_val_per_class=1,
        n_test_per_class=1,
        frames=12,
        size=64,
        progress=False,
    )
    return root


def train(motion: Path, out: Path, cache: Path) -> Path:
    return train_activity(
        motion / "train",
        motion / "val",
        out,
        opts=OPTS,
        run=RunConfig(train_cfg=CFG, encoder_name="toy", device="cpu", cache_root=cache, workers=0),
    )


@pytest.fixture(scope="module")
def trained(motion, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("activity")
    with count_clip_encodes() as encoded:
        bundle = train(motion, root / "bundle", root / "cache")
    return {"bundle": bundle, "cache": root / "cache", "encoded": encoded, "root": root}


@pytest.fixture(scope="module")
def bundle(trained) -> Path:
    return trained["bundle"]


@pytest.fixture(scope="module")
def clf(bundle) -> ActivityClassifier:
    model = captioner.load(bundle, device="cpu")
    assert isinstance(model, ActivityClassifier)
    return model


def clip(motion: Path, cls: str = "moving_left", split: str = "test") -> Path:
    return motion / split / cls / "000000.mp4"


# --------------------------------------------------------------------------- training


def test_training_writes_an_activity_bundle(bundle) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["task"] == "activity"
    assert manifest["classes"] == list(CLASSES)
    assert manifest["model"]["num_classes"] == len(CLASSES)
    assert manifest["sampling"]["num_frames"] == 4
    assert manifest["training"]["data"]["train_videos"] == 2 * len(CLASSES)
    assert manifest["training"]["data"]["val_videos"] == len(CLASSES)
    assert manifest["training"]["epochs_run"] == 2
    assert 0.0 <= manifest["metrics"]["val"]["top1"] <= manifest["metrics"]["val"]["top5"] <= 1.0


def test_bundle_weights_are_safetensors_only(bundle) -> None:
    assert set(load_bundle(bundle).weights) == {"model.safetensors"}
    top = sorted(p.name for p in bundle.iterdir())
    assert top == [
        "checkpoint",
        "curves.png",
        "manifest.json",
        "metrics.jsonl",
        "model.safetensors",
    ]
    pickles = [
        p for p in bundle.rglob("*") if p.suffix in (".pt", ".pth", ".pkl", ".pickle", ".bin")
    ]
    assert pickles == []


def test_each_video_is_encoded_once_and_a_second_run_reuses_the_cache(trained, motion) -> None:
    # 18 training videos (2 cached clips each, in one encoder call per batch) + 9 validation.
    assert sum(trained["encoded"]) == 3 * len(CLASSES)
    with count_clip_encodes() as again:
        second = train(motion, trained["root"] / "again", trained["cache"])
    assert again == []
    first = json.loads((trained["bundle"] / "manifest.json").read_text())["metrics"]
    assert json.loads((second / "manifest.json").read_text())["metrics"] == first  # seeded


# --------------------------------------------------------------------------- inference


def test_load_dispatches_on_the_bundle_task(clf, tiny_bundle, tiny_captioner) -> None:
    assert clf.classes == list(CLASSES)
    assert clf.num_frames == 4
    assert isinstance(captioner.load(tiny_bundle, device="cpu"), captioner.Captioner)


def test_classify_a_path_gives_a_ranked_label(clf, motion) -> None:
    res = clf.classify(clip(motion))
    assert isinstance(res, ActivityResult)
    assert res.label in CLASSES
    assert len(res.top_k) == 5
    scores = [t["score"] for t in res.top_k]
    assert scores == sorted(scores, reverse=True)
    assert res.label == res.top_k[0]["label"]
    assert res.score == scores[0]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert sum(scores) <= 1.0 + 1e-3
    assert res.timeline is None
    assert "timeline" not in res.to_dict()


def test_top_k_is_capped_at_the_number_of_classes(clf, motion) -> None:
    res = clf.classify(clip(motion), top_k=50)
    assert sorted(t["label"] for t in res.top_k) == sorted(CLASSES)
    assert sum(t["score"] for t in res.top_k) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="top_k"):
        clf.classify(clip(motion), top_k=0)


def test_bytes_and_lists_give_the_same_results_as_paths(clf, motion) -> None:
    paths = [clip(motion, "moving_up"), clip(motion, "growing")]
    singles = [clf.classify(p) for p in paths]
    from_bytes = clf.classify(paths[0].read_bytes())
    assert from_bytes.label == singles[0].label
    assert from_bytes.score == pytest.approx(singles[0].score, abs=1e-4)
    listed = clf.classify([str(p) for p in paths])
    assert isinstance(listed, list)
    assert len(listed) == 2
    assert [r.label for r in listed] == [r.label for r in singles]


def test_probabilities_do_not_depend_on_the_batch(clf, motion) -> None:
    clips = [clf.load_clip(clip(motion, c)) for c in ("moving_left", "static", "shrinking")]
    assert clips[0].shape == (4, 3, clf.size, clf.size)
    assert clips[0].dtype == torch.uint8
    together = clf.probabilities(torch.stack(clips))
    apart = torch.cat([clf.probabilities(c[None]) for c in clips])
    torch.testing.assert_close(together, apart, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(together.sum(-1), torch.ones(3))


def test_timeline_windows_cover_the_clip(clf, motion) -> None:
    res = clf.classify(clip(motion, "rotating_clockwise"), timeline=True, window=0.5, stride=0.25)
    windows = res.timeline
    assert [(w["start"], w["end"]) for w in windows] == [(0.0, 0.5), (0.25, 0.75), (0.5, 1.0)]
    for w in windows:
        assert w["start"] < w["end"]
        assert w["label"] in CLASSES
        assert 0.0 < w["score"] <= 1.0
    assert windows[0]["start"] == 0.0
    assert windows[-1]["end"] == pytest.approx(DURATION)
    assert "timeline" in res.to_dict()


def test_a_bad_video_raises_a_media_error_naming_the_problem(clf, tmp_path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("hello\n")
    with pytest.raises(captioner.MediaError, match="text file"):
        clf.classify(text)


def test_errors_return_gives_an_error_result_in_place_and_labels_the_rest(
    clf, motion, tmp_path
) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("hello\n")
    good = clip(motion, "growing")
    results = clf.classify([good, text, tmp_path / "missing.mp4"], errors="return")
    assert isinstance(results[0], ActivityResult)
    assert results[0].label == clf.classify(good).label
    bad = results[1]
    assert isinstance(bad, captioner.ErrorResult)
    assert "text file" in bad.error
    assert bad.to_record() == {"path": str(text), "error": bad.error}
    assert isinstance(results[2], captioner.ErrorResult)
    with pytest.raises(captioner.MediaError):  # the default stays "raise"
        clf.classify([good, text])
    with pytest.raises(ValueError, match="errors must be"):
        clf.classify(good, errors="skip")


def test_the_model_is_callable_like_classify(clf, motion) -> None:
    assert clf(clip(motion), top_k=2) == clf.classify(clip(motion), top_k=2)


def test_bad_timeline_options_are_refused_before_any_video_is_read(clf, tmp_path) -> None:
    missing = tmp_path / "never-read.mp4"
    with pytest.raises(ValueError, match=r"stride .* is longer than the window"):
        clf.classify(missing, timeline=True, window=0.5, stride=1.0)
    with pytest.raises(ValueError, match="window must be a positive number"):
        clf.classify(missing, timeline=True, window=-1.0)
    with pytest.raises(ValueError, match="longer than the window"):  # the default window, 2 s
        clf.timeline_window(None, 5.0)


def test_activity_records_are_rounded_and_match_the_result(clf, motion) -> None:
    res = clf.classify(clip(motion), timeline=True, window=0.5, stride=0.25)
    res.score, res.top_k[0]["score"] = 0.123456789, 0.123456789
    record = res.to_record()
    assert record["score"] == 0.1235
    assert record["top_k"][0]["score"] == 0.1235
    assert record["label"] == res.label
    assert len(record["timeline"]) == len(res.timeline)


# --------------------------------------------------------------------------- evaluation


@pytest.fixture(scope="module")
def report(bundle, motion, trained) -> dict:
    return evaluate_activity(
        bundle,
        motion / "test",
        device="cpu",
        cache_root=trained["cache"],
        workers=0,
        progress=False,
    )


def test_evaluation_report(report) -> None:
    k = len(CLASSES)
    assert report["videos"] == k
    assert report["skipped"] == 0
    assert 0.0 <= report["top1"] <= report["top5"] <= 1.0
    assert report["classes"] == list(CLASSES)
    assert list(report["per_class"]) == list(CLASSES)
    confusion = report["confusion"]
    assert len(confusion) == k
    assert all(len(row) == k for row in confusion)
    assert [sum(row) for row in confusion] == [1] * k  # one test clip per class
    diagonal = [confusion[i][i] for i in range(k)]
    assert report["top1"] == pytest.approx(sum(diagonal) / k)
    assert list(report["per_class"].values()) == pytest.approx(diagonal)


def test_evaluation_skips_unreadable_videos_and_counts_them(bundle, motion, tmp_path) -> None:
    data = tmp_path / "mixed"
    for cls in ("moving_left", "static"):
        (data / cls).mkdir(parents=True)
        (data / cls / "a.mp4").write_bytes(clip(motion, cls).read_bytes())
    (data / "static" / "broken.mp4").write_text("not a video\n")
    result = evaluate_activity(
        bundle, data, device="cpu", cache_root=tmp_path / "cache", workers=0, progress=False
    )
    assert result["videos"] == 2
    assert result["skipped"] == 1
    assert result["classes"] == list(CLASSES)  # the bundle's order, not the folder's
    assert sum(map(sum, result["confusion"])) == 2


def test_evaluating_the_validation_videos_reuses_the_training_cache(
    bundle, motion, trained
) -> None:
    with count_clip_encodes() as encoded:
        evaluate_activity(
            bundle,
            motion / "val",
            device="cpu",
            cache_root=trained["cache"],
            workers=0,
            progress=False,
        )
    assert encoded == []


def test_the_clip_cache_does_not_depend_on_the_working_directory(
    bundle, motion, trained, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with count_clip_encodes() as encoded:
        evaluate_activity(
            bundle,
            motion / "val",
            device="cpu",
            cache_root=trained["cache"],
            workers=0,
            progress=False,
        )
    assert encoded == []


def test_plot_confusion_writes_a_png(report, tmp_path) -> None:
    path = plot_confusion(report, tmp_path / "confusion.png")
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert min(img.size) > 44 * len(CLASSES)
        assert len(img.convert("RGB").getcolors(1 << 16)) > 2  # cells, text: not a blank page


# --------------------------------------------------------------------------- CLI


def run(bundle: Path, *args: str) -> int:
    return main(["activity", *args, "--bundle", str(bundle), "--device", "cpu", "--workers", "0"])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def bad_inputs(folder: Path) -> tuple[Path, Path]:
    corrupt = folder / "corrupt.mp4"
    corrupt.write_text("not a video at all, just some text\n")
    hls = folder / "hls.mp4"
    hls.write_text("#EXTM3U\n#EXT-X-VERSION:3\n#EXTINF:4.0,\nhttp://example.com/seg0.ts\n")
    return corrupt, hls


def test_cli_labels_good_videos_and_reports_bad_ones(bundle, clf, motion, tmp_path) -> None:
    good = clip(motion, "moving_down")
    corrupt, hls = bad_inputs(tmp_path)
    out = tmp_path / "labels.jsonl"
    assert run(bundle, str(good), str(corrupt), str(hls), "--out", str(out)) == 0
    rows = {r["path"]: r for r in read_jsonl(out)}
    assert set(rows) == {str(good), str(corrupt), str(hls)}
    row = rows[str(good)]
    assert row["label"] in CLASSES
    assert "error" not in row
    assert next(t["label"] for t in row["top_k"]) == row["label"]
    assert row["label"] == clf.classify(good).label
    assert row["score"] == pytest.approx(clf.classify(good).score, abs=2e-4)
    assert "text file" in rows[str(corrupt)]["error"]
    assert "HLS playlist" in rows[str(hls)]["error"]
    for bad in (corrupt, hls):
        assert set(rows[str(bad)]) == {"path", "error"}


def test_cli_exits_1_when_no_video_could_be_labelled(bundle, tmp_path) -> None:
    corrupt, _ = bad_inputs(tmp_path)
    out = tmp_path / "labels.jsonl"
    assert run(bundle, str(corrupt), "--out", str(out)) == 1
    assert [r["path"] for r in read_jsonl(out)] == [str(corrupt)]


def test_cli_csv_output_parses(bundle, motion, tmp_path) -> None:
    good = clip(motion, "static")
    corrupt, _ = bad_inputs(tmp_path)
    out = tmp_path / "labels.csv"
    assert run(bundle, str(good), str(corrupt), "--top-k", "3", "--out", str(out)) == 0
    with out.open(newline="") as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    assert set(rows) == {str(good), str(corrupt)}
    top = json.loads(rows[str(good)]["top_k"])
    assert len(top) == 3
    assert top[0]["label"] == rows[str(good)]["label"]
    assert 0.0 < float(rows[str(good)]["score"]) <= 1.0
    assert rows[str(good)]["error"] == ""
    assert rows[str(corrupt)]["label"] == ""
    assert "text file" in rows[str(corrupt)]["error"]


def test_cli_timeline(bundle, motion, tmp_path) -> None:
    out = tmp_path / "labels.jsonl"
    argv = [str(clip(motion, "growing")), "--timeline", "--window", "0.5", "--stride", "0.25"]
    assert run(bundle, *argv, "--out", str(out)) == 0
    (row,) = read_jsonl(out)
    assert [(w["start"], w["end"]) for w in row["timeline"]] == [
        (0.0, 0.5),
        (0.25, 0.75),
        (0.5, 1.0),
    ]
    assert all(w["label"] in CLASSES for w in row["timeline"])


def test_cli_refuses_a_stride_longer_than_the_window(bundle, motion, tmp_path, caplog) -> None:
    argv = [str(clip(motion)), "--timeline", "--window", "0.5", "--stride", "1"]
    assert run(bundle, *argv, "--out", str(tmp_path / "x.jsonl")) == 2
    assert "stride" in caplog.text
    assert not (tmp_path / "x.jsonl").exists()


def test_cli_resume_skips_done_rows(bundle, motion, tmp_path) -> None:
    first, second = clip(motion, "moving_left"), clip(motion, "moving_right")
    out = tmp_path / "labels.jsonl"
    assert run(bundle, str(first), "--out", str(out)) == 0
    before = out.read_text()
    assert run(bundle, str(first), str(second), "--out", str(out), "--resume") == 0
    text = out.read_text()
    assert text.startswith(before)
    assert [r["path"] for r in read_jsonl(out)] == [str(first), str(second)]
    assert run(bundle, str(first), str(second), "--out", str(out), "--resume") == 0
    assert out.read_text() == text


def test_cli_refuses_a_caption_bundle(tiny_bundle, motion, tmp_path, caplog) -> None:
    out = tmp_path / "labels.jsonl"
    with caplog.at_level(logging.ERROR):
        assert run(tiny_bundle, str(clip(motion)), "--out", str(out)) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors
    assert "not an activity bundle" in errors[-1]
    assert not out.exists()


def test_cli_evaluate_prints_json_and_plots(bundle, motion, trained, tmp_path, capsys) -> None:
    png = tmp_path / "confusion.png"
    argv = ["evaluate", "activity", "--bundle", str(bundle), "--data", str(motion / "test")]
    argv += ["--device", "cpu", "--workers", "0", "--cache-dir", str(trained["cache"])]
    assert main([*argv, "--plot", str(png)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert 0.0 <= printed["top1"] <= 1.0
    assert printed["videos"] == len(CLASSES)
    assert Path(printed["plot"]) == png
    with Image.open(png) as img:
        assert img.format == "PNG"


def test_cli_data_motion_writes_three_splits(tmp_path, capsys) -> None:
    out = tmp_path / "motion"
    argv = ["data", "motion", "--out", str(out), "--seed", "1", "--n-per-class", "1"]
    argv += ["--n-val-per-class", "1", "--n-test-per-class", "1", "--frames", "8", "--size", "64"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {"train", "val", "test"} <= set(printed)
    for split in ("train", "val", "test"):
        assert Path(printed[split]) == out / f"{split}.json"
        videos = sorted((out / split).rglob("*.mp4"))
        assert [v.parent.name for v in videos] == sorted(CLASSES)
        assert all(v.stat().st_size > 0 for v in videos)


def test_time_reversal_augmentation_swaps_pair_labels_and_flips_time() -> None:
    from types import SimpleNamespace

    from captioner.training.activity import ActivityTask, parse_pairs, reversal_map

    classes = ["left", "right", "still", "wave"]
    table = reversal_map(classes, [("left", "right"), ("still", "still")])
    assert table.tolist() == [1, 0, 2, -1]  # "wave" is not reversible: never flipped
    assert reversal_map(classes, []) is None
    with pytest.raises(ValueError, match="unknown classes"):
        reversal_map(classes, [("left", "up")])
    assert ("static", "static") in parse_pairs("motion+static")

    # Each clip's frames carry their time index, so a flip is visible in the batch.
    n, t = 64, 5
    feats = torch.arange(t, dtype=torch.float16).view(1, 1, t, 1, 1).expand(n, 1, t, 1, 2).clone()
    records = [SimpleNamespace(label=i % 4) for i in range(n)]
    train = SimpleNamespace(records=records, features=feats)
    task = ActivityTask(
        None, train, train, classes, torch.device("cpu"), 64, reverse_pairs=[("left", "right")]
    )
    ((batch, labels),) = list(task.train_batches(epoch=0))
    first = batch[:, 0, 0, 0]
    flipped = first == t - 1
    assert 0 < int(flipped.sum()) < n  # some clips reversed, not all
    original = task.labels[torch.randperm(n, generator=torch.Generator().manual_seed(0))]
    assert torch.equal(labels[flipped], table_swap(original[flipped]))
    assert torch.equal(labels[~flipped], original[~flipped])
    assert set(original[flipped].tolist()) <= {0, 1}


def table_swap(labels: torch.Tensor) -> torch.Tensor:
    return torch.where(labels == 0, 1, torch.where(labels == 1, 0, labels))


def test_cli_applies_the_classifiers_video_limits(clf, motion, tmp_path) -> None:
    """`captioner activity` decodes with the classifier's limits, as the API and service do."""
    import dataclasses

    from captioner.batch import label_videos

    strict = copy.copy(clf)
    strict.limits = dataclasses.replace(clf.limits, max_frames=5)  # the clips have 12 frames
    out = tmp_path / "labels.jsonl"
    good = clip(motion, "moving_left")
    assert label_videos([str(good)], out=out, model=strict, workers=0, progress=False) == 1
    (row,) = read_jsonl(out)
    assert set(row) == {"path", "error"}
    assert "frames" in row["error"]


def test_batch_timeline_matches_the_api_and_encodes_each_frame_once(
    clf, motion, tmp_path, monkeypatch
) -> None:
    from captioner.batch import label_videos

    good = clip(motion, "moving_up")
    expected = clf.classify(good, timeline=True, window=0.5, stride=0.1)
    encoded: list[int] = []
    real = clf.encode_frames
    monkeypatch.setattr(clf, "encode_frames", lambda f, *a: encoded.append(len(f)) or real(f, *a))
    out = tmp_path / "labels.jsonl"
    argv = {"timeline": True, "window": 0.5, "stride": 0.1, "workers": 0, "progress": False}
    assert label_videos([str(good)], out=out, model=clf, **argv) == 0
    (row,) = read_jsonl(out)
    assert row["timeline"] == expected.timeline
    assert row["label"] == expected.label
    # 6 windows and the whole clip, 16 samples each, yet only 12 distinct frames to encode.
    assert len(row["timeline"]) == 6
    assert encoded == [12]


def test_timeline_window_defaults_to_the_training_clip_length_and_warns_below(
    clf, motion, tmp_path, caplog
) -> None:
    import copy as copy_

    model = copy_.copy(clf)
    model.clip_seconds, model._warned_windows = {"min": 1.0, "median": 1.0}, set()
    assert model.timeline_window() == (1.0, 0.5)
    assert model.timeline_window(2.0) == (2.0, 1.0)
    assert not caplog.records
    good = clip(motion, "moving_left")  # 12 frames at 12 fps: one second
    result = model.classify(good, timeline=True)
    assert [(w["start"], w["end"]) for w in result.timeline] == [(0.0, 1.0)]
    caplog.set_level(logging.WARNING)
    model.timeline_window(0.5)
    model.timeline_window(0.5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "shorter than the 1 s clips" in warnings[0]


def test_trained_bundles_record_their_clip_length(bundle) -> None:
    sampling = read_manifest(bundle)["sampling"]
    assert sampling["clip_seconds"] == {"min": 1.0, "median": 1.0}  # 12 frames at 12 fps
