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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

from tqdm import tqdm

from captioner.data.images import ImageFiles, expand_paths, image_loader
from captioner.inference import Captioner, load

log = logging.getLogger(__name__)

CSV_FIELDS = ("path", "caption", "log_prob", "error")


class RecordWriter:
    """Appends records to a JSONL or CSV file (or JSON lines on stdout), flushed per batch."""

    def __init__(self, out: str | os.PathLike | None, resume: bool = False):
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
        self._csv = csv.DictWriter(self.stream, CSV_FIELDS) if self.format == "csv" else None
        if self._csv is not None and mode == "w":
            self._csv.writeheader()

    def write(self, records: Iterable[dict]) -> None:
        for rec in records:
            if self._csv is not None:
                self._csv.writerow({k: rec.get(k, "") for k in CSV_FIELDS})
            else:
                self.stream.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.stream.flush()
        if self.path is not None:
            os.fsync(self.stream.fileno())

    def close(self) -> None:
        if self.path is not None:
            self.stream.close()


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
) -> int:
    """Caption every image under ``inputs``; returns 0, or 1 when no input could be captioned."""
    cap = model or load(bundle, device=device)
    options = dict(beam_size=beam_size, n_best=n_best, max_len=max_len)
    cap.search_config(**options).validate(len(cap.vocab))  # bad options fail before any work
    writer = RecordWriter(out, resume=resume)  # only now: opening without --resume truncates
    try:
        paths, unmatched = expand_paths(inputs)
        writer.write(
            {"path": p, "error": "no such file, or no image files in this folder / pattern"}
            for p in unmatched
            if p not in writer.done
        )
        todo = [p for p in paths if str(p) not in writer.done]
        if writer.done:
            log.info("resuming: %d of %d inputs already done", len(paths) - len(todo), len(paths))
        ok = failed = 0
        dataset = ImageFiles(todo, cap.preprocess, cap.limits)
        loader = image_loader(dataset, batch_size, workers, pin_memory=cap.device.type == "cuda")
        with tqdm(total=len(todo), desc="captioning", unit="img", disable=not progress) as bar:
            for batch in loader:
                good = [j for j, e in enumerate(batch["error"]) if not e]
                results = iter(cap.caption_tensors(batch["image"][good], **options) if good else [])
                rows = []
                for j, idx in enumerate(batch["index"]):
                    path = str(todo[idx])
                    if batch["error"][j]:
                        rows.append({"path": path, "error": batch["error"][j]})
                        failed += 1
                        continue
                    res = next(results)
                    row = {"path": path, "caption": res.caption, "log_prob": round(res.log_prob, 4)}
                    if n_best > 1:
                        row["alternatives"] = res.alternatives
                    rows.append(row)
                    ok += 1
                writer.write(rows)
                bar.update(len(rows))
    finally:
        writer.close()
    failed += len(unmatched)
    log.info("captioned %d images, %d failed%s", ok, failed, f" -> {out}" if out else "")
    return 1 if failed and not ok and not writer.done else 0
