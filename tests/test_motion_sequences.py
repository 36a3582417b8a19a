"""Long synthetic videos for timelines: segments, frame counts and window ground truth."""

from __future__ import annotations

import itertools
import json

import cv2
import pytest

from captioner.data.motion import CLASSES
from captioner.data.motion_sequences import generate_motion_sequences, window_truth


def test_sequences_have_their_segments_and_frames(tmp_path) -> None:
    path = generate_motion_sequences(
        tmp_path, seed=3, count=2, segments=3, frames=6, fps=6, size=32, progress=False
    )
    videos = json.loads(path.read_text())["videos"]
    assert [v["file"] for v in videos] == ["seq-00000.mp4", "seq-00001.mp4"]
    for video in videos:
        labels = [s["label"] for s in video["segments"]]
        assert all(label in CLASSES for label in labels)
        assert all(a != b for a, b in itertools.pairwise(labels))
        assert [(s["start"], s["end"]) for s in video["segments"]] == [(0, 1), (1, 2), (2, 3)]
        cap = cv2.VideoCapture(str(tmp_path / video["file"]))
        frames = 0
        while cap.grab():
            frames += 1
        cap.release()
        assert frames == 18
    again = generate_motion_sequences(
        tmp_path / "again", seed=3, count=2, segments=3, frames=6, fps=6, size=32, progress=False
    )
    assert json.loads(again.read_text())["videos"] == videos


def test_window_truth_takes_the_label_covering_most() -> None:
    segments = [
        {"start": 0.0, "end": 2.0, "label": "growing"},
        {"start": 2.0, "end": 4.0, "label": "static"},
    ]
    assert window_truth(segments, 0.5, 1.5) == ("growing", 1.0)
    assert window_truth(segments, 1.5, 3.5) == ("static", pytest.approx(0.75))
