"""The one training loop every task shares.

AdamW, gradient clipping by norm, AMP on CUDA, validation each epoch, early stopping on a
monitored metric, a checkpoint every epoch written atomically, ``resume``, a JSONL metrics log
and progress bars. A task supplies its batches, its loss and its validation (see :class:`Task`).
Checkpoints are safetensors plus JSON: no pickle.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from captioner.files import atomic_write
from captioner.progress import progress_bar
from captioner.training import distributed
from captioner.training.curves import TrainingCurves

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by all tasks."""

    epochs: int = 20
    lr: float = 4e-4
    weight_decay: float = 1e-4
    grad_clip: float = 5.0
    patience: int = 5  # epochs without improvement before stopping; 0 = never stop early
    schedule: str = "constant"  # or "cosine": lr decays to 0 over ``epochs`` (set per epoch)
    monitor: str = "CIDEr-D"  # validation metric to maximise
    amp: bool = True  # fp16 autocast + GradScaler on CUDA (ignored on CPU)
    seed: int = 0
    progress: bool = True
    tensorboard: str | None = None  # also log the epoch scalars here (needs tensorboard)

    def to_dict(self) -> dict:
        return asdict(self)


SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class RunConfig:
    """What both training entry points (``train_caption``, ``train_activity``) take besides
    their data and model options: the run's optimisation, encoder, place and bookkeeping.

    The field names are those of the keyword arguments they replace.
    """

    train_cfg: TrainConfig | None = None  # None: the task's default (it picks the monitor)
    encoder_name: str = "efficientnet_lite0"
    device: str = "auto"
    resume: bool = False  # continue from <out>/checkpoint
    cache_root: Path | None = None  # feature caches; None: $CAPTIONER_CACHE or ~/.cache/captioner
    workers: int = 2  # decoding processes
    name: str | None = None  # the bundle's name; None: the task's own
    command: str | None = None  # recorded in the manifest


def epoch_lr(cfg: TrainConfig, epoch: int) -> float:
    """The learning rate of 1-based ``epoch``: a function of the epoch alone, so resume agrees."""
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / max(cfg.epochs, 1)))
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {cfg.schedule!r}")


def check_config(cfg: TrainConfig, metric_names: Sequence[str] | None = None) -> None:
    """Refuse, before any work, a schedule the loop does not know and a ``monitor`` the task's
    validation never reports (it would never improve, and the run would keep its last epoch)."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {cfg.schedule!r}")
    if metric_names is not None and cfg.monitor not in metric_names:
        raise ValueError(
            f"monitor {cfg.monitor!r} is not a metric this task's validation reports; "
            f"choose one of: {', '.join(metric_names)}"
        )


class Task(Protocol):
    """What a task gives the loop.

    A task may also declare ``metric_names``, the keys :meth:`validate` returns, so that
    :func:`fit` can check ``monitor`` before the first epoch; without them it checks the
    first validation's results.
    """

    model: nn.Module

    def train_batches(self, epoch: int) -> Iterator[Any]: ...

    def num_batches(self) -> int: ...

    def loss(self, batch: Any, epoch: int) -> torch.Tensor: ...

    def validate(self) -> dict[str, float]: ...


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    best_metrics: dict[str, float]
    best_epoch: int
    history: list[dict]
    stopped_early: bool


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta = {}, {"param_groups": state["param_groups"], "scalars": {}}
    for pid, slots in state["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                meta["scalars"][f"{pid}.{name}"] = value
    return tensors, meta


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> dict[str, list]:
    """The torch RNG states as plain lists (uint8 bytes): the CPU one and, when CUDA is
    available, every device's, so a resumed run draws the same numbers as an unbroken one."""
    state = {"torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, list]) -> None:
    """Undo :func:`rng_state`; CUDA states are restored on as many devices as both runs have."""
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    saved = state.get("cuda")
    if saved and torch.cuda.is_available():
        devices = torch.cuda.device_count()
        if len(saved) != devices:
            log.warning(
                "checkpoint has CUDA RNG states for %d devices, %d here", len(saved), devices
            )
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in saved[:devices]])


def restore_scaler(scaler: torch.amp.GradScaler, state: dict | None) -> None:
    """Load a saved GradScaler state (its scale and growth tracker). A disabled scaler saves
    ``{}``, and loading into a disabled one does nothing."""
    if state and scaler.is_enabled():
        scaler.load_state_dict(state)


class Checkpointer:
    """``<out>/checkpoint/``: model, optimizer and best weights as safetensors, ``state.json`` last.

    ``state.json`` names the files of its epoch and is replaced atomically after they are
    written, so a run killed at any moment resumes from the last complete epoch. It also holds
    the RNG states (:func:`rng_state`) and the GradScaler state: small numbers, no pickle.
    """

    def __init__(self, out_dir: Path):
        self.dir = Path(out_dir) / "checkpoint"
        self.state_path = self.dir / "state.json"

    def exists(self) -> bool:
        return self.state_path.is_file()

    def save(
        self,
        epoch: int,
        model: nn.Module,
        optimizer,
        best_state,
        info: dict,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        files = {
            "model": f"model-{epoch}.safetensors",
            "optimizer": f"optimizer-{epoch}.safetensors",
        }
        sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        atomic_write(self.dir / files["model"], lambda p: save_file(sd, str(p)))
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        atomic_write(self.dir / files["optimizer"], lambda p: save_file(opt_tensors, str(p)))
        if best_state is not None and info.get("best_epoch") == epoch:
            atomic_write(self.dir / "best.safetensors", lambda p: save_file(best_state, str(p)))
        state = {
            "epoch": epoch,
            "files": files,
            "optimizer": opt_meta,
            "rng": rng_state(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            **info,
        }
        atomic_write(self.state_path, lambda p: p.write_text(json.dumps(state)))
        for old in self.dir.glob("*-*.safetensors"):  # earlier epochs' files
            if old.name not in files.values():
                old.unlink(missing_ok=True)

    def load(self) -> tuple[dict, dict[str, torch.Tensor], dict, dict[str, torch.Tensor] | None]:
        state = json.loads(self.state_path.read_text())
        model = load_file(str(self.dir / state["files"]["model"]))
        optim = _unflatten_optimizer(
            load_file(str(self.dir / state["files"]["optimizer"])), state["optimizer"]
        )
        best_path = self.dir / "best.safetensors"
        best = load_file(str(best_path)) if best_path.exists() else None
        return state, model, optim, best


def fit(
    task: Task,
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    device: torch.device,
    resume: bool = False,
) -> FitResult:
    """Train ``task.model`` for ``cfg.epochs`` epochs with validation and early stopping.

    ValueError, before anything is trained or written, for an unknown schedule or a
    ``monitor`` the task's validation does not report (see :func:`check_config`).
    """
    check_config(cfg, getattr(task, "metric_names", None))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = task.model.to(device)
    world = distributed.current()
    if world.distributed:
        # Gradients are averaged across ranks by DDP; the task's loss() must call the wrapper.
        task.net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    ckpt = Checkpointer(out)
    log_path = out / "metrics.jsonl"
    history: list[dict] = []
    best_metric, best_epoch, best_state, best_metrics = -math.inf, 0, None, {}
    start_epoch = 1
    seed_everything(cfg.seed)

    if resume and ckpt.exists():
        state, model_sd, optim_sd, best_state = ckpt.load()
        model.load_state_dict(model_sd)
        optimizer.load_state_dict(optim_sd)
        restore_rng_state(state["rng"])
        restore_scaler(scaler, state.get("scaler"))
        history = state["history"]
        if world.main:  # the log says what the checkpoint says: no row twice, none missing
            rows = "".join(json.dumps(row) + "\n" for row in history)
            atomic_write(log_path, lambda p: p.write_text(rows))
        best_metric, best_epoch = state["best_metric"], state["best_epoch"]
        best_metrics = state["best_metrics"]
        start_epoch = state["epoch"] + 1
        log.info("resuming after epoch %d (best %s %.4f)", state["epoch"], cfg.monitor, best_metric)
    elif resume:
        log.warning("--resume given but %s holds no checkpoint: starting afresh", ckpt.dir)

    stopped_early = False
    # Only rank 0 writes: the log, curves, checkpoints (and, after fit, the bundle).
    curves = TrainingCurves(out, cfg.tensorboard) if world.main else None
    for epoch in range(start_epoch, cfg.epochs + 1):
        if cfg.patience and epoch - best_epoch > cfg.patience and best_epoch > 0:
            stopped_early = True
            break
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr(cfg, epoch)
        model.train()
        t0, total, count = time.perf_counter(), 0.0, 0
        bar = progress_bar(
            task.train_batches(epoch),
            total=task.num_batches(),
            desc=f"epoch {epoch}/{cfg.epochs}",
            enabled=cfg.progress and world.main,
            leave=False,
        )
        for batch in bar:
            with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                loss = task.loss(batch, epoch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            total, count = total + float(loss.detach()), count + 1
            bar.set_postfix(loss=f"{total / count:.3f}", grad=f"{float(grad_norm):.2f}")
        bar.close()
        train_time = time.perf_counter() - t0
        train_loss = distributed.mean_over_ranks(total / max(count, 1))
        model.eval()
        # Rank 0 validates; every rank gets its numbers, so early stopping agrees everywhere.
        metrics = distributed.from_main(task.validate() if world.main else None)
        if cfg.monitor not in metrics:  # a task that declares no metric_names
            raise ValueError(
                f"validation reported no {cfg.monitor!r} (monitor); it reported: "
                f"{', '.join(metrics) or 'nothing'}. Set TrainConfig.monitor to one of them."
            )
        value = metrics[cfg.monitor]
        improved = value > best_metric
        if improved:
            best_metric, best_epoch, best_metrics = value, epoch, dict(metrics)
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_seconds": round(train_time, 2),
            "lr": optimizer.param_groups[0]["lr"],
            **{f"val_{k}": v for k, v in metrics.items()},
            "best": improved,
        }
        history.append(row)
        log.info(
            "epoch %d: loss %.4f, val %s %.4f%s",
            epoch,
            row["train_loss"],
            cfg.monitor,
            value,
            " (best)" if improved else "",
        )
        info = {
            "history": history,
            "best_metric": best_metric,
            "best_epoch": best_epoch,
            "best_metrics": best_metrics,
            "config": cfg.to_dict(),
        }
        if world.main:
            ckpt.save(epoch, model, optimizer, best_state, info, scaler)
        # The row goes to the log only once its checkpoint is on disk: a run killed in between
        # resumes after this epoch and rewrites the log from the checkpoint's history.
        if curves is not None:
            with log_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            curves.epoch(row)
        distributed.barrier()  # no rank runs ahead of the checkpoint it may resume from

    if curves is not None:
        curves.close()
    if best_state is None:  # no epoch ran (e.g. resumed after the last one)
        best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return FitResult(best_state, best_metrics, best_epoch, history, stopped_early)
