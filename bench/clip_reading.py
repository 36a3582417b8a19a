"""Clip reading: a label and a timeline against encoding, on 10 s and 60 s clips, side by side.

Clips of three kinds, 320x240 at 30 fps, 10 s and 60 s each, written once under bench/_work:

    mpeg4         MPEG-4 part 2 (mp4v), OpenCV's writer default of a keyframe every 12 frames
    mpeg4-gop250  the same with a keyframe every 250 frames (x264's default interval)
    vp9           VP9 in WebM, a keyframe every 12 frames (skipped if the writer lacks VP9)

Timed round robin over every clip and measure (the order alternating each round), best of
``--repeats``:

    label     ActivityClassifier.classify(path), describe on (the default) and off
    encode    the encoder alone on that label's 16 frames, already decoded
    read      prepare(path) alone: the decoding and resizing inside the label
    timeline  classify(path, timeline=True, window=2, stride=1), describe on and off

Printed, one JSON line per kind of clip: label / encode (target <= 1.5), the 60 s label over
the 10 s label (target <= 2), the timeline's seconds per window at 60 s over 10 s (linear in
windows: about 1), and what each read decodes: frames grabbed, seeks and the frames decoded
inside the seeks (counted from the keyframes before each seek's target).

    python bench/clip_reading.py [--repeats 3] [--kinds mpeg4,vp9] [--bundle DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator
from pathlib import Path

import _omp  # noqa: F401  (first: the OpenMP wait policy, before torch loads)
import cv2
import numpy as np
from _common import WORK, report

import captioner
from captioner.inference import encode_images
from captioner.video import decode as video_decode

KINDS = {  # name -> (fourcc, suffix, keyframe interval or None for the writer's default)
    "mpeg4": ("mp4v", "mp4", None),
    "mpeg4-gop250": ("mp4v", "mp4", 250),
    "vp9": ("VP90", "webm", None),
}
SECONDS = (10, 60)
FPS, W, H = 30, 320, 240
WINDOW, STRIDE = 2.0, 1.0


def make_clip(path: Path, seconds: int, fourcc: str, gop: int | None) -> bool:
    """A panning noise texture with a square crossing it; False if the writer lacks the codec."""
    params = [cv2.VIDEOWRITER_PROP_GOP_SIZE, gop] if gop else []
    tmp = path.with_name(f"partial-{path.name}")
    writer = cv2.VideoWriter(
        str(tmp), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), FPS, (W, H), params
    )
    if not writer.isOpened():
        return False
    background = np.random.default_rng(0).integers(60, 200, (H, W, 3), dtype=np.uint8)
    n = seconds * FPS
    for i in range(n):
        frame = np.roll(background, i, axis=1)
        x = int(20 + (W - 80) * i / n)
        frame[100:160, x : x + 40] = (30, 30, 220)
        writer.write(frame)
    writer.release()
    tmp.replace(path)
    return True


def clips(kinds: list[str]) -> dict[tuple[str, int], Path]:
    """(kind, seconds) -> a written clip, made once and reused."""
    WORK.mkdir(parents=True, exist_ok=True)
    out = {}
    for kind in kinds:
        fourcc, suffix, gop = KINDS[kind]
        for seconds in SECONDS:
            path = WORK / f"clip-reading-{kind}-{seconds}s-{W}x{H}.{suffix}"
            if not path.exists() and not make_clip(path, seconds, fourcc, gop):
                logging.warning("this OpenCV cannot write %s: %s skipped", fourcc, kind)
                break
            out[kind, seconds] = path
    return out


class DecodeCount:
    """Counts what reads decode: grabs, seeks, and frames decoded inside the seeks (OpenCV
    decodes from the keyframe at or before target - 16 up to the target)."""

    def __init__(self) -> None:
        self.grabs = self.seeks = self.in_seeks = 0
        self.keyframes: list[int] = []

    @contextlib.contextmanager
    def counting(self, path: Path) -> Iterator[DecodeCount]:
        self.grabs = self.seeks = self.in_seeks = 0
        self.keyframes = video_decode.scan_keyframes(path, 10**9, None, path.name)
        grab, seek = video_decode.Reader.grab, video_decode.Reader.seek

        def counted_grab(reader: video_decode.Reader) -> bool:
            self.grabs += 1
            return grab(reader)

        def counted_seek(reader: video_decode.Reader, index: int) -> None:
            self.seeks += 1
            k = bisect_right(self.keyframes, max(index - video_decode._SEEK_BACKOFF, 0))
            self.in_seeks += index - (self.keyframes[k - 1] if k else 0)
            seek(reader, index)

        video_decode.Reader.grab = counted_grab  # type: ignore[method-assign]
        video_decode.Reader.seek = counted_seek  # type: ignore[method-assign]
        try:
            yield self
        finally:
            video_decode.Reader.grab, video_decode.Reader.seek = grab, seek  # type: ignore[method-assign]

    def figures(self) -> dict:
        return {
            "grabbed": self.grabs,
            "seeks": self.seeks,
            "decoded_in_seeks": self.in_seeks,
            "decoded": self.grabs + self.in_seeks,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated: " + ", ".join(KINDS))
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        ap.error(f"unknown kinds {unknown}; choose from {sorted(KINDS)}")

    paths = clips(kinds)
    clf = captioner.load(
        args.bundle or captioner.inference.default_bundle_dir("activity"), device=args.device
    )
    frames = {key: clf.prepare(p).clip_frames().contiguous() for key, p in paths.items()}
    windows = {
        key: len(clf.prepare(p, True, WINDOW, STRIDE).windows or []) for key, p in paths.items()
    }

    def with_describe(on: bool, fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            clf.describe = on
            try:
                return fn()
            finally:
                clf.describe = True

        return run

    measures: dict[str, Callable[[Path, tuple], object]] = {
        "label_s": lambda p, k: with_describe(True, lambda: clf.classify(p))(),
        "label_plain_s": lambda p, k: with_describe(False, lambda: clf.classify(p))(),
        "encode_s": lambda p, k: encode_images(clf.encoder, frames[k], clf.device),
        "read_s": lambda p, k: with_describe(True, lambda: clf.prepare(p))(),
        "read_plain_s": lambda p, k: with_describe(False, lambda: clf.prepare(p))(),
        "timeline_s": lambda p, k: with_describe(
            True, lambda: clf.classify(p, timeline=True, window=WINDOW, stride=STRIDE)
        )(),
        "timeline_plain_s": lambda p, k: with_describe(
            False, lambda: clf.classify(p, timeline=True, window=WINDOW, stride=STRIDE)
        )(),
        "timeline_read_s": lambda p, k: with_describe(
            False, lambda: clf.prepare(p, True, WINDOW, STRIDE)
        )(),
    }
    jobs = [(key, name) for key in paths for name in measures]
    best = {job: float("inf") for job in jobs}
    for key, name in jobs:  # warm-up, not timed
        measures[name](paths[key], key)
    for r in range(args.repeats):
        for key, name in jobs if r % 2 == 0 else reversed(jobs):
            t0 = time.perf_counter()
            measures[name](paths[key], key)
            best[key, name] = min(best[key, name], time.perf_counter() - t0)

    counter = DecodeCount()
    decoded = {}
    for key, path in paths.items():
        for what, fn in (
            ("label", with_describe(True, lambda p=path: clf.prepare(p))),
            ("label_plain", with_describe(False, lambda p=path: clf.prepare(p))),
            ("timeline", with_describe(False, lambda p=path: clf.prepare(p, True, WINDOW, STRIDE))),
        ):
            with counter.counting(path):
                fn()
            decoded[key, what] = counter.figures()

    for kind in kinds:
        if (kind, SECONDS[0]) not in paths:
            continue
        short, long = (kind, SECONDS[0]), (kind, SECONDS[1])
        per_clip = {}
        for key in (short, long):
            t = {name: best[key, name] for name in measures}
            per_clip[f"{key[1]}s"] = {
                **{name: round(v, 4) for name, v in t.items()},
                "windows": windows[key],
                "label_over_encode": round(t["label_s"] / t["encode_s"], 2),
                "label_plain_over_encode": round(t["label_plain_s"] / t["encode_s"], 2),
                "decoded_label": decoded[key, "label"],
                "decoded_label_plain": decoded[key, "label_plain"],
                "decoded_timeline": decoded[key, "timeline"],
            }

        def per_window(key: tuple, name: str) -> float:
            return best[key, name] / windows[key]

        report(
            "clip_reading",
            {
                "kind": kind,
                "clip": f"{W}x{H}, {FPS} fps, {KINDS[kind][0]}",
                "device": str(clf.device),
                **per_clip,
                "label_60s_over_10s": round(best[long, "label_s"] / best[short, "label_s"], 2),
                "label_plain_60s_over_10s": round(
                    best[long, "label_plain_s"] / best[short, "label_plain_s"], 2
                ),
                "timeline_per_window_60s_over_10s": round(
                    per_window(long, "timeline_s") / per_window(short, "timeline_s"), 2
                ),
                "timeline_plain_per_window_60s_over_10s": round(
                    per_window(long, "timeline_plain_s") / per_window(short, "timeline_plain_s"), 2
                ),
                "targets": "label/encode <= 1.5; 60s/10s label <= 2; timeline per window ~1",
            },
        )


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
