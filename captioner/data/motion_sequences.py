"""Long synthetic videos made of several motion clips in a row, with the true label of every
stretch: the ground truth for judging activity timelines (labels over time).

Each segment is one clip of the motion generator (its own background and objects, as after a
cut in a real video); the segments of a video have different classes, drawn from the video's
own RNG, so the same seed gives the same files.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import numpy as np

from captioner.data.motion import CLASSES, render_clip, sample_params, write_video
from captioner.data.synth import check_count, seeded_rng, write_json
from captioner.progress import progress_bar

SEQUENCES_FILE = "sequences.json"


def sequence_segments(rng: np.random.Generator, segments: int) -> list[str]:
    """``segments`` class names, no class twice in a row."""
    names: list[str] = []
    for _ in range(segments):
        choices = [c for c in CLASSES if not names or c != names[-1]]
        names.append(choices[int(rng.integers(len(choices)))])
    return names


def generate_motion_sequences(
    out_dir: str | os.PathLike,
    seed: int,
    count: int,
    segments: int = 4,
    frames: int = 24,
    fps: int = 12,
    size: int = 128,
    progress: bool = True,
) -> pathlib.Path:
    """Write ``count`` videos of ``segments`` clips each, and ``sequences.json`` with each
    video's ``segments: [{start, end, label}]`` in seconds. Returns the JSON's path."""
    count = check_count("count", count)
    segments = check_count("segments", segments)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    videos: list[dict[str, Any]] = []
    for index in progress_bar(range(count), desc="sequences", unit="video", enabled=progress):
        rng = seeded_rng(seed, "sequence", index)
        labels = sequence_segments(rng, segments)
        parts = []
        for cls in labels:
            params = sample_params(rng, cls, frames)
            parts.append(render_clip(params, rng, size))
        name = f"seq-{index:05d}.mp4"
        write_video(out / name, np.concatenate(parts), fps)
        seconds = frames / fps
        videos.append(
            {
                "file": name,
                "segments": [
                    {"start": round(k * seconds, 4), "end": round((k + 1) * seconds, 4), "label": c}
                    for k, c in enumerate(labels)
                ],
            }
        )
    info = {"seed": seed, "frames_per_segment": frames, "fps": fps, "size": size}
    path = out / SEQUENCES_FILE
    write_json(path, {"info": info, "videos": videos})
    return path


def window_truth(segments: list[dict[str, Any]], start: float, end: float) -> tuple[str, float]:
    """The label covering most of ``[start, end]`` and the fraction of the window it covers."""
    cover: dict[str, float] = {}
    for seg in segments:
        overlap = min(end, seg["end"]) - max(start, seg["start"])
        if overlap > 0:
            cover[seg["label"]] = cover.get(seg["label"], 0.0) + overlap
    label = max(cover, key=cover.__getitem__)
    return label, cover[label] / max(end - start, 1e-9)
