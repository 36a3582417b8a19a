"""The motion stream's cost: motion features of a 16-frame clip against encoding its frames.

Each clip is a camera moving over one of the example photographs (a steady pan and zoom with a
little shake), 16 frames, rendered at each size asked for. The motion side computes
:func:`captioner.video.clip_motion` on the clip (15 pairs). The encode side runs the shipped
activity bundle's encoder on the same 16 frames: in torch eager, 4 frames a pass (the CPU
chunk), at every size; and, at the bundle's own input size, also through the pipeline's
``encode_images`` (whatever runtime it picks there, e.g. ONNX Runtime, whose graph is fixed to
that size). Every clip runs each side back to back, in alternating order, best of ``--repeats``
(``interleaved_best``). Target (issue 17): motion / encode <= 0.30 at 224 px.

    python bench/motion_cost.py [--sizes 224,128] [--frames 16] [--repeats 5] [--device auto]
"""

from __future__ import annotations

import argparse
import math
import time

import _omp  # noqa: F401  (first: the OpenMP wait policy, before torch loads)
import cv2
import numpy as np
import torch
from _common import ROOT, interleaved_best, report

import captioner
from captioner.inference import encode_images
from captioner.video import clip_motion

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def render_clip(photo: np.ndarray, frames: int, size: int, seed: int) -> np.ndarray:
    """(frames, size, size, 3) uint8 RGB: a view of ``photo`` panning right and zooming in,
    with a small random shake, made from one centred square crop of the photo."""
    side = min(photo.shape[:2])
    y0, x0 = (photo.shape[0] - side) // 2, (photo.shape[1] - side) // 2
    square = cv2.resize(photo[y0 : y0 + side, x0 : x0 + side], (2 * size, 2 * size))
    rng = np.random.default_rng(seed)
    out = []
    for t in range(frames):
        shake = rng.normal(0, 0.6, 2)
        m = cv2.getRotationMatrix2D((size, size), 0.2 * t, 1.0 + 0.01 * t)
        m[:, 2] -= (size / 2 - 3.0 * t + shake[0], size / 2 + shake[1])
        out.append(cv2.warpAffine(square, m, (size, size), borderMode=cv2.BORDER_REFLECT))
    return np.stack(out)


def eager_encode(encoder, images: torch.Tensor, device: torch.device, chunk: int = 4) -> None:
    """The encoder's own forward in torch eager, ``chunk`` frames a pass, as the pipeline runs
    it on the CPU without ONNX Runtime (normalise, channels-last, fp16 autocast on CUDA)."""
    for start in range(0, images.size(0), chunk):
        x = images[start : start + chunk].to(device)
        x = encoder.preprocess.normalize(x).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda"):
            encoder(x)


def compare(clips: list[np.ndarray], encode, device: torch.device, args) -> tuple:
    """(ms per clip of motion, ms per clip of encoding, wall ratio, CPU ratio) over ``clips``."""

    def run(clip: np.ndarray, motion: bool) -> tuple[float, float]:
        tensor = torch.from_numpy(clip).permute(0, 3, 1, 2).contiguous()
        t0, c0 = time.perf_counter(), time.process_time()
        if motion:
            clip_motion(clip)
        else:
            encode(tensor)
            if device.type == "cuda":
                torch.cuda.synchronize()
        return time.perf_counter() - t0, time.process_time() - c0

    with torch.inference_mode():
        totals = interleaved_best(clips, run, args.repeats)
    (wall_m, cpu_m), (wall_e, cpu_e) = totals[True], totals[False]
    n = len(clips)
    cpu_ratio = round(cpu_m / cpu_e, 3) if cpu_e > 0 else math.nan
    return (
        round(1000 * wall_m / n, 2),
        round(1000 * wall_e / n, 2),
        round(wall_m / wall_e, 3),
        cpu_ratio,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="224,128", help="frame sizes, comma-separated")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    clf = captioner.load(captioner.inference.default_bundle_dir("activity"), device=args.device)
    photos = [
        cv2.cvtColor(cv2.imread(str(ROOT / "examples" / f"photo-{n}.jpg")), cv2.COLOR_BGR2RGB)
        for n in PHOTOS
    ]
    figures: dict = {"frames": args.frames, "clips": len(photos), "device": clf.device.type}
    figures["bundle_size"] = clf.size
    for size in (int(s) for s in args.sizes.split(",")):
        clips = [render_clip(p, args.frames, size, seed) for seed, p in enumerate(photos)]
        row = {}
        ways = {"eager": lambda x: eager_encode(clf.encoder, x, clf.device)}
        if size == clf.size:
            ways["pipeline"] = lambda x: encode_images(clf.encoder, x, clf.device)
        for way, encode in ways.items():
            ms_motion, ms_encode, ratio, cpu_ratio = compare(clips, encode, clf.device, args)
            row[f"ms_per_clip_encode_{way}"] = ms_encode
            row[f"ratio_{way}"] = ratio
            row[f"cpu_ratio_{way}"] = cpu_ratio
            row["ms_per_clip_motion"] = min(ms_motion, row.get("ms_per_clip_motion", ms_motion))
        row["ms_per_pair_motion"] = round(row["ms_per_clip_motion"] / (args.frames - 1), 2)
        row["ms_per_frame_encode_eager"] = round(row["ms_per_clip_encode_eager"] / args.frames, 2)
        figures[f"{size}px"] = row
    figures["target"] = "ratio_eager <= 0.30 at 224 px"
    report("motion_cost", figures)


if __name__ == "__main__":
    main()
