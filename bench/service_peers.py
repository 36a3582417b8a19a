"""Our service against its serving peers, on the same model, images and machine, interleaved.

Three servers, each its own process on 127.0.0.1, all up at once (an idle one costs next to no
CPU), each answering ``POST /v1/caption`` (one JPEG per request):

    ours      ``captioner serve --no-activity`` (dynamic batching, max_batch_size 16, 10 ms)
    litserve  LitServe: LitAPI.decode_request -> the model's load_image, predict -> the model's
              caption_batch on a worker thread, LitServe's batching with the same batch size
              and wait (bench/_peer_servers.py), in its own virtual environment
    plain     a FastAPI endpoint without batching: one request = one model.caption call in
              FastAPI's threadpool (bench/_peer_servers.py)

All three load ``captioner.load()``'s caption bundle with the same torch thread count, the same
encoder runtime (``$CAPTIONER_ENCODER_RUNTIME``, set for all three: onnx by default, which
fails loudly rather than falling back), the same encoder chunks and ``OMP_WAIT_POLICY``; they
must give the same caption for the same image (checked first). Closed-loop windows of
``--seconds`` at each concurrency (1, 8, 32), the servers' order rotated from one window to the
next and the whole sweep repeated ``--rounds`` times, so drifting load from other processes
hits all three alike. Per server and concurrency: requests/s, p50/p99 latency, the server
process tree's CPU-ms per request, the mean batch; the ratios ours/LitServe and ours/plain are
taken per round (paired windows) and their median is reported. ``os.getloadavg()`` at every
window.

LitServe lives in ``bench/_work/litserve-venv`` (made on the first run, or with
``--setup-litserve``): ``pip install -c constraints.txt litserve`` into a fresh venv, so its
own requirements never touch the project's pinned environment, plus a ``.pth`` that appends
this environment's site-packages after its own: the project, torch and ONNX Runtime are the
very same files for all three servers.

    python bench/service_peers.py [--quick] [--rounds 3] [--seconds 12] [--levels 1 8 32]
                                  [--threads N] [--encoder-runtime onnx|torch]
                                  [--ours-in-litserve-env]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import _omp  # noqa: F401  (first: the OpenMP wait policy, before torch loads)
from _common import ROOT, WORK, machine, report, scene_images
from _loadgen import HOST, Server, bodies, closed_loop, summarize

ROUTE = "/v1/caption"
PEERS = Path(__file__).resolve().parent / "_peer_servers.py"
LITSERVE_VENV = WORK / "litserve-venv"
TARGETS = {"ours_over_litserve_c32": 1.2, "p50_ours_over_litserve_c1": 1.1, "ours_over_plain": 1.5}


# -- the servers ---------------------------------------------------------------------------


class PeerServer(Server):
    """One of bench/_peer_servers.py's servers, run by ``python``. LitServe's main process
    dies at SIGTERM and leaves its workers behind; at SIGINT it stops them, and the process
    group is killed afterwards all the same."""

    ready_path = "/health"
    stop_signal = signal.SIGINT
    own_group = True

    def __init__(self, python: Path, kind: str, options: list[str], **kwargs) -> None:
        super().__init__(options, **kwargs)
        self.python, self.kind = python, kind

    def command(self) -> list[str]:
        return [str(self.python), str(PEERS), self.kind, "--port", str(self.port), *self.options]


class OursElsewhere(Server):
    """``captioner serve`` run by another environment's Python (uvicorn's own choice of loop
    and HTTP parser then follows what that environment has installed)."""

    def __init__(self, python: Path, options: list[str], **kwargs) -> None:
        super().__init__(options, **kwargs)
        self.python = python

    def command(self) -> list[str]:
        return [str(self.python), *super().command()[1:]]


def litserve_python(setup: bool) -> Path:
    """The LitServe environment's Python, made when missing (or when ``setup``)."""
    python = LITSERVE_VENV / "bin" / "python"
    has = python.exists() and subprocess.run([python, "-c", "import litserve"]).returncode == 0
    if has and not setup:
        return python
    print(f"making {LITSERVE_VENV.relative_to(ROOT)} (pip install litserve) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", LITSERVE_VENV], check=True)
    pip = [python, "-m", "pip", "install", "--quiet", "-c", ROOT / "constraints.txt", "litserve"]
    subprocess.run(pip, check=True)
    ours = sysconfig.get_paths()["purelib"]  # this environment: the project, torch, onnxruntime
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # addsitedir (not a bare path): the project's editable install is itself a .pth there.
    Path(site, "zz_captioner_env.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    return python


def litserve_versions(python: Path) -> dict:
    code = (
        "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
        "('litserve', 'fastapi', 'starlette', 'uvicorn', 'uvloop', 'httptools', 'pyzmq')}))"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def make_servers(args: argparse.Namespace, python: Path) -> dict[str, Server]:
    env = {"CAPTIONER_ENCODER_RUNTIME": args.encoder_runtime}
    ours = ["--no-activity", "--device", "cpu", "--max-batch-size", str(args.max_batch_size)]
    ours += ["--max-wait-ms", str(args.max_wait_ms), "--log-level", "warning"]
    peer = []
    if args.threads is not None:
        ours += ["--torch-threads", str(args.threads)]
        peer += ["--threads", str(args.threads)]
    batching = ["--max-batch-size", str(args.max_batch_size)]
    batching += ["--max-wait-ms", str(args.max_wait_ms)]

    def log(name: str) -> Path:
        path = WORK / f"service_peers-{name}.log"
        path.unlink(missing_ok=True)
        return path

    common = {"env": env, "ready_timeout_s": args.ready_timeout}
    servers: dict[str, Server] = {
        "ours": Server(ours, log_path=log("ours"), **common),
        "litserve": PeerServer(
            python, "litserve", [*peer, *batching], log_path=log("litserve"), **common
        ),
        "plain": PeerServer(Path(sys.executable), "plain", peer, log_path=log("plain"), **common),
    }
    if args.ours_in_litserve_env:
        servers["ours_litserve_env"] = OursElsewhere(
            python, ours, log_path=log("ours_litserve_env"), **common
        )
    return servers


# -- measuring -----------------------------------------------------------------------------


_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (from /proc)."""
    total, todo, seen = 0.0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


def one_caption(srv: Server, name: str, data: bytes) -> str:
    """The caption a server gives ``data`` (the same-model check)."""
    body = bodies([(name, data)])[0]
    headers = {"content-type": "multipart/form-data; boundary=captioner-loadgen-boundary"}
    req = urllib.request.Request(srv.base + ROUTE, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())["results"][0]["caption"]


def window(srv: Server, images: list, concurrency: int, seconds: float) -> dict:
    assert srv.proc is not None
    load = os.getloadavg()[0]
    cpu0, t0 = tree_cpu_s(srv.proc.pid), time.perf_counter()
    phase = asyncio.run(closed_loop(srv.base + ROUTE, images, concurrency, 10**7, seconds))
    cpu = tree_cpu_s(srv.proc.pid) - cpu0
    row = summarize(phase)
    ok = row["status"].get("200", 0)
    return {
        "concurrency": concurrency,
        "ok_per_s": row["ok_per_s"],
        "p50_ms": row["latency_ms"]["p50"],
        "p99_ms": row["latency_ms"]["p99"],
        "server_cpu_ms_per_request": round(1000 * cpu / ok, 1) if ok else None,
        "server_cpu_share": round(cpu / (time.perf_counter() - t0), 2),
        "mean_batch": row["batch_size"].get("mean"),
        "status": row["status"],
        "loadavg_1min": round(load, 2),
    }


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def summary(runs: dict[str, list[dict]], levels: list[int]) -> dict:
    """Per server and concurrency, medians over rounds; ratios paired by round."""
    out: dict = {"servers": {}, "ratios": {}}
    for name, rows in runs.items():
        out["servers"][name] = {
            str(c): {
                key: median([r[key] for r in rows if r["concurrency"] == c])
                for key in ("ok_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_request")
            }
            for c in levels
        }

    def paired(a: str, b: str, c: int, key: str) -> float | None:
        xs = [r[key] for r in runs[a] if r["concurrency"] == c]
        ys = [r[key] for r in runs[b] if r["concurrency"] == c]
        return median([x / y for x, y in zip(xs, ys, strict=True) if x and y])

    for other in [n for n in runs if n != "ours"]:
        for c in levels:
            out["ratios"][f"ours/{other} req/s c={c}"] = paired("ours", other, c, "ok_per_s")
            out["ratios"][f"ours/{other} p50 c={c}"] = paired("ours", other, c, "p50_ms")
    return out


def verdict(ratios: dict, levels: list[int]) -> dict:
    top, low = max(levels), min(levels)
    got = {
        "ours_over_litserve_c32": ratios.get(f"ours/litserve req/s c={top}"),
        "p50_ours_over_litserve_c1": ratios.get(f"ours/litserve p50 c={low}"),
        "ours_over_plain": ratios.get(f"ours/plain req/s c={top}"),
    }
    met = {
        "ours_over_litserve_c32": lambda v: v >= TARGETS["ours_over_litserve_c32"],
        "p50_ours_over_litserve_c1": lambda v: v <= TARGETS["p50_ours_over_litserve_c1"],
        "ours_over_plain": lambda v: v >= TARGETS["ours_over_plain"],
    }
    return {k: {"got": v, "met": v is not None and met[k](v)} for k, v in got.items()}


# -- main ----------------------------------------------------------------------------------


def payloads(n_scenes: int) -> list[tuple[str, bytes]]:
    files = sorted((ROOT / "examples").glob("*.jpg"))
    files += sorted(scene_images(n_scenes).glob("*.jpg"))[:n_scenes]
    return [(f.name, f.read_bytes()) for f in files]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one round of short windows: a smoke test")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=12.0, help="each load window")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--threads", type=int, help="torch threads in every server (default: cores)")
    ap.add_argument("--encoder-runtime", choices=["onnx", "torch"], default="onnx")
    ap.add_argument("--scenes", type=int, default=16, help="generated scene JPEGs added")
    ap.add_argument("--setup-litserve", action="store_true", help="(re)make the LitServe venv")
    ap.add_argument(
        "--ours-in-litserve-env",
        action="store_true",
        help="a fourth server: ours under the LitServe environment's Python (uvloop, httptools)",
    )
    ap.add_argument("--only", nargs="+", help="servers to run (default: all)")
    ap.add_argument("--ready-timeout", type=float, default=300.0)
    ap.add_argument("--out", type=Path, default=WORK / "service_peers.json")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 5.0
    return args


def main() -> None:
    args = parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    python = litserve_python(args.setup_litserve)
    versions = litserve_versions(python)
    images = payloads(args.scenes)
    servers = make_servers(args, python)
    if args.only:
        servers = {k: v for k, v in servers.items() if k in args.only or k == "ours"}
    out: dict = {
        "images": len(images),
        "levels": args.levels,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "encoder_runtime": args.encoder_runtime,
        "threads": args.threads,
        "max_batch_size": args.max_batch_size,
        "max_wait_ms": args.max_wait_ms,
        "litserve_env": versions,
        "loadavg_start": os.getloadavg(),
    }
    print(f"LitServe env: {versions}", flush=True)
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    started: list[Server] = []
    try:
        for srv in servers.values():
            started.append(srv.__enter__())
        captions = {name: one_caption(srv, *images[0]) for name, srv in servers.items()}
        out["same_caption"] = captions
        if len(set(captions.values())) != 1:
            raise SystemExit(f"the servers disagree on {images[0][0]}: {captions}")
        names = list(servers)
        for srv in servers.values():  # warm-up: a few full batches each, not recorded
            window(srv, images, args.max_batch_size, 3.0)
        step = 0
        for rnd in range(args.rounds):
            for c in args.levels:
                order = names[step % len(names) :] + names[: step % len(names)]
                step += 1
                for name in order:
                    row = window(servers[name], images, c, args.seconds)
                    row["round"] = rnd
                    runs[name].append(row)
                    print(
                        f"  round {rnd} c={c:>2} {name:<18} {row['ok_per_s']:6.2f} req/s  "
                        f"p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  "
                        f"cpu {row['server_cpu_ms_per_request']} ms/req  "
                        f"batch {row['mean_batch']}  load {row['loadavg_1min']}  {row['status']}",
                        flush=True,
                    )
    finally:
        for srv in reversed(started):
            srv.stop()
    out |= summary(runs, args.levels)
    out["targets"] = verdict(out["ratios"], args.levels) if "litserve" in runs else {}
    out["runs"] = runs
    out["loadavg_end"] = os.getloadavg()
    out["machine"] = machine()
    args.out.write_text(json.dumps(out, indent=1))
    for name, levels in out["servers"].items():
        print(f"{name}: {json.dumps(levels)}")
    print(json.dumps(out["ratios"], indent=1))
    report(
        "service_peers",
        {
            "targets": out["targets"],
            "encoder_runtime": args.encoder_runtime,
            "litserve": versions.get("litserve"),
            "loadavg": [out["loadavg_start"][0], out["loadavg_end"][0]],
        },
    )
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    assert HOST == "127.0.0.1"
    main()
