"""Shared set-up for the benchmarks: the default bundle and generated scene images."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

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
