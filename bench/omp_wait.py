"""OpenMP's wait policy under load: captioning in-process with libgomp's default policy against
``OMP_WAIT_POLICY=PASSIVE`` (what the CLI, the service and the benches set), with and without
other processes wanting the same cores, side by side (issue 18 item 3).

Each run is a fresh process (libgomp reads the policy once, when torch loads): it loads the
shipped caption model, decodes the images into one tensor, captions one batch untimed, then
captions every image in batches, timed. The competing load is ``--spinners`` processes
spinning in a Python loop (default: one per core) from before the run starts to after it ends.
The four sides run in turn, in alternating order, ``--repeats`` times each; a side's figures are
its totals over its runs: images/s, and the captioning process's CPU-ms per image (what its
threads burn, spinning included). ``--encoder-runtime`` picks the encoder's runtime
(``CAPTIONER_ENCODER_RUNTIME``): torch runs it on OpenMP threads, ONNX Runtime on its own
pool; the decoder is torch either way. Target: PASSIVE under load at least 2x the default's
images/s.

    python bench/omp_wait.py [--images 32] [--batch-size 4] [--spinners N] [--repeats 2]
                             [--encoder-runtime torch|onnx|auto]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from contextlib import contextmanager

import _omp  # noqa: F401  (first: the OpenMP wait policy, before torch loads)
from _common import ROOT, report, scene_images

from captioner._threads import WAIT_POLICY

# One timed run, printed as one JSON line; argv: image folder, count, batch size.
CAPTION = """
import json, sys, time
import torch
import captioner
folder, n, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cap = captioner.load("caption", device="cpu")
paths = sorted(__import__("pathlib").Path(folder).glob("*.jpg"))[:n]
images = torch.stack([cap.load_image(p) for p in paths])
cap.caption_tensors(images[:batch])
t0, c0 = time.perf_counter(), time.process_time()
for i in range(0, len(images), batch):
    cap.caption_tensors(images[i : i + batch])
print(json.dumps({"images": len(images), "wall": time.perf_counter() - t0,
                  "cpu": time.process_time() - c0, "threads": torch.get_num_threads()}))
"""
SPIN = "while True: pass"


@contextmanager
def spinning(count: int):
    """``count`` processes each keeping one core busy, for the length of the block."""
    procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(count)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def caption_run(policy: str | None, runtime: str, folder, n: int, batch: int) -> dict:
    """One fresh captioning process under ``policy`` (None: the variable unset)."""
    env = {k: v for k, v in os.environ.items() if k != WAIT_POLICY}
    env.update(CUDA_VISIBLE_DEVICES="", CAPTIONER_ENCODER_RUNTIME=runtime)
    if policy is not None:
        env[WAIT_POLICY] = policy
    argv = [sys.executable, "-c", CAPTION, str(folder), str(n), str(batch)]
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--spinners", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--encoder-runtime", choices=("torch", "onnx", "auto"), default="torch")
    args = ap.parse_args()

    folder = scene_images(args.images)
    sides = [(p, s) for s in (0, args.spinners) for p in ("default", "PASSIVE")]
    runs: dict[tuple[str, int], list[dict]] = {side: [] for side in sides}
    for r in range(args.repeats):
        for policy, spinners in sides if r % 2 == 0 else sides[::-1]:
            with spinning(spinners):
                value = None if policy == "default" else policy
                runs[policy, spinners].append(
                    caption_run(value, args.encoder_runtime, folder, args.images, args.batch_size)
                )
    figures: dict = {"images": args.images, "batch_size": args.batch_size}
    figures["torch_threads"] = runs[sides[0]][0]["threads"]
    figures["spinners"] = args.spinners
    figures["encoder_runtime"] = args.encoder_runtime
    for (policy, spinners), done in runs.items():
        n = sum(d["images"] for d in done)
        wall, cpu = sum(d["wall"] for d in done), sum(d["cpu"] for d in done)
        key = f"{policy.lower()}_{'loaded' if spinners else 'idle'}"
        figures[f"img_per_s_{key}"] = round(n / wall, 2)
        figures[f"cpu_ms_per_image_{key}"] = round(1000 * cpu / n, 1)
    figures["loaded_speedup"] = round(
        figures["img_per_s_passive_loaded"] / figures["img_per_s_default_loaded"], 2
    )
    report("omp_wait", figures)


if __name__ == "__main__":
    main()
