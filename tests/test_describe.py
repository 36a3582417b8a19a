"""The clip description through the shipped activity pipeline, on rendered real-photo clips
whose motion is known: the camera's direction, what moves, cuts, and the timeline's words."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

import captioner
from captioner.data.motion import write_video
from captioner.inference.describe import motion_pairs
from captioner.video.geometry import CAMERA_MOTIONS

SIZE, FPS = 160, 12


def pan(photo: np.ndarray, frames: int, step: float) -> np.ndarray:
    """A view of ``photo`` whose content moves ``step`` pixels right per frame (a pan left)."""
    big = cv2.resize(photo, (3 * SIZE, 3 * SIZE), interpolation=cv2.INTER_AREA)
    out = []
    for t in range(frames):
        x = SIZE - round(step * t)
        out.append(big[SIZE : 2 * SIZE, x : x + SIZE])
    return np.stack(out)


@pytest.fixture(scope="module")
def clf():
    return captioner.load(captioner.default_bundle_dir("activity"), "cpu")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("describe")
    coffee, astronaut = skdata.coffee(), skdata.astronaut()
    made = {
        "pan_left": pan(astronaut, 24, 3.0),  # content moves right
        "pan_right": pan(astronaut, 24, -3.0),
        "still": np.repeat(pan(coffee, 1, 0.0), 24, axis=0),
        "cut": np.concatenate([pan(astronaut, 12, 3.0), pan(coffee, 12, 3.0)]),
    }
    paths = {}
    for name, frames in made.items():
        paths[name] = root / f"{name}.mp4"
        write_video(paths[name], np.ascontiguousarray(frames), FPS)
    return paths


def test_pans_are_said_the_right_way_round(clf, clips) -> None:
    left = clf.classify(clips["pan_left"]).description
    right = clf.classify(clips["pan_right"]).description
    assert left["shots"][0]["camera"]["label"] == "pan_left"
    assert right["shots"][0]["camera"]["label"] == "pan_right"
    assert "pans left" in left["sentence"]
    assert "pans right" in right["sentence"]
    assert left["cuts"] == []


def test_a_still_clip_claims_no_motion(clf, clips) -> None:
    d = clf.classify(clips["still"]).description
    assert d["shots"][0]["camera"]["label"] == "static"
    assert d["sentence"] == "The camera is still."


def test_a_cut_is_found_and_splits_the_clip_into_shots(clf, clips) -> None:
    d = clf.classify(clips["cut"]).description
    assert len(d["cuts"]) == 1
    assert abs(d["cuts"][0] - 12 / FPS) < 0.2
    assert len(d["shots"]) == 2
    assert "Shot change at 1.0 s." in d["sentence"]


def test_timeline_windows_carry_their_readings_and_sentence(clf, clips) -> None:
    res = clf.classify(clips["pan_left"], timeline=True, window=1.0, stride=0.5)
    assert res.timeline
    for w in res.timeline:
        assert w["camera"]["label"] in CAMERA_MOTIONS
        assert w["sentence"].endswith(".")
    record = res.to_record()
    assert record["description"]["sentence"] == res.description["sentence"]
    assert "sentence" in record["timeline"][0]


def test_describe_off_gives_the_label_alone(clips) -> None:
    clf = captioner.load(captioner.default_bundle_dir("activity"), "cpu")
    clf.describe = False
    res = clf.classify(clips["pan_left"])
    assert res.description is None
    assert "description" not in res.to_record()


def test_motion_pairs_stay_inside_the_clip() -> None:
    firsts, seconds = motion_pairs([0, 10, 23], fps=12.0, frame_count=24)
    assert firsts == [0, 10, 22]
    assert seconds == [1, 11, 23]
    assert all(b > a for a, b in zip(firsts, seconds, strict=True))
    one = motion_pairs([0], fps=12.0, frame_count=1)
    assert one == ([0], [0])


def test_the_shipped_motion_model_reads_the_motion_and_says_so(clf, clips) -> None:
    assert clf.motion is not None  # weights/motion-default is the default
    d = clf.classify(clips["pan_left"]).description
    assert d["source"] == clf.motion.name == "motion-default"
    timeline = clf.classify(clips["pan_left"], timeline=True, window=1.0, stride=0.5)
    assert timeline.description["source"] == "motion-default"
    assert all(w["camera"]["label"] == "pan_left" for w in timeline.timeline)


def test_the_command_reads_motion_with_the_model_or_the_rule(clips, tmp_path, caplog) -> None:
    import json

    from captioner.cli import main

    sources = {}
    for motion in ("default", "geometry"):
        out = tmp_path / f"{motion}.jsonl"
        argv = ["activity", str(clips["pan_right"]), "--motion", motion, "--out", str(out)]
        assert main([*argv, "--workers", "0", "-q"]) == 0
        (record,) = [json.loads(line) for line in out.read_text().splitlines()]
        sources[motion] = record["description"]["source"]
        assert "pans right" in record["description"]["sentence"], record["description"]
    assert sources == {"default": "motion-default", "geometry": "geometry"}
    assert main(["activity", str(clips["pan_right"]), "--motion", str(tmp_path), "-q"]) == 2
    assert "no bundle" in caplog.text


def test_without_a_motion_model_the_geometry_rule_reads_it(clips) -> None:
    bundle = captioner.default_bundle_dir("activity")
    geometry = captioner.ActivityClassifier.from_bundle(bundle, "cpu", motion=None)
    assert geometry.motion is None
    d = geometry.classify(clips["pan_right"]).description
    assert d["source"] == "geometry"
    assert d["shots"][0]["camera"]["label"] == "pan_right"
    assert "pans right" in d["sentence"]
