"""(a) Batched beam search (batch 32, beam 5) against the same search one image at a time.

Prints captions/s for both and their ratio (target >= 10x). Features come from real scene
images through the default bundle's encoder, so caption lengths are the real ones.

    python bench/beam_batching.py [--bundle weights/caption-default] [--device auto]
"""

from __future__ import annotations

import argparse

import _omp  # noqa: F401  (first: the OpenMP wait policy, before torch loads)
import torch
from _common import best_of, report, scene_images

import captioner
from captioner.data.images import ImageFiles, collate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    cap = captioner.load(args.bundle, device=args.device)
    folder = scene_images(args.batch)
    files = sorted(folder.glob("*.jpg"))[: args.batch]
    images = collate([ImageFiles(files, cap.preprocess)[i] for i in range(len(files))])["image"]
    feats = cap.encode(images).float()  # (B, N, C), computed once: only the search is timed
    opts = {"beam_size": args.beam}

    batched = cap.caption_features(feats, **opts)
    single = [cap.caption_features(feats[i : i + 1], **opts)[0] for i in range(len(files))]
    same = sum(a.caption == b.caption for a, b in zip(batched, single, strict=True))

    def run_batched():
        cap.caption_features(feats, **opts)

    def run_single():
        for i in range(len(files)):
            cap.caption_features(feats[i : i + 1], **opts)

    run_batched(), run_single()  # warm-up
    t_batched = best_of(run_batched, args.repeats)
    t_single = best_of(run_single, args.repeats)
    n = len(files)
    report(
        "beam_batching",
        {
            "batch": n,
            "beam": args.beam,
            "device": str(cap.device),
            "batched_captions_per_s": round(n / t_batched, 1),
            "one_at_a_time_captions_per_s": round(n / t_single, 1),
            "ratio": round(t_single / t_batched, 2),
            "target": ">= 10",
            "identical_captions": f"{same}/{n}",
            "mean_words": round(sum(len(r.words) for r in batched) / n, 1),
        },
    )


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
