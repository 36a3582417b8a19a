"""(b) `captioner caption` over a folder of 512 JPEGs against the raw in-process pipeline.

The raw side runs encoder + beam search on the same images already decoded into tensors in
memory; the CLI side reads, validates and resizes every file in DataLoader workers and writes
JSONL. Prints images/s for both and CLI/raw throughput (target >= 0.9). The model is loaded
once for both, so the ratio measures the data path, not start-up (reported apart).

    python bench/caption_folder.py [--n 512] [--workers 2] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import _omp  # noqa: F401  (first: the OpenMP wait policy, before torch loads)
import torch
from _common import ROOT, WORK, report, scene_images

import captioner
from captioner.batch import caption_files
from captioner.data.images import ImageFiles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    folder = scene_images(args.n)
    files = sorted(folder.glob("*.jpg"))[: args.n]
    cap = captioner.load(device=args.device)
    dataset = ImageFiles(files, cap.preprocess)
    tensors = torch.stack([dataset[i]["image"] for i in range(len(files))])  # preloaded
    out = WORK / "caption_folder.jsonl"

    def raw() -> None:
        for s in range(0, len(files), args.batch_size):
            cap.caption_tensors(tensors[s : s + args.batch_size])

    def cli() -> None:
        caption_files(
            [str(folder)],
            out=out,
            batch_size=args.batch_size,
            workers=args.workers,
            model=cap,
            progress=False,
        )

    raw()  # warm-up
    t_raw, t_cli = [], []
    for _ in range(args.repeats):  # interleaved, so drifting load hits both sides alike
        t0 = time.perf_counter()
        raw()
        t_raw.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        cli()
        t_cli.append(time.perf_counter() - t0)
    rows = out.read_text().count("\n")

    t0 = time.perf_counter()  # the whole command, start-up and model load included
    subprocess.run(
        [
            sys.executable,
            "-m",
            "captioner",
            "-q",
            "caption",
            str(folder),
            "--out",
            str(out),
            "--batch-size",
            str(args.batch_size),
            "--workers",
            str(args.workers),
        ],
        check=True,
        cwd=ROOT,
    )
    t_cmd = time.perf_counter() - t0
    n = len(files)
    report(
        "caption_folder",
        {
            "images": n,
            "rows_written": rows,
            "workers": args.workers,
            "batch_size": args.batch_size,
            "device": str(cap.device),
            "raw_images_per_s": round(n / min(t_raw), 1),
            "cli_images_per_s": round(n / min(t_cli), 1),
            "ratio": round(min(t_raw) / min(t_cli), 3),
            "target": ">= 0.9",
            "whole_command_seconds": round(t_cmd, 1),
        },
    )


if __name__ == "__main__":
    main()
