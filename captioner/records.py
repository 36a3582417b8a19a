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
from collections.abc import Iterable, Sequence
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
    """Appends records to a JSONL or CSV file (or JSON lines on stdout), flushed per batch.

    ``rows`` counts the complete rows in the file (with ``resume``, those found there too): each
    batch goes to the file in unbuffered writes, so after a failed write the count is what a
    resume will find, even when part of that batch reached the disk.
    """

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
        self.done: set[str] = set()  # the paths already in the file, as they were written
        self._done_keys: set[str] = set()
        self.rows = 0
        self._sync = False
        self._csv_buffer = io.StringIO()
        self._csv = csv.DictWriter(self._csv_buffer, self.fields)
        if self.path is None:
            self.stream: IO = sys.stdout
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = self.format == "csv"
        if resume and self.path.exists():
            header = self._check_resumable()
            recorded = _read_paths(self.path)
            self.done, self.rows = set(recorded), len(recorded)
            self._done_keys = {path_key(p) for p in self.done}
            mode = "ab"
        else:
            mode = "wb"
        self.stream = self.path.open(mode, buffering=0)
        self._sync = self.path.is_file()  # fsync a real file; a pipe or device refuses it
        if header:
            self._put([self._header()], rows=False)

    def is_done(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` is already in the file, however either of them is spelt
        (relative or absolute, through a symbolic link): see :func:`path_key`."""
        return path_key(path) in self._done_keys

    def _header(self) -> bytes:
        self._csv.writeheader()
        return self._take_csv()

    def _take_csv(self) -> bytes:
        text = self._csv_buffer.getvalue()
        self._csv_buffer.seek(0)
        self._csv_buffer.truncate()
        return text.encode("utf-8")

    def _check_resumable(self) -> bool:
        """For a CSV being resumed: whether it still needs its header. An empty file does, and
        so does one cut off inside its header (it holds no row yet: it is emptied, and the
        header written again). A file whose header is not this command's columns is refused,
        not appended to."""
        if self.format != "csv":
            return False
        assert self.path is not None
        with self.path.open("rb") as f:
            first = f.readline()
        if first.endswith(b"\n"):  # a whole first line
            if not first.strip():
                return True
            if _columns(first) != self.fields:
                raise self._foreign(first)
            return False
        # No line feed in the whole file: it is empty, or it was cut off inside its header.
        if not self._header().startswith(first):
            raise self._foreign(first)
        if first:
            with self.path.open("r+b") as f:
                f.truncate(0)
            log.warning("%s ended in a partly written header; it was written again", self.path)
        return True

    def _foreign(self, first: bytes) -> ValueError:
        return ValueError(
            f"cannot resume {self.path}: its columns {list(_columns(first))} are not this "
            f"command's {list(self.fields)}; write to another --out, or run without --resume"
        )

    def _put(self, chunks: list[bytes], rows: bool = True) -> None:
        """Write ``chunks`` (one row each, or the header) and flush them to the disk."""
        sent = 0
        try:
            if self.path is None:
                self.stream.write(b"".join(chunks).decode("utf-8"))
                self.stream.flush()
                sent = sum(map(len, chunks))
            else:
                data = memoryview(b"".join(chunks))
                while sent < len(data):  # a write may take only part of it
                    sent += self.stream.write(data[sent:])
                if self._sync:
                    os.fsync(self.stream.fileno())
        except OSError as exc:
            if rows:
                self.rows += _whole(chunks, sent)
            raise self._error(exc) from None
        if rows:
            self.rows += len(chunks)

    def _error(self, exc: OSError) -> OutputError:
        """The one-line message for a failed write: what failed, how many rows the file holds
        (what a resume will find), and what to do."""
        n = self.rows
        kept = f"; the {n} rows already written are kept" if n > 1 else ""
        kept = "; the 1 row already written is kept" if n == 1 else kept
        fix = (
            "free some space and run again with --resume"
            if exc.errno == errno.ENOSPC
            else "fix the output location and run again with --resume"
        )
        what = f"could not write {self.path or 'stdout'}: {exc.strerror or exc}"
        return OutputError(exc.errno, f"{what}{kept}; {fix}")

    def write(self, records: Iterable[dict]) -> None:
        """Append one row per record and flush them to the disk (:class:`OutputError` if the
        file cannot take them: the rows already there stay, and :attr:`rows` counts them)."""
        chunks = []
        for rec in records:
            if self.format == "csv":
                self._csv.writerow({k: _cell(rec.get(k, "")) for k in self.fields})
                chunks.append(self._take_csv())
            else:
                chunks.append((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))
        if chunks:
            self._put(chunks)

    def close(self) -> None:
        """Close the output file (never stdout)."""
        if self.path is not None:
            # an error here was already reported by write(); the file holds what reached it
            with contextlib.suppress(OSError):
                self.stream.close()


def _columns(line: bytes) -> tuple[str, ...]:
    """The cells of one CSV header line."""
    return tuple(next(csv.reader([line.decode("utf-8", "replace")]), []))


def _whole(chunks: list[bytes], sent: int) -> int:
    """How many of ``chunks`` lie entirely within their first ``sent`` bytes."""
    n = 0
    for chunk in chunks:
        sent -= len(chunk)
        if sent < 0:
            break
        n += 1
    return n


def path_key(path: str | os.PathLike) -> str:
    """What says two spellings of a path name the same input: the absolute path with every
    symbolic link resolved (the rule :func:`captioner.intake.expand_paths` drops duplicates
    by). A relative path recorded in an output file is taken from the current folder."""
    return os.path.realpath(path)


def _cell(value: object) -> object:
    """CSV cells: nested values (top-k lists, timelines) as JSON text."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def read_done_paths(path: Path) -> set[str]:
    """Paths already recorded in an output file; a torn last line (killed mid-write) is cut off."""
    return set(_read_paths(path))


def _read_paths(path: Path) -> list[str]:
    """The path of each complete row of an output file, in order, after cutting off a torn
    last line."""
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n") + 1
        with path.open("r+b") as f:
            f.truncate(cut)
        raw = raw[:cut]
        log.warning("%s ended in a partly written row; it was removed and will be redone", path)
    text = raw.decode("utf-8")
    if path.suffix.lower() == ".csv":
        return [row["path"] for row in csv.DictReader(io.StringIO(text)) if row.get("path")]
    return [json.loads(line)["path"] for line in text.splitlines() if line.strip()]
