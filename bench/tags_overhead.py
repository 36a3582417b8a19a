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

import _omp  # noqa: F401  (first: the OpenMP wait policy, before torch loads)
import torch
from _common import ROOT, caption_overhead, report, scene_images

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

    def switch(tags: bool) -> None:
        cap.head, cap.domain = (head, domain) if tags else (None, None)

    figures = caption_overhead(
        cap, images, args.batch_size, args.repeats, switch, on="with_tags", off="without"
    )
    report("tags_overhead", figures)


if __name__ == "__main__":
    main()
