"""torch.distributed for training under torchrun: set-up from the environment and a few helpers.

Without torchrun (no ``WORLD_SIZE`` > 1 in the environment) every helper is a no-op, so the
single-process path runs the same code.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data.distributed import DistributedSampler

from captioner.bundle import save_bundle


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched() -> bool:
    """True when torchrun (or another env:// launcher) started several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group when launched by torchrun -> (world, this rank's device).

    gloo on the CPU, NCCL on CUDA (each rank on its ``LOCAL_RANK`` GPU). Idempotent.
    """
    if not launched():
        return World(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return current(), device


def current() -> World:
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if current().distributed:
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. builds a cache); the others run it after (and read it)."""
    world = current()
    if world.distributed and not world.main:
        dist.barrier()
    yield
    if world.distributed and world.main:
        dist.barrier()


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """This rank's share of a shuffled epoch over ``n`` items (DistributedSampler's split).

    The permutation depends on the seed and epoch only, so rank r of N takes every N-th item
    of the same order a single process would use: N ranks with batch B see, step by step, the
    items one process sees with batch N x B.
    """
    world = current()
    sampler = DistributedSampler(
        range(n), num_replicas=world.size, rank=world.rank, shuffle=True, seed=seed
    )
    sampler.set_epoch(epoch)
    return list(sampler)


def save_bundle_on_main(
    out: str | os.PathLike, manifest: dict, weights: dict[str, dict[str, torch.Tensor]]
) -> Path:
    """Rank 0 writes the bundle; every rank returns once it is on disk."""
    if current().main:
        save_bundle(out, manifest, weights)
    barrier()
    return Path(out)


def collective_device(backend: str, local_rank: int) -> torch.device:
    """The device a collective's tensors must be on: this rank's GPU for NCCL, else the CPU.

    NCCL accepts only CUDA tensors (a CPU tensor stops the run with an error); gloo works on
    CPU tensors.
    """
    if backend == "nccl":
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _group_device() -> torch.device:
    return collective_device(str(dist.get_backend()), current().local_rank)


def mean_over_ranks(value: float) -> float:
    """The mean of ``value`` over all ranks (``value`` itself in a single process)."""
    if not current().distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64).to(_group_device())
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (pickled by torch.distributed over the process group)."""
    if not current().distributed:
        return obj
    box = [obj]
    # Named explicitly: NCCL otherwise stages the pickle on whichever GPU is current.
    dist.broadcast_object_list(box, src=0, device=_group_device())
    return box[0]
