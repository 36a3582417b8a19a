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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from captioner.data.images import ImageFiles, expand_paths, image_loader
from captioner.inference import (
    ActivityClassifier,
    Captioner,
    ClipInput,
    default_bundle_dir,
    load,
    prepare_clip,
)
from captioner.media import IMAGE_SUFFIXES, MediaError
from captioner.progress import progress_bar
from captioner.records import ACTIVITY_CSV_FIELDS, CSV_FIELDS, RecordWriter
from captioner.video import VIDEO_SUFFIXES, VideoLimits, sliding_windows

if TYPE_CHECKING:
    from captioner.shard import Shard

log = logging.getLogger(__name__)


def run_job(
    inputs: Sequence[str],
    suffixes: frozenset[str],
    make_dataset: Callable[[list[Path]], Dataset],
    infer: Callable[[Any, list[Path]], list[dict]],
    writer: RecordWriter,
    batch_size: int,
    workers: int,
    pin_memory: bool,
    desc: str,
    progress: bool,
    shard: Shard | None = None,
) -> tuple[int, int]:
    """The loop both commands share: expand inputs, skip finished ones, decode in workers,
    infer on the readable items of each batch, write one row per input. -> (ok, failed).
    With ``shard``, only that shard's contiguous block of the inputs is done."""
    paths, unmatched = expand_paths(inputs, suffixes)
    if shard is not None:
        paths, unmatched = shard.select(paths, unmatched)
    missing = [p for p in unmatched if p not in writer.done]
    for p in missing:  # said on stderr too, not only as a row in the output file
        log.warning("%s: no such file, or no matching files in this folder / pattern", p)
    writer.write(
        {"path": p, "error": "no such file, or no matching files in this folder / pattern"}
        for p in missing
    )
    todo = [p for p in paths if str(p) not in writer.done]
    if writer.done:
        log.info("resuming: %d of %d inputs already done", len(paths) - len(todo), len(paths))
    ok, failed = 0, len(unmatched)
    dataset = make_dataset(todo)
    collate = getattr(dataset, "collate", None)  # datasets of unstackable items bring their own
    loader = image_loader(dataset, batch_size, workers, pin_memory=pin_memory, collate_fn=collate)
    batches = iter(loader)  # named, so on Ctrl-C its workers are stopped before it is freed
    with (
        progress_bar(total=len(todo), desc=desc, unit="file", enabled=progress) as bar,
        _ctrl_c_reaches_workers(),
    ):
        for batch in batches:
            good = [j for j, e in enumerate(batch["error"]) if not e]
            items = [todo[batch["index"][j]] for j in good]
            results = iter(infer(_take(batch["image"], good), items) if good else [])
            rows = []
            for j, idx in enumerate(batch["index"]):
                if batch["error"][j]:
                    rows.append({"path": str(todo[idx]), "error": batch["error"][j]})
                    failed += 1
                else:
                    rows.append({"path": str(todo[idx]), **next(results)})
                    ok += 1
            writer.write(rows)
            bar.update(len(rows))
    return ok, failed


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


def _exit_code(ok: int, failed: int, writer: RecordWriter) -> int:
    return 1 if failed and not ok and not writer.done else 0


def caption_files(
    inputs: Sequence[str],
    bundle: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    beam_size: int | None = None,
    n_best: int = 1,
    max_len: int | None = None,
    batch_size: int = 16,
    workers: int = 2,
    device: str = "auto",
    resume: bool = False,
    model: Captioner | None = None,
    progress: bool = True,
    shard: Shard | None = None,
) -> int:
    """Caption every image under ``inputs``; returns 0, or 1 when no input could be captioned."""
    cap = model or load(bundle, device=device)
    if not isinstance(cap, Captioner):
        raise ValueError(f"{bundle} is not a caption bundle (task: activity)")
    options = dict(beam_size=beam_size, n_best=n_best, max_len=max_len)
    cap.search_config(**options).validate(len(cap.vocab))  # bad options fail before any work

    def infer(images: torch.Tensor, _paths: list[Path]) -> list[dict]:
        rows = []
        for res in cap.caption_tensors(images, **options):
            row = {
                "caption": res.caption,
                "log_prob": round(res.log_prob, 4),
                "confidence": res.confidence,
                "tags": res.tags,
                "out_of_domain": res.out_of_domain,
                "domain_distance": res.domain_distance,
            }
            if res.slots:  # JSONL only: the CSV columns stay those of CSV_FIELDS
                row["slots"] = res.slots
            if n_best > 1:
                row["alternatives"] = res.alternatives
            rows.append(row)
        return rows

    # n-best alternatives get their own CSV column (JSON text) rather than being dropped.
    fields = CSV_FIELDS + ("alternatives",) if n_best > 1 else CSV_FIELDS
    writer = RecordWriter(out, resume=resume, csv_fields=fields)  # opening truncates: only now
    try:
        ok, failed = run_job(
            inputs,
            IMAGE_SUFFIXES,
            lambda todo: ImageFiles(todo, cap.preprocess, cap.limits),
            infer,
            writer,
            batch_size,
            workers,
            cap.device.type == "cuda",
            "captioning",
            progress,
            shard,
        )
    finally:
        writer.close()
    log.info("captioned %d images, %d failed%s", ok, failed, f" -> {out}" if out else "")
    return _exit_code(ok, failed, writer)


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
    ):
        self.paths, self.num_frames, self.size, self.limits = paths, num_frames, size, limits
        self.timeline, self.window, self.stride = timeline, window, stride

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
    out: str | os.PathLike | None = None,
    top_k: int = 5,
    timeline: bool = False,
    window: float | None = None,
    stride: float | None = None,
    batch_size: int = 4,
    workers: int = 2,
    device: str = "auto",
    resume: bool = False,
    model: ActivityClassifier | None = None,
    progress: bool = True,
    shard: Shard | None = None,
) -> int:
    """Label every video under ``inputs``; returns 0, or 1 when no input could be labelled.

    Records: ``{"path", "label", "score", "top_k"}`` (+ ``"timeline"``) or ``{"path", "error"}``.
    Videos are decoded with the classifier's own limits, as the Python API and the service do.
    """
    if top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {top_k}")
    if timeline and window is not None:  # refuse a bad window / stride before any work
        sliding_windows(60.0, window, window / 2 if stride is None else stride)
    clf = model or load(bundle or default_bundle_dir("activity"), device=device)
    if not isinstance(clf, ActivityClassifier):
        raise ValueError(f"{bundle} is not an activity bundle (task: caption)")
    if timeline:
        window, stride = clf.timeline_window(window, stride)

    def infer(items: list[tuple[ClipInput, str]], _paths: list[Path]) -> list[dict]:
        rows = [r.to_dict() for r in clf.classify_inputs([clip for clip, _ in items], top_k)]
        for row, (_, timeline_error) in zip(rows, items, strict=True):
            if timeline_error:
                row["timeline_error"] = timeline_error
        return rows

    def dataset(todo: list[Path]) -> PreparedVideos:
        return PreparedVideos(todo, clf.num_frames, clf.size, clf.limits, timeline, window, stride)

    writer = RecordWriter(out, resume=resume, csv_fields=ACTIVITY_CSV_FIELDS)
    try:
        ok, failed = run_job(
            inputs,
            VIDEO_SUFFIXES,
            dataset,
            infer,
            writer,
            batch_size,
            workers,
            clf.device.type == "cuda",
            "labelling",
            progress,
            shard,
        )
    finally:
        writer.close()
    log.info("labelled %d videos, %d failed%s", ok, failed, f" -> {out}" if out else "")
    return _exit_code(ok, failed, writer)
