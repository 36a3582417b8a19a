"""Shared set-up for the benchmarks: the default bundle and generated scene images."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import _omp  # noqa: F401  (first: the OpenMP wait policy, before torch loads)
import torch

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "_work"  # generated data, git-ignored


def scene_images(n: int, seed: int = 123) -> Path:
    """A folder of ``n`` generated 224 px scene JPEGs (made once, then reused)."""
    from captioner.data.scenes import generate_scenes

    out = WORK / f"scenes-{seed}-{n}"
    folder = out / "images" / "test"
    if not folder.is_dir() or len(list(folder.glob("*.jpg"))) < n:
        generate_scenes(out, seed, 0, 0, n, 0, progress=False)
    return folder


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    """Fastest wall time of ``repeats`` runs (the least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def interleaved_best(
    batches: list, run: Callable[[object, bool], tuple[float, float]], repeats: int
) -> dict[bool, tuple[float, float]]:
    """Time ``run(batch, side)`` for both sides of every batch, back to back in alternating
    order, keeping each batch's best (wall, CPU) seconds per side; -> side -> summed best.

    Load from other processes then hits both sides alike; CPU time is reported too because on a
    shared machine it is far less disturbed than wall time."""
    for batch in batches:  # warm-up (allocations, cuDNN choices), not timed
        run(batch, True)
    inf = (float("inf"), float("inf"))
    best = {True: [inf] * len(batches), False: [inf] * len(batches)}
    for r in range(repeats):
        for b, batch in enumerate(batches):
            for side in (True, False) if (r + b) % 2 == 0 else (False, True):
                wall, cpu = run(batch, side)
                old = best[side][b]
                best[side][b] = (min(old[0], wall), min(old[1], cpu))
    return {k: (sum(t[0] for t in v), sum(t[1] for t in v)) for k, v in best.items()}


def caption_overhead(
    cap,
    images: torch.Tensor,
    batch_size: int,
    repeats: int,
    switch: Callable[[bool], None],
    on: str,
    off: str,
) -> dict:
    """Caption ``images`` in batches with a feature switched on and off (``switch(side)``),
    interleaved as :func:`interleaved_best` does -> the figures both overhead benches print:
    ms per image of each side (``ms_per_image_{on}`` / ``_{off}``), wall and CPU ratios."""
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]

    def timed(batch: torch.Tensor, side: bool) -> tuple[float, float]:
        switch(side)
        t0, c0 = time.perf_counter(), time.process_time()
        cap.caption_tensors(batch)
        if cap.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, time.process_time() - c0

    try:
        totals = interleaved_best(batches, timed, repeats)
    finally:
        switch(True)
    (wall_on, cpu_on), (wall_off, cpu_off) = totals[True], totals[False]
    n = len(images)
    return {
        "images": n,
        "batch_size": batch_size,
        "device": cap.device.type,
        f"ms_per_image_{on}": round(1000 * wall_on / n, 2),
        f"ms_per_image_{off}": round(1000 * wall_off / n, 2),
        "ratio": round(wall_on / wall_off, 3),
        f"cpu_ms_per_image_{on}": round(1000 * cpu_on / n, 2),
        f"cpu_ms_per_image_{off}": round(1000 * cpu_off / n, 2),
        "cpu_ratio": round(cpu_on / cpu_off, 3),
    }


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def report(name: str, result: dict) -> None:
    """Print one JSON line (what BENCHMARKS.md records)."""
    print(json.dumps({"bench": name, **result, "machine": machine()}))
