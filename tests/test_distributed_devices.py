"""Collectives put their tensors on the process group's device (no GPU needed to check).

NCCL accepts only CUDA tensors: a CPU tensor in ``all_reduce`` stops multi-GPU training at the
end of its first epoch. These tests fake an initialised two-rank group and record where the
tensors handed to the collectives live.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.distributed as dist

from captioner.training import distributed


def test_collective_device_follows_the_backend() -> None:
    assert distributed.collective_device("nccl", 1) == torch.device("cuda", 1)
    assert distributed.collective_device("gloo", 1) == torch.device("cpu")


@pytest.fixture
def fake_group(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A two-rank group on ``backend`` (nccl unless changed); ``moved`` maps id(tensor) -> device.

    ``Tensor.to`` is replaced so that moving to ``cuda`` works without a GPU: the tensor stays
    on the CPU and the device it was sent to is remembered.
    """
    state: dict[str, Any] = {"backend": "nccl", "moved": {}, "seen": []}
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: state["backend"])

    def to(self: torch.Tensor, device: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        moved = self.clone()
        state["moved"][id(moved)] = torch.device(device)
        return moved

    monkeypatch.setattr(torch.Tensor, "to", to)
    return state


def test_mean_over_ranks_reduces_on_the_ranks_gpu_under_nccl(
    fake_group: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def all_reduce(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        fake_group["seen"].append(fake_group["moved"].get(id(tensor), tensor.device))
        tensor.add_(3.0)  # the other rank's value

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    assert distributed.mean_over_ranks(1.0) == pytest.approx(2.0)
    assert fake_group["seen"] == [torch.device("cuda", 1)]


def test_mean_over_ranks_stays_on_the_cpu_under_gloo(
    fake_group: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_group["backend"] = "gloo"

    def all_reduce(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        fake_group["seen"].append(fake_group["moved"].get(id(tensor), tensor.device))

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    assert distributed.mean_over_ranks(4.0) == pytest.approx(2.0)
    assert fake_group["seen"] == [torch.device("cpu")]


def test_from_main_broadcasts_through_the_ranks_gpu_under_nccl(
    fake_group: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broadcast_object_list(box: list, src: int | None = None, **kwargs: Any) -> None:
        fake_group["seen"].append(kwargs.get("device"))
        box[0] = {"bleu4": 0.5}  # rank 0's numbers

    monkeypatch.setattr(dist, "broadcast_object_list", broadcast_object_list)
    assert distributed.from_main(None) == {"bleu4": 0.5}
    assert fake_group["seen"] == [torch.device("cuda", 1)]
