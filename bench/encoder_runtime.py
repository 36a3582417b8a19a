"""Images per second of the encoder alone and of the whole caption pipeline, with the encoder in
torch eager and in ONNX Runtime, at encoder chunks of 4 and 32 (issue 18 items 1 and 2).

Every side runs in one process, on the same images already decoded into one tensor (the
example photos, then generated scenes, ``--images`` in all), interleaved: each repeat runs
every side once, in an order that rotates, and each side keeps its best wall and CPU time.
Encoder only is ``encode_images`` on the whole tensor; the pipeline is ``caption_tensors`` on
it (beam 3, grounding, slots and tags on: a batch of ``captioner caption`` or of the service)
with the chunk set through ``$CAPTIONER_ENCODE_CHUNK``. Target (issue 18): the pipeline with
the default encoder (ONNX Runtime, chunks of 4) at >= 0.50 of the encoder-only ONNX limit.
``--profile`` adds where the default pipeline's time goes (cProfile, cumulative shares).

    python bench/encoder_runtime.py [--images 32] [--repeats 3] [--sweep] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
from collections.abc import Callable

import _omp  # noqa: F401  (first: the OpenMP wait policy, before torch loads)
import torch
from _common import ROOT, report, scene_images

import captioner
from captioner.inference.common import CHUNK_ENV, encode_images, set_encoder_runtime

RUNTIMES = ("torch", "onnx")
#: Functions whose cumulative time the profile reports, as shares of ``caption_tensors``.
PROFILED = {
    "encode": "encode_images",
    "beam search": "decode",
    "slot attention replay": "_slot_attention",
    "slot filling": "fill_slots",
    "grounding": "ground_results",
    "tags and domain": "_describe",
}


def rotate_best(sides: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple]:
    """Run every side once per repeat (order rotating), after one untimed warm-up each;
    -> name -> (best wall s, best CPU s)."""
    for run in sides.values():
        run()
    names = list(sides)
    best = dict.fromkeys(names, (float("inf"), float("inf")))
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order if r % 2 == 0 else order[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            sides[name]()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def images_for(cap: captioner.Captioner, n: int) -> torch.Tensor:
    sources = sorted((ROOT / "examples").glob("photo-*.jpg"))
    sources += sorted(scene_images(n).glob("*.jpg"))
    return torch.stack([cap.load_image(s) for s in sources[:n]])


def side(cap: captioner.Captioner, runtime: str, chunk: int, run: Callable[[], object]):
    def timed() -> None:
        set_encoder_runtime(cap.encoder, runtime)
        os.environ[CHUNK_ENV] = str(chunk)
        run()

    return timed


def profile_shares(cap: captioner.Captioner, images: torch.Tensor) -> dict[str, float]:
    """Cumulative share of ``caption_tensors`` in each :data:`PROFILED` function."""
    set_encoder_runtime(cap.encoder, None)
    os.environ.pop(CHUNK_ENV, None)
    profiler = cProfile.Profile()
    profiler.runcall(cap.caption_tensors, images, beam_size=3)
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    total = max(ct for (_, _, name), (_, _, _, ct, _) in stats.items() if name == "caption_tensors")
    return {
        label: round(
            sum(ct for (_, _, name), (_, _, _, ct, _) in stats.items() if name == fn) / total, 3
        )
        for label, fn in PROFILED.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sweep", action="store_true", help="encoder-only at chunks 1-32 as well")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()

    load_before = os.getloadavg()
    cap = captioner.load("caption", device="cpu")
    images = images_for(cap, args.images)
    enc_chunks = (1, 2, 4, 8, 16, 32) if args.sweep else (4, 32)
    cpu = torch.device("cpu")
    encoders = {
        f"encoder {rt} {c}": side(
            cap, rt, c, lambda c=c: encode_images(cap.encoder, images, cpu, c)
        )
        for rt in RUNTIMES
        for c in enc_chunks
    }
    pipelines = {
        f"pipeline {rt} {c}": side(cap, rt, c, lambda: cap.caption_tensors(images, beam_size=3))
        for rt in RUNTIMES
        for c in (4, 32)
    }
    try:
        best = rotate_best({**encoders, **pipelines}, args.repeats)
        shares = profile_shares(cap, images) if args.profile else None
    finally:
        os.environ.pop(CHUNK_ENV, None)
        set_encoder_runtime(cap.encoder, None)
    n = len(images)
    rate = {name: round(n / wall, 1) for name, (wall, _) in best.items()}
    cpu_ms = {name: round(1000 * c / n, 1) for name, (_, c) in best.items()}

    def of(kind: str, rt: str, c: int) -> float:
        return rate[f"{kind} {rt} {c}"]

    figures = {
        "images": n,
        "encoder_img_s": {rt: {c: of("encoder", rt, c) for c in enc_chunks} for rt in RUNTIMES},
        "pipeline_img_s": {rt: {c: of("pipeline", rt, c) for c in (4, 32)} for rt in RUNTIMES},
        "cpu_ms_per_image": cpu_ms,
        "ratios": {
            "encoder onnx/torch chunk 4": round(
                of("encoder", "onnx", 4) / of("encoder", "torch", 4), 2
            ),
            "encoder onnx/torch chunk 32": round(
                of("encoder", "onnx", 32) / of("encoder", "torch", 32), 2
            ),
            "encoder chunk 4/32 torch": round(
                of("encoder", "torch", 4) / of("encoder", "torch", 32), 2
            ),
            "encoder chunk 4/32 onnx": round(
                of("encoder", "onnx", 4) / of("encoder", "onnx", 32), 2
            ),
            "pipeline onnx 4 / torch 32 (issue 18 before)": round(
                of("pipeline", "onnx", 4) / of("pipeline", "torch", 32), 2
            ),
            "pipeline chunk 4/32 onnx": round(
                of("pipeline", "onnx", 4) / of("pipeline", "onnx", 32), 2
            ),
            "pipeline / encoder-only onnx limit (target >= 0.50)": round(
                of("pipeline", "onnx", 4) / of("encoder", "onnx", 4), 2
            ),
        },
        "profile_shares": shares,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    report("encoder_runtime", figures)


if __name__ == "__main__":
    main()
