"""Caption many images or label many videos: DataLoader workers decode, the model batches,
rows stream to disk.

Every input gets one record, ``{"path", "caption", "log_prob", "confidence", "tags",
"out_of_domain", "domain_distance"}`` (or the activity fields) or ``{"path", "error"}``. Rows
are flushed after every batch, so an interrupted run keeps every finished row, and ``resume``
skips the paths already written (see :mod:`captioner.records`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch.utils.data import Dataset

from captioner.data.images import ImageFiles, expand_paths, image_loader
from captioner.inference import (
    ActivityClassifier,
    Captioner,
    ClipInput,
    bundle_path,
    check_timeline,
    error_record,
    load,
    motion_reader,
    prepare_clip,
)
from captioner.media import IMAGE_SUFFIXES, MediaError
from captioner.progress import progress_bar
from captioner.records import ACTIVITY_CSV_FIELDS, CSV_FIELDS, RecordWriter
from captioner.video import VIDEO_SUFFIXES, VideoLimits

if TYPE_CHECKING:
    from captioner.shard import Shard


class Engine(Protocol):
    """Runs a :class:`FolderJob` somewhere else than this process's DataLoader (a Ray
    cluster, ...), writing the same rows; :func:`run_job` is the local one."""

    def run(self, job: FolderJob, writer: RecordWriter, run: RunOptions) -> tuple[int, int]:
        """Write one row per planned input to ``writer``; -> (ok, failed)."""
        ...


log = logging.getLogger(__name__)


NO_MATCH = "no such file, or no matching files in this folder / pattern"


@dataclass(frozen=True)
class RunOptions:
    """How a folder job runs, the same for images and videos: the keywords that
    :func:`caption_files` and :func:`label_videos` take besides their model's options."""

    out: str | os.PathLike | None = None  # .jsonl or .csv; None: JSON lines on stdout
    batch_size: int | None = None  # items per model batch; None: the command's own
    workers: int = 2  # decoding processes (0: in this process)
    device: str = "auto"
    resume: bool = False  # skip the inputs already in ``out`` and append to it
    progress: bool = True
    shard: Shard | None = None  # only this shard's contiguous block of the inputs
    engine: Engine | None = None  # runs the job elsewhere (e.g. RayEngine); None: here

    @classmethod
    def of(cls, keywords: dict[str, Any], batch_size: int) -> RunOptions:
        """The options from a job's keywords (TypeError naming an unknown one)."""
        unknown = sorted(set(keywords) - set(cls.__dataclass_fields__))
        if unknown:
            known = ", ".join(cls.__dataclass_fields__)
            raise TypeError(f"unknown folder-job option(s) {unknown}; the options are {known}")
        run = cls(**keywords)
        return run if run.batch_size is not None else replace(run, batch_size=batch_size)


@dataclass(frozen=True)
class FolderJob:
    """What a folder job does: which inputs, how workers read them (``make_dataset``), and
    what the model does with a batch of the readable ones (``infer(items, paths)``, one
    record per item). ``desc`` names the work on the progress bar; the log's last line says
    ``"{done} {ok} {noun}, {failed} failed"``."""

    inputs: Sequence[str]
    suffixes: frozenset[str]
    #: paths -> a Dataset of decoded items; holds no model, so it can travel to other
    #: processes (an engine's decoding tasks)
    make_dataset: Callable[[list[Path]], Dataset]
    infer: Callable[[Any, list[Path]], list[dict]]
    desc: str = "working"
    done: str = "did"
    noun: str = "files"
    csv_fields: Sequence[str] = CSV_FIELDS
    #: How another process builds the same job: ``(task, keywords of job_from_spec)``.
    spec: tuple[str, dict[str, Any]] = ("", {})


def plan_inputs(job: FolderJob, writer: RecordWriter, run: RunOptions) -> tuple[list[Path], int]:
    """Expand the job's inputs, write a row for each that matched nothing, skip the finished
    ones. -> (the paths still to do, how many failed already)."""
    paths, unmatched = expand_paths(job.inputs, job.suffixes)
    if run.shard is not None:
        paths, unmatched = run.shard.select(paths, unmatched)
    missing = [p for p in unmatched if not writer.is_done(p)]
    for p in missing:  # said on stderr too, not only as a row in the output file
        log.warning("%s: %s", p, NO_MATCH)
    writer.write(error_record(p, NO_MATCH) for p in missing)
    todo = [p for p in paths if not writer.is_done(p)]
    if writer.done:
        log.info("resuming: %d of %d inputs already done", len(paths) - len(todo), len(paths))
    return todo, len(unmatched)


def batch_rows(job: FolderJob, paths: Sequence[Path], batch: dict) -> list[dict]:
    """One decoded batch (``index``, ``image``, ``error`` as the job's dataset gives them,
    ``index`` into ``paths``) -> one row per item, in order: the model's record or the
    item's error."""
    good = [j for j, e in enumerate(batch["error"]) if not e]
    items = [paths[batch["index"][j]] for j in good]
    results = iter(job.infer(_take(batch["image"], good), items) if good else [])
    rows = []
    for j, idx in enumerate(batch["index"]):
        if batch["error"][j]:
            rows.append(error_record(paths[idx], batch["error"][j]))
        else:
            rows.append({"path": str(paths[idx]), **next(results)})
    return rows


def run_job(
    job: FolderJob, writer: RecordWriter, run: RunOptions, pin_memory: bool = False
) -> tuple[int, int]:
    """The loop both commands share: expand inputs, skip finished ones, decode in workers,
    infer on the readable items of each batch, write one row per input. -> (ok, failed)."""
    todo, failed = plan_inputs(job, writer, run)
    dataset = job.make_dataset(todo)
    collate = getattr(dataset, "collate", None)  # datasets of unstackable items bring their own
    batch_size = run.batch_size or 1
    loader = image_loader(dataset, batch_size, run.workers, pin_memory, collate_fn=collate)
    batches = iter(loader)  # named, so on Ctrl-C its workers are stopped before it is freed
    with _ctrl_c_reaches_workers():
        rows = (batch_rows(job, todo, batch) for batch in batches)
        return write_rows(job, writer, run, rows, len(todo), failed)


def write_rows(
    job: FolderJob,
    writer: RecordWriter,
    run: RunOptions,
    batches: Iterable[list[dict]],
    total: int,
    failed: int = 0,
) -> tuple[int, int]:
    """Write each batch of rows as it comes, with a progress bar over ``total`` inputs.
    -> (ok, failed): rows with an ``error`` are failures, added to ``failed``."""
    ok = 0
    with progress_bar(total=total, desc=job.desc, unit="file", enabled=run.progress) as bar:
        for rows in batches:
            bad = sum("error" in row for row in rows)
            ok, failed = ok + len(rows) - bad, failed + bad
            writer.write(rows)
            bar.update(len(rows))
    return ok, failed


def _run(job: FolderJob, run: RunOptions, device: torch.device) -> int:
    """Open the output (truncating it: only now that the model is loaded), run here or on the
    run's engine, report. -> 0, or 1 when no input could be done."""
    writer = RecordWriter(run.out, resume=run.resume, csv_fields=job.csv_fields)
    try:
        if run.engine is not None:
            ok, failed = run.engine.run(job, writer, run)
        else:
            ok, failed = run_job(job, writer, run, pin_memory=device.type == "cuda")
    finally:
        writer.close()
    where = f" -> {run.out}" if run.out else ""
    log.info("%s %d %s, %d failed%s", job.done, ok, job.noun, failed, where)
    return 1 if failed and not ok and not writer.done else 0


@contextlib.contextmanager
def _ctrl_c_reaches_workers() -> Iterator[None]:
    """On Ctrl-C, make sure the loader's worker processes got it too, so each stops in the
    middle of its file instead of the loader waiting up to 5 s for it to finish. A terminal
    sends SIGINT to them all; ``kill -INT`` reaches this process only: it is passed on to the
    workers still running after a moment (a second SIGINT to a worker already stopping would
    make it fail)."""
    try:
        yield
    except KeyboardInterrupt:
        running = [c for c in multiprocessing.active_children() if c.daemon]
        deadline = time.monotonic() + 0.2
        while running and (left := deadline - time.monotonic()) > 0:
            multiprocessing.connection.wait([w.sentinel for w in running], timeout=left)
            running = [w for w in running if w.is_alive()]
        for worker in running:
            if worker.pid is not None:
                os.kill(worker.pid, signal.SIGINT)
        raise


def _take(images: torch.Tensor | list, rows: list[int]) -> torch.Tensor | list:
    """The readable rows of a batch: a stacked tensor's rows, or a list's items."""
    return images[rows] if isinstance(images, torch.Tensor) else [images[j] for j in rows]


def caption_files(
    inputs: Sequence[str],
    bundle: str | os.PathLike | None = None,
    *,
    beam_size: int | None = None,
    n_best: int = 1,
    max_len: int | None = None,
    model: Captioner | None = None,
    **run: Any,
) -> int:
    """Caption every image under ``inputs``; returns 0, or 1 when no input could be captioned.

    ``bundle``: a model name or a bundle folder (default: the caption model). ``run``: the
    :class:`RunOptions` keywords (``out``, ``batch_size`` (16), ``workers``,
    ``device``, ``resume``, ``progress``, ``shard``, ``engine``).
    """
    opts = RunOptions.of(run, batch_size=16)
    cap = model or _caption_model(bundle, opts.device)
    job = caption_job(cap, inputs, beam_size=beam_size, n_best=n_best, max_len=max_len)
    if model is None:  # an engine's workers load the same bundle
        job = replace(job, spec=("caption", {**job.spec[1], "bundle": _folder(bundle, "caption")}))
    return _run(job, opts, cap.device)


def _caption_model(bundle: str | os.PathLike | None, device: str) -> Captioner:
    cap = load(bundle_path(bundle, "caption"), device=device)
    if not isinstance(cap, Captioner):
        raise ValueError(f"{bundle} is not a caption bundle (task: activity)")
    return cap


def _folder(bundle: str | os.PathLike | None, task: str) -> str:
    return os.fspath(bundle_path(bundle, task).resolve())


def caption_job(
    cap: Captioner,
    inputs: Sequence[str] = (),
    *,
    beam_size: int | None = None,
    n_best: int = 1,
    max_len: int | None = None,
) -> FolderJob:
    """What captioning a folder does with ``cap`` (bad search options fail here, before any
    work)."""
    options = {"beam_size": beam_size, "n_best": n_best, "max_len": max_len}
    cap.search_config(**options).validate(len(cap.vocab))

    def infer(images: torch.Tensor, _paths: list[Path]) -> list[dict]:
        # Slots are in JSONL rows only: the CSV columns stay those of CSV_FIELDS.
        results = cap.caption_tensors(images, **options)
        return [res.to_record(alternatives=n_best > 1) for res in results]

    preprocess, limits = cap.preprocess, cap.limits  # what reading needs, not the model

    def dataset(todo: list[Path]) -> ImageFiles:
        return ImageFiles(todo, preprocess, limits)

    # n-best alternatives get their own CSV column (JSON text) rather than being dropped.
    fields = (*CSV_FIELDS, "alternatives") if n_best > 1 else CSV_FIELDS
    spec = ("caption", {"bundle": None, **options})  # bundle: set by whoever loaded it
    return FolderJob(
        inputs, IMAGE_SUFFIXES, dataset, infer, "captioning", "captioned", "images", fields, spec
    )


def job_from_spec(task: str, options: dict[str, Any], device: str = "auto") -> FolderJob:
    """The job a :attr:`FolderJob.spec` describes, with its model loaded here (an engine's
    worker builds the driver's job this way)."""
    options = dict(options)
    bundle = options.pop("bundle", None)
    if bundle is None:
        raise ValueError(
            "this job's model was passed in memory (model=...): an engine's workers need a "
            "bundle folder to load, pass bundle=PATH instead"
        )
    if task == "caption":
        return caption_job(_caption_model(bundle, device), **options)
    if task == "activity":
        motion = options.pop("motion", "default")
        clf = _activity_model(bundle, device, motion)
        return activity_job(clf, **options)
    raise ValueError(f"unknown job task {task!r}: 'caption' or 'activity'")


class PreparedVideos(Dataset):
    """Videos -> :class:`~captioner.inference.ClipInput` in loader workers, each file read once
    for its whole-clip sample and (with ``timeline``) its windows. A timeline that cannot be
    made (e.g. too many windows) still leaves the whole-video label, with ``timeline_error``."""

    def __init__(
        self,
        paths: list[Path],
        num_frames: int,
        size: int,
        limits: VideoLimits,
        timeline: bool = False,
        window: float = 2.0,
        stride: float = 1.0,
        describe: bool = False,
    ):
        self.paths, self.num_frames, self.size, self.limits = paths, num_frames, size, limits
        self.timeline, self.window, self.stride = timeline, window, stride
        self.describe = describe

    def __len__(self) -> int:
        return len(self.paths)

    def _prepare(self, index: int, timeline: bool) -> ClipInput:
        return prepare_clip(
            self.paths[index],
            self.num_frames,
            self.size,
            self.limits,
            timeline=timeline,
            window=self.window,
            stride=self.stride,
            describe=self.describe,
        )

    def __getitem__(self, index: int) -> dict:
        """``image``: ``(ClipInput, timeline error or "")``; ``error``: why a file is unreadable."""
        item: dict[str, Any] = {"index": index, "image": None, "error": ""}
        try:
            try:
                item["image"] = (self._prepare(index, self.timeline), "")
            except MediaError as exc:
                if not self.timeline:
                    raise
                item["image"] = (self._prepare(index, False), str(exc))  # the clip may still read
        except MediaError as exc:
            item["error"] = str(exc)
        except Exception as exc:  # one corrupt file must not kill a loader worker
            item["error"] = f"could not read video: {type(exc).__name__}: {exc}"
        return item

    @staticmethod
    def collate(items: list[dict]) -> dict:
        """Keep the prepared videos as a list: their frame counts differ."""
        return {key: [it[key] for it in items] for key in items[0]} if items else {}


def label_videos(
    inputs: Sequence[str],
    bundle: str | os.PathLike | None = None,
    *,
    top_k: int = 5,
    timeline: bool = False,
    window: float | None = None,
    stride: float | None = None,
    model: ActivityClassifier | None = None,
    motion: str | os.PathLike | None = "default",
    **run: Any,
) -> int:
    """Label every video under ``inputs``; returns 0, or 1 when no input could be labelled.

    ``motion``: what reads the description's motion (a motion bundle folder, ``"default"``
    for the shipped one, None or ``"geometry"`` for the geometry rule; ignored with ``model``).
    Records: ``{"path", "label", "score", "top_k"}`` (+ ``"timeline"``) or ``{"path", "error"}``.
    Videos are decoded with the classifier's own limits, as the Python API and the service do.
    ``run``: the :class:`RunOptions` keywords (``batch_size`` 4 videos by default).
    """
    opts = RunOptions.of(run, batch_size=4)
    if top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {top_k}")
    if timeline:  # refuse a bad window / stride before any work
        check_timeline(window, stride)
    clf = model or _activity_model(bundle, opts.device, motion)
    job = activity_job(clf, inputs, top_k=top_k, timeline=timeline, window=window, stride=stride)
    if model is None:
        where = {"bundle": _folder(bundle, "activity"), "motion": motion}
        job = replace(job, spec=("activity", {**job.spec[1], **where}))
    return _run(job, opts, clf.device)


def _activity_model(
    bundle: str | os.PathLike | None, device: str, motion: str | os.PathLike | None
) -> ActivityClassifier:
    clf = load(bundle_path(bundle, "activity"), device=device)
    if not isinstance(clf, ActivityClassifier):
        raise ValueError(f"{bundle} is not an activity bundle (task: caption)")
    if motion != "default":
        clf.motion = motion_reader(None if motion == "geometry" else motion)
    return clf


def activity_job(
    clf: ActivityClassifier,
    inputs: Sequence[str] = (),
    *,
    top_k: int = 5,
    timeline: bool = False,
    window: float | None = None,
    stride: float | None = None,
) -> FolderJob:
    """What labelling videos does with ``clf``."""
    asked = {"top_k": top_k, "timeline": timeline, "window": window, "stride": stride}
    if timeline:
        window, stride = clf.timeline_window(window, stride)

    def infer(items: list[tuple[ClipInput, str]], _paths: list[Path]) -> list[dict]:
        results = clf.classify_inputs([clip for clip, _ in items], top_k)
        rows = [r.to_record() for r in results]
        for row, (_, timeline_error) in zip(rows, items, strict=True):
            if timeline_error:
                row["timeline_error"] = timeline_error
        return rows

    reading = (clf.num_frames, clf.size, clf.limits, timeline, window, stride)
    describe = getattr(clf, "describe", False)

    def dataset(todo: list[Path]) -> PreparedVideos:  # holds what reading needs, not the model
        return PreparedVideos(todo, *reading, describe)

    spec = ("activity", {"bundle": None, **asked})  # bundle: set by whoever loaded it
    return FolderJob(
        inputs, VIDEO_SUFFIXES, dataset, infer, "labelling", "labelled", "videos",
        ACTIVITY_CSV_FIELDS, spec,
    )  # fmt: skip
