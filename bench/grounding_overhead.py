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

import _omp  # noqa: F401  (first: the OpenMP wait policy, before torch loads)
import torch
from _common import ROOT, caption_overhead, report, scene_images

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

    def switch(grounded: bool) -> None:
        cap.grounding = grounding if grounded else None

    figures = caption_overhead(
        cap, images, args.batch_size, args.repeats, switch, on="grounded", off="plain"
    )
    report("grounding_overhead", figures)


if __name__ == "__main__":
    main()
