"""The HTTP service under load: three figures, each printed as a ratio with both numbers.

(a) saturation: the highest requests/s over a closed-loop concurrency sweep (1..32 clients,
    one image per request) against the raw in-process pipeline on the same images
    (``load_image`` + ``caption_batch`` in batches of max_batch_size, timed before and after
    the sweep, best kept). Target >= 0.9.
(b) dynamic batching: max_batch_size=16 / max_wait_ms=10 against max_batch_size=1, closed
    loop at concurrency 16. Target >= 1.5x.
(c) overload: Poisson arrivals at 10x the saturation rate: share of 429/503, p99 latency of
    the accepted (200) requests, and the server's RSS before, right after, and after idling.

Each figure starts its own ``captioner serve`` on 127.0.0.1 (a free port), waits for /readyz
and stops it. Every phase is bounded in requests and in seconds. Images: examples/scene-*.jpg
and examples/photo-chelsea.jpg. All numbers go to bench/_work/service_load.json.

    python bench/service_load.py [--quick] [--only a|b|c] [--device auto|cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import _omp  # noqa: F401  (first: the OpenMP wait policy, before torch loads)
import torch
from _common import ROOT, WORK, best_of, machine, report
from _loadgen import Server, closed_loop, metrics_delta, poisson, summarize

import captioner

ROUTE = "/v1/caption"


def example_images() -> list[tuple[str, bytes]]:
    files = [*sorted((ROOT / "examples").glob("scene-*.jpg")), ROOT / "examples/photo-chelsea.jpg"]
    return [(f.name, f.read_bytes()) for f in files]


def serve_options(args: argparse.Namespace, max_batch_size: int, max_wait_ms: float) -> list[str]:
    return [
        "--no-activity",  # the caption figures only; no activity bundle needed
        "--device",
        args.device,
        "--max-batch-size",
        str(max_batch_size),
        "--max-wait-ms",
        str(max_wait_ms),
        "--max-queue",
        str(args.max_queue),
        "--log-level",
        "warning",  # no access log line per request competing for the CPU
    ]


def server(args: argparse.Namespace, max_batch_size: int, max_wait_ms: float) -> Server:
    threads = {} if args.threads is None else {"OMP_NUM_THREADS": str(args.threads)}
    return Server(
        serve_options(args, max_batch_size, max_wait_ms),
        env=threads,
        log_path=WORK / "service_load-server.log",
        ready_timeout_s=args.ready_timeout,
    )


def warm_up(srv: Server, images: list, args: argparse.Namespace) -> None:
    """A few full batches, so the first measured requests pay no lazy set-up."""
    n = 2 * args.max_batch_size
    asyncio.run(closed_loop(srv.base + ROUTE, images, args.max_batch_size, n, 60.0))


# -- (a) ----------------------------------------------------------------------------------


def raw_pipeline(cap: captioner.Captioner, images: list, args: argparse.Namespace) -> dict:
    """The in-process pipeline on the same image bytes: images/s, best of a few runs."""
    data = [images[i % len(images)][1] for i in range(args.raw_images)]
    bs = args.max_batch_size

    def run(attention: bool) -> None:
        for s in range(0, len(data), bs):
            tensors = [cap.load_image(d) for d in data[s : s + bs]]
            cap.caption_batch(tensors, return_attention=attention)

    run(True)  # warm-up
    # The service always returns attention grids, so the matched figure computes them too.
    t_att = best_of(lambda: run(True), args.repeats)
    t_plain = best_of(lambda: run(False), args.repeats)
    return {
        "images": len(data),
        "batch_size": bs,
        "device": str(cap.device),
        "images_per_s": round(len(data) / t_att, 2),
        "images_per_s_without_attention": round(len(data) / t_plain, 2),
    }


def figure_a(images: list, args: argparse.Namespace, out: dict) -> float:
    cap = captioner.load(device=args.device)
    assert isinstance(cap, captioner.Captioner)
    raws = [raw_pipeline(cap, images, args)]
    sweep = []
    with server(args, args.max_batch_size, args.max_wait_ms) as srv:
        warm_up(srv, images, args)
        for c in args.levels:
            before = srv.metrics()
            n = max(args.min_requests, args.requests_per_client * c)
            phase = asyncio.run(closed_loop(srv.base + ROUTE, images, c, n, args.level_seconds))
            row = {"concurrency": c, **summarize(phase)}
            row["metrics"] = metrics_delta(before, srv.metrics(), "caption")
            sweep.append(row)
            print(
                f"  c={c:>3}  {row['ok_per_s']:7.2f} req/s  p50 {row['latency_ms']['p50']} ms  "
                f"p99 {row['latency_ms']['p99']} ms  batch {row['metrics']['mean_batch_size']}  "
                f"queue {row['server_ms']['queue_ms'].get('mean')} ms  "
                f"compute {row['server_ms']['compute_ms'].get('mean')} ms  {row['status']}",
                flush=True,
            )
    # Measured again after the sweep, the best kept: other load on the machine drifts.
    raws.append(raw_pipeline(cap, images, args))
    raw = max(raws, key=lambda r: r["images_per_s"])
    best = max(sweep, key=lambda r: r["ok_per_s"])
    result = {
        "service_req_per_s": best["ok_per_s"],
        "at_concurrency": best["concurrency"],
        "raw_images_per_s": raw["images_per_s"],
        "ratio": round(best["ok_per_s"] / raw["images_per_s"], 3),
        "target": ">= 0.9",
        "max_batch_size": args.max_batch_size,
        "max_wait_ms": args.max_wait_ms,
    }
    out["a"] = {**result, "raw": raws, "sweep": sweep}
    report("service_load_a", result)
    return best["ok_per_s"]


# -- (b) ----------------------------------------------------------------------------------


def figure_b(images: list, args: argparse.Namespace, out: dict) -> None:
    c, n = args.b_concurrency, args.b_requests
    runs: dict[str, list[dict]] = {"batched": [], "unbatched": []}
    # Both servers up at once (an idle one costs no CPU) and their runs interleaved, so a
    # change in the machine's other load hits both sides alike.
    with (
        server(args, args.max_batch_size, args.max_wait_ms) as batched,
        server(args, 1, 0.0) as unbatched,
    ):
        for srv in (batched, unbatched):
            warm_up(srv, images, args)
        for _ in range(args.repeats):
            for name, srv in (("unbatched", unbatched), ("batched", batched)):
                before = srv.metrics()
                phase = asyncio.run(closed_loop(srv.base + ROUTE, images, c, n, args.b_seconds))
                row = summarize(phase)
                row["metrics"] = metrics_delta(before, srv.metrics(), "caption")
                runs[name].append(row)
    best = {name: max(rows, key=lambda r: r["ok_per_s"]) for name, rows in runs.items()}
    result = {
        "concurrency": c,
        "batched_req_per_s": best["batched"]["ok_per_s"],
        "unbatched_req_per_s": best["unbatched"]["ok_per_s"],
        "ratio": round(best["batched"]["ok_per_s"] / best["unbatched"]["ok_per_s"], 3),
        "target": ">= 1.5",
        "batched_p99_ms": best["batched"]["latency_ms"]["p99"],
        "unbatched_p99_ms": best["unbatched"]["latency_ms"]["p99"],
        "batched_mean_batch": best["batched"]["metrics"]["mean_batch_size"],
        "max_batch_size": args.max_batch_size,
        "max_wait_ms": args.max_wait_ms,
    }
    out["b"] = {**result, "runs": runs}
    report("service_load_b", result)


# -- (c) ----------------------------------------------------------------------------------


def figure_c(images: list, args: argparse.Namespace, out: dict, saturation: float | None) -> None:
    with server(args, args.max_batch_size, args.max_wait_ms) as srv:
        warm_up(srv, images, args)
        if saturation is None:  # (a) not run: measure it here, closed loop at 2 full batches
            c = 2 * args.max_batch_size
            phase = asyncio.run(closed_loop(srv.base + ROUTE, images, c, 20 * c, 20.0))
            saturation = summarize(phase)["ok_per_s"]
        rate = args.overload_factor * saturation
        rss_before = srv.rss_mb()
        before = srv.metrics()
        phase = asyncio.run(
            poisson(
                srv.base + ROUTE,
                images,
                rate,
                max_requests=int(rate * args.overload_seconds * 2) + 10,
                max_seconds=args.overload_seconds,
            )
        )
        rss_after = srv.rss_mb()
        load = summarize(phase)
        load["metrics"] = metrics_delta(before, srv.metrics(), "caption")
        time.sleep(args.idle_seconds)
        rss_idle = srv.rss_mb()
        # Back to normal afterwards: one request answered promptly.
        after = summarize(asyncio.run(closed_loop(srv.base + ROUTE, images, 1, 3, 60.0)))
    dropped = load["status"].get("client_dropped", 0)  # never sent: the client's own cap
    total = load["requests"] - dropped
    refused = sum(v for k, v in load["status"].items() if k in ("429", "503"))
    result = {
        "saturation_req_per_s": round(saturation, 2),
        "offered_req_per_s": load["offered_per_s"],
        "sent_req_per_s": load["sent_per_s"],
        "seconds": args.overload_seconds,
        "requests_sent": total,
        "client_dropped": dropped,
        "client_lag_p99_ms": load["client_lag_ms"]["p99"],
        "refused_429_503_share": round(refused / total, 3) if total else None,
        "accepted_req_per_s": load["ok_per_s"],
        "accepted_p50_ms": load["latency_ms"]["p50"],
        "accepted_p99_ms": load["latency_ms"]["p99"],
        # Time inside the route (decode + queue + compute); the rest of the latency is spent
        # before the handler runs (connection, body upload and parsing) or in the client.
        "accepted_in_handler_mean_ms": load["server_ms"]["total_ms"].get("mean"),
        "status": load["status"],
        "rss_mb_before": rss_before,
        "rss_mb_after": rss_after,
        "rss_mb_after_idle": rss_idle,
        "idle_seconds": args.idle_seconds,
        "after_idle_ok": after["status"].get("200", 0) == after["requests"],
        "after_idle_p50_ms": after["latency_ms"]["p50"],
        "max_queue": args.max_queue,
    }
    out["c"] = {**result, "load": load, "after_idle": after}
    report("service_load_c", result)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small counts: a smoke test")
    ap.add_argument("--only", choices=["a", "b", "c"], help="one figure only")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--max-queue", type=int, default=256)
    ap.add_argument("--overload-seconds", type=float, default=30.0)
    ap.add_argument("--overload-factor", type=float, default=10.0)
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=2, help="(a) raw runs and (b) rounds; best")
    ap.add_argument(
        "--threads",
        type=int,
        help="torch threads for the server and the raw pipeline alike (default: torch's own); "
        "pin it when other jobs share the CPU, where extra threads oversubscribe it",
    )
    ap.add_argument("--ready-timeout", type=float, default=300.0)
    ap.add_argument("--out", type=Path, default=WORK / "service_load.json")
    args = ap.parse_args()
    args.levels = [1, 2, 4, 8, 16, 32]
    args.min_requests, args.requests_per_client, args.level_seconds = 40, 12, 30.0
    args.raw_images = 128
    args.b_concurrency, args.b_requests, args.b_seconds = 16, 320, 60.0
    if args.quick:
        args.levels = [1, 4, 16]
        args.min_requests, args.requests_per_client, args.level_seconds = 8, 3, 10.0
        args.raw_images, args.repeats = 32, 1
        args.b_requests, args.b_seconds = 48, 20.0
        args.overload_seconds = min(args.overload_seconds, 5.0)
        args.idle_seconds = min(args.idle_seconds, 2.0)
    return args


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    WORK.mkdir(parents=True, exist_ok=True)
    images = example_images()
    out: dict = {
        "quick": args.quick,
        "device": args.device,
        "threads": args.threads,
        "images": [name for name, _ in images],
        "loadavg_start": os.getloadavg(),  # other jobs on the machine show here
    }
    saturation = None
    if args.only in (None, "a"):
        print("(a) closed-loop sweep:", flush=True)
        saturation = figure_a(images, args, out)
    if args.only in (None, "b"):
        figure_b(images, args, out)
    if args.only in (None, "c"):
        figure_c(images, args, out, saturation)
    out["loadavg_end"] = os.getloadavg()
    out["machine"] = machine()
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
