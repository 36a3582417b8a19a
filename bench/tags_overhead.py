"""Time per image of captioning with tags and the out-of-domain check against without them.

Both sides caption the same batch of images (generated scenes plus the example photograph),
already decoded into tensors, with the same model in the same process; the "without" side
has the ImageNet head and the domain statistics switched off. Each batch runs both ways back
to back, in alternating order, and keeps its best of ``--repeats`` per side, so that other load
on the machine hits both alike. Target: ratio <= 1.10.

    python bench/tags_overhead.py [--n 64] [--batch-size 16] [--repeats 5] [--device auto]
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import ROOT, interleaved_best, report, scene_images

import captioner


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    cap = captioner.load(device=args.device)
    head, domain = cap.head, cap.domain
    if head is None or domain is None:
        raise SystemExit("the default bundle should have an ImageNet head and a calibration")
    files = sorted(scene_images(args.n).glob("*.jpg"))[: args.n - 1]
    files.append(ROOT / "examples" / "photo-chelsea.jpg")
    images = torch.stack([cap.load_image(f) for f in files])

    batches = [images[i : i + args.batch_size] for i in range(0, len(images), args.batch_size)]

    def timed(batch: torch.Tensor, tags: bool) -> tuple[float, float]:
        """-> (wall, CPU) seconds of captioning one batch."""
        cap.head, cap.domain = (head, domain) if tags else (None, None)
        t0, c0 = time.perf_counter(), time.process_time()
        cap.caption_tensors(batch)
        if cap.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, time.process_time() - c0

    totals = interleaved_best(batches, timed, args.repeats)
    cap.head, cap.domain = head, domain
    (on, cpu_on), (off, cpu_off) = totals[True], totals[False]
    report(
        "tags_overhead",
        {
            "images": len(images),
            "batch_size": args.batch_size,
            "device": cap.device.type,
            "ms_per_image_with_tags": round(1000 * on / len(images), 2),
            "ms_per_image_without": round(1000 * off / len(images), 2),
            "ratio": round(on / off, 3),
            "cpu_ms_per_image_with_tags": round(1000 * cpu_on / len(images), 2),
            "cpu_ms_per_image_without": round(1000 * cpu_off / len(images), 2),
            "cpu_ratio": round(cpu_on / cpu_off, 3),
        },
    )


if __name__ == "__main__":
    main()
