"""Time per image of captioning with the decode-time grounding against without it.

Both sides caption the same batches of real photographs (the example photos and, when
scikit-image is installed, its photographs) and generated scenes, already decoded into tensors,
with the same model in the same process; the "without" side sets ``grounding = None`` (the
decoder's first caption, as before issue 16). Each batch runs both ways back to back, in
alternating order, and keeps its best of ``--repeats`` per side. Target (issue 16): ratio <= 1.5.

    python bench/grounding_overhead.py [--scenes 16] [--batch-size 4] [--repeats 3] [--device auto]
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import ROOT, interleaved_best, report, scene_images

import captioner

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera")


def photos() -> list:
    """The example photographs, plus scikit-image's where it is installed (PIL images/paths)."""
    found: list = sorted((ROOT / "examples").glob("photo-*.jpg"))
    try:
        from PIL import Image
        from skimage import data
    except ImportError:
        return found
    for name in SKIMAGE_PHOTOS:
        array = getattr(data, name)()
        found.append(Image.fromarray(array).convert("RGB"))
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    cap = captioner.load("caption", device=args.device)
    grounding = cap.grounding
    if grounding is None or cap.head is None:
        raise SystemExit("the default bundle should ground its captions (an ImageNet head)")
    sources = photos() + sorted(scene_images(args.scenes).glob("*.jpg"))[: args.scenes]
    images = torch.stack([cap.load_image(s) for s in sources])
    batches = [images[i : i + args.batch_size] for i in range(0, len(images), args.batch_size)]

    def timed(batch: object, grounded: bool) -> tuple[float, float]:
        """-> (wall, CPU) seconds of captioning one batch."""
        cap.grounding = grounding if grounded else None
        t0, c0 = time.perf_counter(), time.process_time()
        cap.caption_tensors(batch)
        if cap.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, time.process_time() - c0

    totals = interleaved_best(batches, timed, args.repeats)
    cap.grounding = grounding
    (on, cpu_on), (off, cpu_off) = totals[True], totals[False]
    report(
        "grounding_overhead",
        {
            "images": len(images),
            "batch_size": args.batch_size,
            "device": cap.device.type,
            "ms_per_image_grounded": round(1000 * on / len(images), 2),
            "ms_per_image_plain": round(1000 * off / len(images), 2),
            "ratio": round(on / off, 3),
            "cpu_ms_per_image_grounded": round(1000 * cpu_on / len(images), 2),
            "cpu_ms_per_image_plain": round(1000 * cpu_off / len(images), 2),
            "cpu_ratio": round(cpu_on / cpu_off, 3),
        },
    )


if __name__ == "__main__":
    main()
