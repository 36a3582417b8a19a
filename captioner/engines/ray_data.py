"""Folder jobs on Ray Data: the same rows as the local job, from an actor pool on a cluster.

:class:`CaptionPredictor` and :class:`ActivityPredictor` are callable classes for
``Dataset.map_batches``: each actor loads its bundle once, then turns a batch of rows with a
``path`` column into rows with ``path`` and ``record`` (the local job's row as JSON text),
through the very same job code as ``captioner caption`` / ``captioner activity``
(:func:`captioner.batch.job_from_spec`: the same decoding, limits, search and records)::

    import ray
    from captioner.engines.ray_data import CaptionPredictor

    ds = ray.data.from_items([{"path": p} for p in paths])
    kwargs = {"bundle": "weights/caption-default"}
    rows = ds.map_batches(CaptionPredictor, fn_constructor_kwargs=kwargs,
                          batch_size=16, concurrency=2, num_gpus=0)

:class:`RayEngine` runs a whole folder job that way (``--engine ray``): the driver expands the
inputs and honours ``--resume`` as the local job does, Ray places the actors, and the rows come
back in input order to the same writer. Ray is the ``[ray]`` extra; this module imports it
only when a job starts.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from captioner.batch import (
    FolderJob,
    RunOptions,
    batch_rows,
    job_from_spec,
    plan_inputs,
    write_rows,
)
from captioner.data.images import collate as stack_images
from captioner.records import RecordWriter

__all__ = [
    "ActivityPredictor",
    "CaptionPredictor",
    "JobPredictor",
    "RayEngine",
    "decode_batch",
    "require_ray",
]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'captioner[ray]'"
#: Logical CPUs a decoding task asks of Ray (it waits on files too: several share a core).
_DECODE_CPUS = 0.25


def require_ray() -> Any:
    """The ``ray`` module, or an ImportError that says which extra to install."""
    try:
        import ray
        import ray.data  # Ray Data is a package of its own
    except ImportError as exc:
        raise ImportError(f"--engine ray needs Ray Data: {INSTALL_HINT}") from exc
    return ray


class JobPredictor:
    """One actor's model and job. Takes ``{"path": [...]}`` (it then reads the files itself),
    or what :func:`decode_batch` made of them (``payload`` and ``error`` columns too), and
    returns ``{"path", "record"}`` (the local job's row as JSON text)."""

    def __init__(
        self, task: str, options: dict[str, Any], device: str = "auto", threads: int | None = None
    ):
        if threads:  # Ray gives an actor of one CPU one thread; the encoder follows torch's
            import torch

            torch.set_num_threads(threads)
        self.job: FolderJob = job_from_spec(task, options, device)
        self._collate = getattr(self.job.make_dataset([]), "collate", None) or stack_images

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [Path(str(p)) for p in batch["path"]]
        if "payload" in batch:
            items = [_unpack(k, batch["payload"][k], batch["error"][k]) for k in range(len(paths))]
        else:
            dataset = self.job.make_dataset(paths)
            items = [dataset[i] for i in range(len(paths))]
        rows = batch_rows(self.job, paths, self._collate(items))
        records = [json.dumps(row, ensure_ascii=False) for row in rows]
        return {"path": np.array([str(p) for p in paths]), "record": np.array(records)}


def decode_batch(batch: dict[str, np.ndarray], make_dataset: Any) -> dict[str, np.ndarray]:
    """A Ray task's work: read and decode a batch of paths with the job's own dataset (what
    the local job's loader workers do), each item packed for the model's actors."""
    paths = [Path(str(p)) for p in batch["path"]]
    dataset = make_dataset(paths)
    items = [dataset[i] for i in range(len(paths))]
    # an unreadable item keeps its dataset's placeholder: the collation stacks it as usual
    return {
        "path": batch["path"],
        "error": np.array([it["error"] for it in items], dtype=object),
        "payload": np.array([pickle.dumps(it["image"]) for it in items], dtype=object),
    }


def _unpack(index: int, payload: bytes, error: str) -> dict[str, Any]:
    # made by decode_batch for this same job and carried by Ray's object store; never a file
    return {"index": index, "image": pickle.loads(payload), "error": str(error)}


class CaptionPredictor(JobPredictor):
    """Caption the images named in a batch's ``path`` column (one actor, one model)."""

    def __init__(
        self,
        bundle: str | os.PathLike | None = None,
        device: str = "auto",
        beam_size: int | None = None,
        n_best: int = 1,
        max_len: int | None = None,
    ):
        from captioner.inference import bundle_path

        folder = os.fspath(bundle_path(bundle, "caption"))
        options = {"bundle": folder, "beam_size": beam_size, "n_best": n_best, "max_len": max_len}
        super().__init__("caption", options, device)


class ActivityPredictor(JobPredictor):
    """Label the videos named in a batch's ``path`` column (one actor, one model)."""

    def __init__(
        self,
        bundle: str | os.PathLike | None = None,
        device: str = "auto",
        top_k: int = 5,
        timeline: bool = False,
        window: float | None = None,
        stride: float | None = None,
        motion: str | None = "default",
    ):
        from captioner.inference import bundle_path

        options = {"bundle": os.fspath(bundle_path(bundle, "activity")), "top_k": top_k}
        options |= {"timeline": timeline, "window": window, "stride": stride, "motion": motion}
        super().__init__("activity", options, device)


def _connect(ray: Any, address: str | None) -> None:
    """Join the cluster at ``address`` (None: start a local Ray); a clear error if it fails."""
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if logging.getLogger().level >= logging.WARNING:  # -q: Ray Data's INFO lines too
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        if address is None:
            ray.init(include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise ValueError(
            f"could not start or reach {where}: {' '.join(str(exc).split())[:300]} "
            "(check --address / $RAY_ADDRESS, and the cluster's auth token if it uses one)"
        ) from exc


def _answers(address: str, timeout_s: float = 10.0) -> None:
    """Fail in seconds when nothing listens at a ``host:port`` address (Ray itself retries
    for minutes); ``auto`` and addresses without a port are left to Ray."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ValueError(
            f"nothing answers at the Ray address {address} ({exc}): start the cluster "
            "(ray start --head) or fix --address / $RAY_ADDRESS"
        ) from exc


@dataclass(frozen=True)
class RayEngine:
    """Run folder jobs on Ray Data: files are decoded in Ray tasks (at most the job's
    ``workers`` at once; with 0, in the model's actors), ``concurrency`` actors each hold one
    model with ``num_gpus`` / ``num_cpus``; ``address``: a running cluster (default
    ``$RAY_ADDRESS``, else a local Ray started for the job)."""

    address: str | None = None
    concurrency: int = 1
    num_gpus: float = 0.0
    num_cpus: float | None = None
    threads: int | None = None  # torch threads per CPU actor (default: the cores / concurrency)

    def check(self) -> str | None:
        """The cluster address to join (None: a local Ray), ValueError at once if nothing
        answers there: before any model loads or any output file is opened."""
        address = self.address or os.environ.get("RAY_ADDRESS")
        if address is not None:
            _answers(address)
        return address

    def run(self, job: FolderJob, writer: RecordWriter, run: RunOptions) -> tuple[int, int]:
        """Plan the inputs here, infer on the actor pool, write the rows in input order."""
        ray = require_ray()
        task, options = job.spec
        if not task or options.get("bundle") is None:
            raise ValueError("--engine ray needs a bundle folder its workers can load")
        address = self.check()
        todo, failed = plan_inputs(job, writer, run)
        if not todo:
            return 0, failed
        if not ray.is_initialized():
            _connect(ray, address)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # rows in input order, as the local job
        ctx.enable_progress_bars = False  # ours counts files
        device = "cuda" if self.num_gpus > 0 else "cpu" if run.device == "auto" else run.device
        batch_size = run.batch_size or 1
        # a block per batch: Ray Data gives a small listing one block, hence one busy actor
        blocks = max(1, math.ceil(len(todo) / batch_size))
        ds = ray.data.from_items([{"path": str(p)} for p in todo], override_num_blocks=blocks)
        if run.workers:  # decode in Ray tasks, as the local job decodes in its workers
            ds = ds.map_batches(
                decode_batch,
                fn_kwargs={"make_dataset": job.make_dataset},
                batch_size=batch_size,
                compute=ray.data.TaskPoolStrategy(size=run.workers),
                num_cpus=_DECODE_CPUS,
            )
        cpus = self.num_cpus
        if cpus is None:  # what the decoding tasks leave, shared; else Ray can deadlock
            free = ray.cluster_resources().get("CPU", 1.0) - _DECODE_CPUS * run.workers
            # and at most what leaves a decoding task room on a one-CPU node beside an actor
            cpus = max(0.1, min(1.0 - _DECODE_CPUS, free / self.concurrency))
        resources: dict[str, Any] = {"num_gpus": self.num_gpus, "num_cpus": cpus}
        threads = self.threads or (
            None if device != "cpu" else max(1, (os.cpu_count() or 1) // self.concurrency)
        )
        predictor = {"task": task, "options": options, "device": device, "threads": threads}
        out = ds.map_batches(
            JobPredictor,
            fn_constructor_kwargs=predictor,
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=self.concurrency),
            **resources,
        )
        batches = out.iter_batches(batch_size=None, batch_format="numpy")
        rows = ([json.loads(r) for r in batch["record"]] for batch in batches)
        return write_rows(job, writer, run, rows, len(todo), failed)
