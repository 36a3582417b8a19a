"""Activity: labelling a 10 s, 30 fps, 640x360 clip from 16 frames against encoding 16 frames.

(1) `ActivityClassifier.classify(path)` end to end (open, decode sequentially, resize, encode,
LSTM) against the encoder alone on 16 already-decoded frames: target ratio <= 1.5.
(2) Decoded frames per second: reading the 16 sampled frames sequentially (grab every frame,
retrieve the wanted ones: exact) against seeking to each (fast but may land off-frame).

    python bench/activity_clip.py [--bundle weights/activity-default]
"""

from __future__ import annotations

import argparse

import _omp  # noqa: F401  (first: the OpenMP wait policy, before torch loads)
import cv2
import numpy as np
import torch
from _common import WORK, best_of, report

import captioner
from captioner.video import read_frames, read_frames_seek, uniform_indices


def make_clip(path, seconds: int = 10, fps: int = 30, w: int = 640, h: int = 360) -> None:
    """A textured background with a square moving left to right."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    rng = np.random.default_rng(0)
    background = rng.integers(60, 200, (h, w, 3), dtype=np.uint8)
    for i in range(seconds * fps):
        frame = background.copy()
        x = int(40 + (w - 160) * i / (seconds * fps))
        frame[140:220, x : x + 80] = (30, 30, 220)
        writer.write(frame)
    writer.release()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    clip = WORK / "clip-10s-30fps-640x360.mp4"
    if not clip.exists():
        make_clip(clip)
    clf = captioner.load(
        args.bundle or captioner.inference.default_bundle_dir("activity"), device=args.device
    )
    n = clf.num_frames
    cap = cv2.VideoCapture(str(clip))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    indices = uniform_indices(total, n)
    frames, _ = read_frames(clip, indices, clf.size)
    tensor = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()

    def encode_only():
        captioner.inference.encode_images(clf.encoder, tensor, clf.device)

    def end_to_end():
        clf.classify(clip)

    end_to_end(), encode_only()  # warm-up
    t_enc = best_of(encode_only, args.repeats)
    t_all = best_of(end_to_end, args.repeats)
    t_seq = best_of(lambda: read_frames(clip, indices, clf.size), args.repeats)
    t_seek = best_of(lambda: read_frames_seek(clip, indices, clf.size), args.repeats)
    seek_frames, _ = read_frames_seek(clip, indices, clf.size)
    exact = int(sum(np.array_equal(a, b) for a, b in zip(frames, seek_frames, strict=True)))
    report(
        "activity_clip",
        {
            "clip": "10 s, 30 fps, 640x360 mp4v",
            "frames_sampled": n,
            "device": str(clf.device),
            "label": clf.classify(clip).label,
            "end_to_end_s": round(t_all, 3),
            "encoder_only_s": round(t_enc, 3),
            "ratio": round(t_all / t_enc, 2),
            "target": "<= 1.5",
            "sequential_sampled_frames_per_s": round(n / t_seq, 1),
            "seek_sampled_frames_per_s": round(n / t_seek, 1),
            "seek_frames_identical_to_sequential": f"{exact}/{n}",
        },
    )


if __name__ == "__main__":
    main()
