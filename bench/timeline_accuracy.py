"""Activity timelines on long videos made of several motions in a row.

Generates videos of 4 synthetic motion clips each (2 s per clip, a different class each time),
labels them with ``ActivityClassifier.classify(..., timeline=True)`` at several window lengths
and reports, per window length, the accuracy of windows that lie inside one segment ("pure")
and of all windows against the label covering most of each window.

    python bench/timeline_accuracy.py [--videos 30] [--bundle weights/activity-default]
"""

from __future__ import annotations

import argparse
import json

import _omp  # noqa: F401  (first: the OpenMP wait policy, before torch loads)
from _common import WORK, report

import captioner
from captioner.data.motion_sequences import generate_motion_sequences, window_truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--videos", type=int, default=30)
    ap.add_argument("--seed", type=int, default=31)
    ap.add_argument("--windows", default="1.0,1.5,2.0")
    ap.add_argument("--stride", type=float, default=0.5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    out = WORK / f"sequences-{args.seed}-{args.videos}"
    index = out / "sequences.json"
    if not index.is_file():
        generate_motion_sequences(out, args.seed, args.videos, progress=False)
    videos = json.loads(index.read_text())["videos"]
    clf = captioner.load(args.bundle or captioner.default_bundle_dir("activity"), args.device)
    results = {}
    for window in (float(w) for w in args.windows.split(",")):
        pure = [0, 0]
        every = [0, 0]
        for video in videos:
            timeline = clf.timeline(out / video["file"], window, args.stride)
            for w in timeline:
                truth, share = window_truth(video["segments"], w["start"], w["end"])
                hit = int(w["label"] == truth)
                every[0] += hit
                every[1] += 1
                if share >= 0.999:
                    pure[0] += hit
                    pure[1] += 1
        results[f"window_{window:g}s"] = {
            "pure_windows": pure[1],
            "pure_accuracy": round(pure[0] / max(pure[1], 1), 3),
            "all_windows": every[1],
            "all_accuracy": round(every[0] / max(every[1], 1), 3),
        }
    report(
        "timeline_accuracy",
        {"videos": len(videos), "segments_per_video": 4, "stride_s": args.stride, **results},
    )


if __name__ == "__main__":
    main()
