"""Caption many image files: DataLoader workers decode, the model batches, rows stream to disk.

Every input gets one record, ``{"path", "caption", "log_prob"}`` or ``{"path", "error"}``. Rows
are flushed after every batch, so an interrupted run keeps every finished row, and ``resume``
skips the paths already written.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from captioner.data.images import ImageFiles, expand_paths, image_loader
from captioner.data.videos import ClipFiles
from captioner.inference import ActivityClassifier, Captioner, default_bundle_dir, load
from captioner.media import IMAGE_SUFFIXES, MediaError
from captioner.video import VIDEO_SUFFIXES, sliding_windows

if TYPE_CHECKING:
    from captioner.shard import Shard

log = logging.getLogger(__name__)

CSV_FIELDS = ("path", "caption", "log_prob", "error")


class RecordWriter:
    """Appends records to a JSONL or CSV file (or JSON lines on stdout), flushed per batch."""

    def __init__(
        self,
        out: str | os.PathLike | None,
        resume: bool = False,
        csv_fields: Sequence[str] = CSV_FIELDS,
    ):
        self.fields = tuple(csv_fields)
        self.path = Path(out) if out else None
        self.format = "csv" if self.path and self.path.suffix.lower() == ".csv" else "jsonl"
        if self.path and self.path.suffix.lower() not in (".csv", ".jsonl", ".json", ".ndjson"):
            raise ValueError(f"--out must end in .jsonl or .csv, got {self.path.name}")
        self.done: set[str] = set()
        if self.path is None:
            self.stream: IO[str] = sys.stdout
            self._csv = None
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.path.exists():
            self.done = read_done_paths(self.path)
            mode = "a"
        else:
            mode = "w"
        self.stream = self.path.open(mode, newline="" if self.format == "csv" else None)
        self._csv = csv.DictWriter(self.stream, self.fields) if self.format == "csv" else None
        if self._csv is not None and mode == "w":
            self._csv.writeheader()

    def write(self, records: Iterable[dict]) -> None:
        for rec in records:
            if self._csv is not None:
                self._csv.writerow({k: _cell(rec.get(k, "")) for k in self.fields})
            else:
                self.stream.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.stream.flush()
        if self.path is not None:
            os.fsync(self.stream.fileno())

    def close(self) -> None:
        if self.path is not None:
            self.stream.close()


def _cell(value: object) -> object:
    """CSV cells: nested values (top-k lists, timelines) as JSON text."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def read_done_paths(path: Path) -> set[str]:
    """Paths already recorded in an output file; a torn last line (killed mid-write) is cut off."""
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n") + 1
        with path.open("r+b") as f:
            f.truncate(cut)
        raw = raw[:cut]
        log.warning("%s ended in a partly written row; it was removed and will be redone", path)
    text = raw.decode("utf-8")
    if path.suffix.lower() == ".csv":
        return {row["path"] for row in csv.DictReader(io.StringIO(text)) if row.get("path")}
    done = set()
    for line in text.splitlines():
        if line.strip():
            done.add(json.loads(line)["path"])
    return done


def run_job(
    inputs: Sequence[str],
    suffixes: frozenset[str],
    make_dataset: Callable[[list[Path]], Dataset],
    infer: Callable[[torch.Tensor, list[Path]], list[dict]],
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
    writer.write(
        {"path": p, "error": "no such file, or no matching files in this folder / pattern"}
        for p in unmatched
        if p not in writer.done
    )
    todo = [p for p in paths if str(p) not in writer.done]
    if writer.done:
        log.info("resuming: %d of %d inputs already done", len(paths) - len(todo), len(paths))
    ok, failed = 0, len(unmatched)
    loader = image_loader(make_dataset(todo), batch_size, workers, pin_memory=pin_memory)
    with tqdm(total=len(todo), desc=desc, unit="file", disable=not progress) as bar:
        for batch in loader:
            good = [j for j, e in enumerate(batch["error"]) if not e]
            items = [todo[batch["index"][j]] for j in good]
            results = iter(infer(batch["image"][good], items) if good else [])
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
            row = {"caption": res.caption, "log_prob": round(res.log_prob, 4)}
            if n_best > 1:
                row["alternatives"] = res.alternatives
            rows.append(row)
        return rows

    writer = RecordWriter(out, resume=resume)  # only now: opening without --resume truncates
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


ACTIVITY_CSV_FIELDS = ("path", "label", "score", "top_k", "timeline", "error")


def label_videos(
    inputs: Sequence[str],
    bundle: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    top_k: int = 5,
    timeline: bool = False,
    window: float = 2.0,
    stride: float = 1.0,
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
    """
    if top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {top_k}")
    if timeline:
        sliding_windows(60.0, window, stride)  # refuses bad window/stride before any work
    clf = model or load(bundle or default_bundle_dir("activity"), device=device)
    if not isinstance(clf, ActivityClassifier):
        raise ValueError(f"{bundle} is not an activity bundle (task: caption)")

    def infer(clips: torch.Tensor, paths: list[Path]) -> list[dict]:
        rows = [r.to_dict() for r in clf.classify_batch(list(clips[:, 0]), top_k)]
        if timeline:
            for row, path in zip(rows, paths, strict=True):
                try:
                    row["timeline"] = clf.timeline(path, window, stride)
                except MediaError as exc:
                    row["timeline_error"] = str(exc)
        return rows

    writer = RecordWriter(out, resume=resume, csv_fields=ACTIVITY_CSV_FIELDS)
    try:
        ok, failed = run_job(
            inputs,
            VIDEO_SUFFIXES,
            lambda todo: ClipFiles(todo, clf.num_frames, clf.size),
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
