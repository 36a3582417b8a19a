"""The output files of the folder jobs (``captioner caption`` / ``captioner activity``) and
their shards: one row per input, JSONL or CSV, flushed per batch, resumable.

Both the jobs (:mod:`captioner.batch`) and the shard merger (:mod:`captioner.shard`) read and
write rows through this module only, so they agree on the format.
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

log = logging.getLogger(__name__)

CSV_FIELDS = ("path", "caption", "log_prob", "error")
ACTIVITY_CSV_FIELDS = ("path", "label", "score", "top_k", "timeline", "error")


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
