"""Exact resume: RNG states (CPU and CUDA), the GradScaler and the metrics log survive a kill."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import captioner.training.loop as loop
from captioner.training.loop import Checkpointer, TrainConfig, fit

CFG = TrainConfig(epochs=3, progress=False, monitor="score", patience=0)


class NoiseTask:
    """A linear model fitted to targets drawn from the global RNG: a resumed run only matches
    an unbroken one if the RNG state came back exactly."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = nn.Linear(4, 1)

    def train_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(3):
            x = torch.randn(8, 4)
            yield x, x.sum(1, keepdim=True) + torch.randn(8, 1)

    def num_batches(self) -> int:
        return 3

    def loss(self, batch, epoch: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.model(x), y)

    def validate(self) -> dict[str, float]:
        return {"score": float(torch.rand(()))}  # also draws from the RNG


class Killed(Exception):
    """Stands for the process dying."""


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def run(out: Path, resume: bool = False) -> loop.FitResult:
    return fit(NoiseTask(), CFG, out, torch.device("cpu"), resume=resume)


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_run_killed_around_its_checkpoint_resumes_without_a_duplicate_row(
    tmp_path, monkeypatch, when
) -> None:
    # "before": the checkpoint of epoch 2 never reaches the disk; "after": it does, but the
    # process dies before anything else happens. Either way each epoch is logged exactly once.
    straight = run(tmp_path / "straight")
    real_save = Checkpointer.save

    def dies_at_epoch_2(self, epoch, *args, **kwargs):
        if epoch == 2 and when == "before":
            raise Killed
        real_save(self, epoch, *args, **kwargs)
        if epoch == 2 and when == "after":
            raise Killed

    with monkeypatch.context() as m:
        m.setattr(Checkpointer, "save", dies_at_epoch_2)
        with pytest.raises(Killed):
            run(tmp_path / "killed")
    resumed = run(tmp_path / "killed", resume=True)
    rows = read_log(tmp_path / "killed")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    # and the resumed run is the unbroken one, number for number
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in straight.history]
    assert rows == [json.loads(json.dumps(r)) for r in resumed.history]


def test_grad_scaler_state_round_trips_through_the_checkpoint(tmp_path) -> None:
    model = nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)
    scaler.load_state_dict(
        {
            "scale": 256.0,
            "growth_factor": 3.0,
            "backoff_factor": 0.25,
            "growth_interval": 7,
            "_growth_tracker": 5,
        }
    )
    ckpt = Checkpointer(tmp_path)
    ckpt.save(1, model, optimizer, None, {"history": []}, scaler)
    state, *_ = ckpt.load()
    fresh = torch.amp.GradScaler("cpu")
    loop.restore_scaler(fresh, state["scaler"])
    assert fresh.state_dict() == scaler.state_dict()
    assert fresh.get_scale() == 256.0

    # a disabled scaler (CPU training) saves nothing and loading into one is a no-op
    off = torch.amp.GradScaler("cpu", enabled=False)
    ckpt.save(2, model, optimizer, None, {"history": []}, off)
    state, *_ = ckpt.load()
    assert state["scaler"] == {}
    loop.restore_scaler(off, state["scaler"])
    loop.restore_scaler(torch.amp.GradScaler("cpu", enabled=False), {"scale": 8.0})


class FakeCuda:
    """Two fake CUDA devices whose RNG states are plain byte tensors."""

    def __init__(self) -> None:
        self.states = [
            torch.tensor([1, 2, 3], dtype=torch.uint8),
            torch.tensor([9, 8, 7], dtype=torch.uint8),
        ]
        self.restored: list[torch.Tensor] | None = None

    def install(self, monkeypatch, devices: int = 2) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: devices)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [*self.states])
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", self.set_all)

    def set_all(self, states) -> None:
        self.restored = list(states)


def test_cuda_rng_states_of_every_device_are_saved_and_restored(tmp_path, monkeypatch) -> None:
    cuda = FakeCuda()
    model = nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters())
    ckpt = Checkpointer(tmp_path)
    with monkeypatch.context() as m:
        cuda.install(m)
        ckpt.save(1, model, optimizer, None, {"history": []})
    state = json.loads(ckpt.state_path.read_text())
    assert state["rng"]["cuda"] == [[1, 2, 3], [9, 8, 7]]

    with monkeypatch.context() as m:
        cuda.install(m)
        loop.restore_rng_state(state["rng"])
    assert cuda.restored is not None
    assert len(cuda.restored) == 2
    for got, want in zip(cuda.restored, cuda.states, strict=True):
        assert got.dtype == torch.uint8
        assert got.tolist() == want.tolist()

    with monkeypatch.context() as m:  # fewer devices on the resuming machine: the first ones
        cuda.install(m, devices=1)
        loop.restore_rng_state(state["rng"])
    assert [t.tolist() for t in cuda.restored] == [[1, 2, 3]]

    cuda.restored = None  # and a CPU-only machine leaves CUDA alone
    loop.restore_rng_state(state["rng"])
    assert cuda.restored is None


def test_fit_saves_and_restores_rng_and_scaler_through_the_checkpoint(tmp_path, monkeypatch):
    calls: dict[str, list] = {"rng": [], "scaler": []}
    real_rng, real_scaler = loop.restore_rng_state, loop.restore_scaler
    monkeypatch.setattr(loop, "restore_rng_state", lambda s: (calls["rng"].append(s), real_rng(s)))
    monkeypatch.setattr(
        loop, "restore_scaler", lambda sc, s: (calls["scaler"].append(s), real_scaler(sc, s))
    )
    cpu = torch.device("cpu")
    fit(NoiseTask(), TrainConfig(epochs=1, progress=False, monitor="score"), tmp_path, cpu)
    saved = json.loads(Checkpointer(tmp_path).state_path.read_text())
    assert calls == {"rng": [], "scaler": []}
    fit(NoiseTask(), TrainConfig(epochs=2, progress=False, monitor="score"), tmp_path, cpu, True)
    assert calls == {"rng": [saved["rng"]], "scaler": [saved["scaler"]]}


def test_checkpoint_files_get_the_mode_of_a_plain_open(tmp_path) -> None:
    # safetensors' save_file alone makes 0600 files; the checkpoint is shared like the bundle.
    import stat

    from captioner.files import default_file_mode

    run(tmp_path)
    files = [*(tmp_path / "checkpoint").iterdir(), tmp_path / "metrics.jsonl"]
    assert {p.name for p in files} >= {"state.json", "best.safetensors", "model-3.safetensors"}
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {
        p.name: default_file_mode() for p in files
    }
