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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    make_dataset: Callable[[list[Path]], Dataset]
    infer: Callable[[Any, list[Path]], list[dict]]
    desc: str = "working"
    done: str = "did"
    noun: str = "files"


def run_job(
    job: FolderJob, writer: RecordWriter, run: RunOptions, pin_memory: bool = False
) -> tuple[int, int]:
    """The loop both commands share: expand inputs, skip finished ones, decode in workers,
    infer on the readable items of each batch, write one row per input. -> (ok, failed)."""
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
    ok, failed = 0, len(unmatched)
    dataset = job.make_dataset(todo)
    collate = getattr(dataset, "collate", None)  # datasets of unstackable items bring their own
    batch_size = run.batch_size or 1
    loader = image_loader(dataset, batch_size, run.workers, pin_memory, collate_fn=collate)
    batches = iter(loader)  # named, so on Ctrl-C its workers are stopped before it is freed
    with (
        progress_bar(total=len(todo), desc=job.desc, unit="file", enabled=run.progress) as bar,
        _ctrl_c_reaches_workers(),
    ):
        for batch in batches:
            good = [j for j, e in enumerate(batch["error"]) if not e]
            items = [todo[batch["index"][j]] for j in good]
            results = iter(job.infer(_take(batch["image"], good), items) if good else [])
            rows = []
            for j, idx in enumerate(batch["index"]):
                if batch["error"][j]:
                    rows.append(error_record(todo[idx], batch["error"][j]))
                    failed += 1
                else:
                    rows.append({"path": str(todo[idx]), **next(results)})
                    ok += 1
            writer.write(rows)
            bar.update(len(rows))
    return ok, failed


def _run(job: FolderJob, run: RunOptions, csv_fields: Sequence[str], device: torch.device) -> int:
    """Open the output (truncating it: only now that the model is loaded), run, report.
    -> 0, or 1 when no input could be done."""
    writer = RecordWriter(run.out, resume=run.resume, csv_fields=csv_fields)
    try:
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
    ``device``, ``resume``, ``progress``, ``shard``).
    """
    opts = RunOptions.of(run, batch_size=16)
    cap = model or load(bundle, device=opts.device)
    if not isinstance(cap, Captioner):
        raise ValueError(f"{bundle} is not a caption bundle (task: activity)")
    options = {"beam_size": beam_size, "n_best": n_best, "max_len": max_len}
    cap.search_config(**options).validate(len(cap.vocab))  # bad options fail before any work

    def infer(images: torch.Tensor, _paths: list[Path]) -> list[dict]:
        # Slots are in JSONL rows only: the CSV columns stay those of CSV_FIELDS.
        results = cap.caption_tensors(images, **options)
        return [res.to_record(alternatives=n_best > 1) for res in results]

    def dataset(todo: list[Path]) -> ImageFiles:
        return ImageFiles(todo, cap.preprocess, cap.limits)

    # n-best alternatives get their own CSV column (JSON text) rather than being dropped.
    fields = (*CSV_FIELDS, "alternatives") if n_best > 1 else CSV_FIELDS
    job = FolderJob(inputs, IMAGE_SUFFIXES, dataset, infer, "captioning", "captioned", "images")
    return _run(job, opts, fields, cap.device)


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
    clf = model or load(bundle_path(bundle, "activity"), device=opts.device)
    if not isinstance(clf, ActivityClassifier):
        raise ValueError(f"{bundle} is not an activity bundle (task: caption)")
    if model is None and motion != "default":
        clf.motion = motion_reader(None if motion == "geometry" else motion)
    if timeline:
        window, stride = clf.timeline_window(window, stride)

    def infer(items: list[tuple[ClipInput, str]], _paths: list[Path]) -> list[dict]:
        results = clf.classify_inputs([clip for clip, _ in items], top_k)
        rows = [r.to_record() for r in results]
        for row, (_, timeline_error) in zip(rows, items, strict=True):
            if timeline_error:
                row["timeline_error"] = timeline_error
        return rows

    def dataset(todo: list[Path]) -> PreparedVideos:
        return PreparedVideos(
            todo,
            clf.num_frames,
            clf.size,
            clf.limits,
            timeline,
            window,
            stride,
            getattr(clf, "describe", False),
        )

    job = FolderJob(inputs, VIDEO_SUFFIXES, dataset, infer, "labelling", "labelled", "videos")
    return _run(job, opts, ACTIVITY_CSV_FIELDS, clf.device)
