"""What the clip description costs: labelling a clip with and without it, side by side.

A 10 s clip (a camera panning over scikit-image's astronaut, 24 fps, 320 px) and the shipped
2 s example clip are labelled by the shipped activity model, timeline on (2 s windows every
1 s) and off, with ``describe`` on and off, interleaved, best of ``--repeats``
(``interleaved_best``). The description adds the motion of every sampled frame (against its
partner 0.1 s later, decoded in the same pass), each window's consecutive pairs, the cuts and
one encoder pass per moving region. Target (issue 17): a 10 s clip with a timeline <= 2x the
cost without the description.

    python bench/describe_cost.py [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _omp  # noqa: F401  (first: the OpenMP wait policy, before torch loads)
import cv2
import numpy as np
from _common import ROOT, interleaved_best, report
from skimage import data as skdata

import captioner
from captioner.data.motion import write_video


def pan_clip(path: Path, seconds: float, fps: int = 24, size: int = 320) -> Path:
    """A camera panning right over the astronaut, ``seconds`` long."""
    frames = int(seconds * fps)
    big = cv2.resize(skdata.astronaut(), (2 * size + frames, 2 * size))
    out = [big[size // 2 : size // 2 + size, t : t + size] for t in range(frames)]
    write_video(path, np.ascontiguousarray(np.stack(out)), fps)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    clf = captioner.load(captioner.default_bundle_dir("activity"), args.device)
    with tempfile.TemporaryDirectory() as tmp:
        clips = {
            "10s_pan": pan_clip(Path(tmp) / "pan.mp4", 10.0),
            "2s_example": ROOT / "examples" / "clip-moving_left.webm",
        }
        figures = {}
        for name, clip in clips.items():
            for timeline in (False, True):

                def run(_batch: object, describe: bool, clip=clip, timeline=timeline):
                    clf.describe = describe
                    w, c = time.perf_counter(), time.process_time()
                    clf.classify(clip, timeline=timeline, window=2.0, stride=1.0)
                    return time.perf_counter() - w, time.process_time() - c

                best = interleaved_best([None], run, args.repeats)
                (on_w, on_c), (off_w, off_c) = best[True], best[False]
                figures[f"{name}{'_timeline' if timeline else ''}"] = {
                    "plain_ms": round(1000 * off_w, 1),
                    "described_ms": round(1000 * on_w, 1),
                    "ratio_wall": round(on_w / off_w, 2),
                    "ratio_cpu": round(on_c / off_c, 2),
                }
    report("describe_cost", figures)


if __name__ == "__main__":
    main()
