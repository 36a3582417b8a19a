"""`captioner caption` over one folder: the local job against `--engine ray`, side by side.

The same folder of rendered JPEGs, the same bundle and batch size, each job run whole (model
load included: a Ray job's actors load their model per job, as the local job does), in
interleaved rounds so drifting load hits every side alike. A local Ray is started once before
the rounds (a cluster user's is already up); its start-up is reported apart. Ray runs
``--concurrency`` 1 and 2 actors; Ray gives an actor with one CPU one torch thread, while the
local job's model uses the machine's threads. Prints images/s per side and Ray/local (target
>= 0.85 on one machine); every run's paths, captions and errors are checked equal to the
local job's.

    python bench/ray_engine.py [--n 384] [--batch-size 32] [--rounds 2] [--concurrency 1 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import _omp  # noqa: F401  (first: the OpenMP wait policy, before torch loads)
import ray
from _common import WORK, report, scene_images

from captioner.batch import caption_files
from captioner.engines.ray_data import RayEngine


def _words(row: dict) -> tuple:
    return row["path"], row.get("caption"), row.get("error")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=384)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    folder = scene_images(args.n)
    t0 = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    ray_start_s = time.perf_counter() - t0
    sides = {"local": None, **{f"ray x{c}": RayEngine(concurrency=c) for c in args.concurrency}}
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    reference = None
    for _ in range(args.rounds):
        for name, engine in sides.items():
            out = WORK / f"ray_engine-{name.replace(' ', '')}.jsonl"
            t0 = time.perf_counter()
            caption_files(
                [str(folder)],
                out=out,
                batch_size=args.batch_size,
                workers=args.workers,
                engine=engine,
                progress=False,
                device="cpu",
            )
            seconds[name].append(time.perf_counter() - t0)
            rows = [_words(json.loads(line)) for line in out.read_text().splitlines()]
            reference = reference or rows
            if rows != reference:  # scores may differ in the last digit with other threads
                raise SystemExit(f"{name} wrote other rows than the local job")
    ray.shutdown()
    rate = {name: round(args.n / statistics.median(s), 1) for name, s in seconds.items()}
    ratios = {
        f"{name}/local": round(rate[name] / rate["local"], 3) for name in sides if name != "local"
    }
    report(
        "ray_engine",
        {
            "images": args.n,
            "batch_size": args.batch_size,
            "images_per_s": rate,
            "ratios": ratios,
            "target_ray_over_local": 0.85,
            "ray_start_s": round(ray_start_s, 1),
            "seconds": {k: [round(x, 2) for x in v] for k, v in seconds.items()},
        },
    )


if __name__ == "__main__":
    main()
