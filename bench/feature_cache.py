"""(c) A caption-training epoch over the feature cache against encoding the images every step.

Both sides run the same decoder training steps on the same (image, caption) batches; the
uncached side decodes and encodes each batch's images with the frozen encoder first, as a
training loop without a cache must. Prints pairs/s for both and the ratio (target >= 10x).

    python bench/feature_cache.py [--images 256] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _omp  # noqa: F401  (first: the OpenMP wait policy, before torch loads)
import torch
from _common import report, scene_images

import captioner
from captioner.data.features import build_feature_cache
from captioner.data.images import ImageFiles, collate
from captioner.models.caption import CaptionDecoder
from captioner.training.caption import pad_captions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=12, help="training steps timed on each side")
    args = ap.parse_args()

    cap = captioner.load(device="cpu")
    folder = scene_images(args.images)
    files = sorted(p.name for p in folder.glob("*.jpg"))[: args.images]
    g = torch.Generator().manual_seed(0)
    captions = [torch.randint(4, len(cap.vocab), (12,), generator=g).tolist() for _ in files]
    pairs = [(i, [1, *c, 2]) for i, c in enumerate(captions)]

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cache = build_feature_cache(
            cap.encode,
            ImageFiles([folder / f for f in files], cap.preprocess),
            files,
            Path(tmp),
            item_shape=(49, cap.encoder.feature_dim),
            meta={"encoder": cap.encoder.name},
            progress=False,
        )
        t_build = time.perf_counter() - t0
        feats = cache.load_all(files)

    dataset = ImageFiles([folder / f for f in files], cap.preprocess)
    decoder = CaptionDecoder(cap.decoder.config).train()
    opt = torch.optim.AdamW(decoder.parameters(), lr=1e-4)

    def step(x: torch.Tensor, caps: torch.Tensor) -> None:
        loss = decoder(x, caps).loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    def batches():
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(1)).tolist()
        for s in range(0, args.steps * args.batch_size, args.batch_size):
            chunk = [pairs[order[(s + j) % len(pairs)]] for j in range(args.batch_size)]
            yield [r for r, _ in chunk], pad_captions([c for _, c in chunk])

    def cached() -> None:
        for rows, caps in batches():
            step(feats[rows].float(), caps)

    def uncached() -> None:
        for rows, caps in batches():
            images = collate([dataset[r] for r in rows])["image"]
            step(cap.encode(images).float().clone(), caps)  # a normal tensor for autograd

    cached()  # warm-up
    t0 = time.perf_counter()
    cached()
    t_cached = time.perf_counter() - t0
    t0 = time.perf_counter()
    uncached()
    t_uncached = time.perf_counter() - t0
    n = args.steps * args.batch_size
    report(
        "feature_cache",
        {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "cached_pairs_per_s": round(n / t_cached, 1),
            "encode_each_step_pairs_per_s": round(n / t_uncached, 1),
            "ratio": round(t_uncached / t_cached, 2),
            "target": ">= 10",
            "cache_build_seconds_for_images": [round(t_build, 1), len(files)],
        },
    )


if __name__ == "__main__":
    main()
