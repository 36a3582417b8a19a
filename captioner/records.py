"""The output files of the folder jobs (``captioner caption`` / ``captioner activity``) and
their shards: one row per input, JSONL or CSV, flushed per batch, resumable.

Both the jobs (:mod:`captioner.batch`) and the shard merger (:mod:`captioner.shard`) read and
write rows through this module only, so they agree on the format.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

CSV_FIELDS = (
    "path",
    "caption",
    "log_prob",
    "confidence",
    "tags",
    "out_of_domain",
    "domain_distance",
    "error",
)
ACTIVITY_CSV_FIELDS = ("path", "label", "score", "top_k", "timeline", "error")
OUTPUT_SUFFIXES = (".csv", ".jsonl", ".json", ".ndjson")


class OutputError(OSError):
    """The output file could not be written (disk full, permissions): rows already written stay."""


def check_output_path(out: str | os.PathLike | None) -> None:
    """Refuse an ``--out`` this module cannot write, before any model loads (ValueError)."""
    if out is not None and Path(out).suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(f"--out must end in .jsonl or .csv, got {Path(out).name}")


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
        check_output_path(out)
        self.done: set[str] = set()
        self.written = 0
        self._sync = False
        if self.path is None:
            self.stream: IO[str] = sys.stdout
            self._csv = None
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = True
        if resume and self.path.exists():
            header = self._check_resumable()
            self.done = read_done_paths(self.path)
            mode = "a"
        else:
            mode = "w"
        self.stream = self.path.open(mode, newline="" if self.format == "csv" else None)
        self._csv = csv.DictWriter(self.stream, self.fields) if self.format == "csv" else None
        self._sync = self.path.is_file()  # fsync a real file; a pipe or device refuses it
        if self._csv is not None and header:
            self._guard(self._csv.writeheader)

    def _check_resumable(self) -> bool:
        """For a CSV being resumed: whether it still needs its header (an empty file does);
        a file whose header is not this command's columns is refused, not appended to."""
        if self.format != "csv":
            return False
        assert self.path is not None
        with self.path.open(newline="", encoding="utf-8") as f:
            first = f.readline()
        if not first.strip():
            return True
        found = tuple(next(csv.reader([first])))
        if found != self.fields:
            raise ValueError(
                f"cannot resume {self.path}: its columns {list(found)} are not this command's "
                f"{list(self.fields)}; write to another --out, or run without --resume"
            )
        return False

    def _guard(self, write: Callable[[], object]) -> None:
        try:
            write()
            self.stream.flush()
            if self._sync:
                os.fsync(self.stream.fileno())
        except OSError as exc:
            kept = f"the {self.written} rows already written are kept" if self.written else ""
            what = exc.strerror or str(exc)
            raise OutputError(
                exc.errno,
                f"could not write {self.path or 'stdout'}: {what}"
                + (f"; {kept}" if kept else "")
                + (
                    "; free some space and run again with --resume"
                    if exc.errno == errno.ENOSPC
                    else "; fix the output location and run again with --resume"
                ),
            ) from None

    def write(self, records: Iterable[dict]) -> None:
        rows = list(records)

        def put() -> None:
            for rec in rows:
                if self._csv is not None:
                    self._csv.writerow({k: _cell(rec.get(k, "")) for k in self.fields})
                else:
                    self.stream.write(json.dumps(rec, ensure_ascii=False) + "\n")

        self._guard(put)
        self.written += len(rows)

    def close(self) -> None:
        if self.path is not None:
            # an error here was already reported by write(); the file holds what reached it
            with contextlib.suppress(OSError):
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
