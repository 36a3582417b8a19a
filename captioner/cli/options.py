"""Option types and the option groups several ``captioner`` commands share."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

DEVICE_HELP = "auto (CUDA when present, else CPU), cpu, cuda or cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def check_device(value: str) -> None:
    """Refuse a device this machine cannot run on, naming the valid choices (ValueError)."""
    if not _DEVICE.fullmatch(value):
        raise ValueError(f"--device {value!r} is not a device: use {DEVICE_HELP}")
    if not value.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ValueError(f"--device {value}: no CUDA GPU is available here; use cpu or auto")
    index = int(value.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ValueError(
            f"--device {value}: this machine has {torch.cuda.device_count()} CUDA device(s), "
            f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
        )


def positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return n


def fraction(value: str) -> float:
    """A share, 0 to 1 (an argparse type)."""
    x = float(value)
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return x


def non_negative(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return n


def shard_arg(value: str):
    from captioner.shard import Shard

    try:
        return Shard.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


RESUME_HELP = "skip the inputs already in --out and append the rest to it (needs --out)"


def check_output(args: argparse.Namespace) -> None:
    """Refuse ``--out`` / ``--resume`` that cannot work, before any model loads (ValueError)."""
    from captioner.records import check_output_path

    if args.resume and not args.out:
        raise ValueError(
            "--resume needs --out: add --out FILE.jsonl (or .csv), the file of the run to resume"
        )
    check_output_path(args.out)


SHARD_HELP = (
    "do only shard I of N (0-based; a contiguous block of the inputs) and write "
    "OUT.part-I-of-N.jsonl; join the parts with 'captioner merge'. Under torchrun the shard is "
    "RANK/WORLD_SIZE and rank 0 merges into --out"
)


def add_run_options(p, epochs: int | None = None, **train_defaults) -> None:
    """Options every train / evaluate command takes; training ones when ``epochs`` is given."""
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--workers", type=non_negative, default=2, help="decoding processes")
    p.add_argument(
        "--cache-dir",
        help="feature cache root (default: $CAPTIONER_CACHE, else ~/.cache/captioner)",
    )
    if epochs is None:
        return
    d = train_defaults
    p.add_argument("--epochs", type=positive, default=epochs, help="passes over the data")
    p.add_argument("--batch-size", type=positive, default=d["batch_size"], help="examples per step")
    p.add_argument("--lr", type=float, default=d["lr"], help="peak learning rate (AdamW)")
    p.add_argument(
        "--schedule",
        choices=("constant", "cosine"),
        default="constant",
        help="learning-rate schedule (cosine: decays to 0 over --epochs)",
    )
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    p.add_argument("--grad-clip", type=float, default=5.0, help="max gradient norm")
    p.add_argument(
        "--patience", type=non_negative, default=d["patience"], help="0: no early stopping"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for init and data order")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--name", default=d["name"], help="model name stored in the manifest")
    p.add_argument(
        "--tensorboard", metavar="DIR", help="also log the epoch scalars for TensorBoard here"
    )


def training_run(args: argparse.Namespace, monitor: str) -> dict:
    """The keyword arguments every train_* function takes, from the shared options."""
    from captioner.training.curves import require_tensorboard
    from captioner.training.loop import TrainConfig

    if args.tensorboard:
        require_tensorboard()  # fail now, not after the feature cache is built
    encoder = {"encoder_name": args.encoder} if getattr(args, "encoder", None) else {}
    return {
        **encoder,  # a motion model has none: it reads motion features
        "train_cfg": TrainConfig(
            epochs=args.epochs,
            lr=args.lr,
            weight_decay=args.weight_decay,
            grad_clip=args.grad_clip,
            patience=args.patience,
            schedule=args.schedule,
            monitor=monitor,
            seed=args.seed,
            tensorboard=args.tensorboard,
        ),
        "device": args.device,
        "resume": args.resume,
        "cache_root": Path(args.cache_dir) if args.cache_dir else None,
        "workers": args.workers,
        "name": args.name,
        "command": shlex.join(["captioner", *sys.argv[1:]]),
    }


def report_bundle(out: Path) -> int:
    from captioner.bundle import read_spec
    from captioner.training import distributed

    if not distributed.current().main:  # under torchrun, rank 0 reports
        distributed.cleanup()
        return 0
    distributed.cleanup()
    print(json.dumps({"bundle": str(out), "val": read_spec(out).metrics["val"]}, indent=2))
    return 0


def bundle_help(task: str) -> str:
    """The ``--bundle`` help of every command that runs a ``task`` model."""
    return f"{task} bundle folder or model name (default: {task}, the shipped model)"
