"""Split a batch job across processes: ``--shard i/n``, torchrun ranks, and ``captioner merge``.

Shard i takes a contiguous block of the stably ordered input list, so the part files joined in
index order are exactly what one process would have written. Each shard writes its own part
(``captions.part-0-of-3.jsonl``); under torchrun the ranks wait for each other and rank 0
merges the parts into the file that was asked for.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from captioner.files import atomic_write
from captioner.records import read_done_paths

log = logging.getLogger(__name__)

PART_NAME = re.compile(r"^(?P<stem>.+)\.part-(?P<index>\d+)-of-(?P<count>\d+)(?P<suffix>\.[^.]+)$")
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}

# Ranks finish at different times (an unlucky shard, a slow disk), so the wait for the others
# must outlast any shard. It cannot hang: torchrun stops every rank as soon as one fails.
RANK_WAIT = timedelta(days=7)


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: the contiguous block ``items[i*N//n:(i+1)*N//n]``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"shard {self.index}/{self.count} does not exist: expected i/n with 0 <= i < n"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"1/4"`` -> ``Shard(1, 4)``; anything else is a ``ValueError`` naming the form."""
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not m:
            raise ValueError(f"expected i/n with 0 <= i < n (e.g. 0/4), got {text!r}")
        return cls(int(m[1]), int(m[2]))

    def bounds(self, total: int) -> tuple[int, int]:
        """The half-open range of this shard's items among ``total``."""
        return self.index * total // self.count, (self.index + 1) * total // self.count

    def select(self, paths: Sequence[Path], unmatched: Sequence[str]) -> tuple[list, list]:
        """This shard's part of ``expand_paths``' output -> (paths, unmatched).

        One process writes the unmatched inputs' error rows before the files, so the list that
        is cut into blocks is ``unmatched + paths``.
        """
        lo, hi = self.bounds(len(unmatched) + len(paths))
        skip = len(unmatched)
        return list(paths[max(lo - skip, 0) : max(hi - skip, 0)]), list(unmatched[lo:hi])

    def part_path(self, out: str | os.PathLike) -> Path:
        """``captions.jsonl`` -> ``captions.part-1-of-4.jsonl``."""
        out = Path(out)
        return out.with_name(f"{out.stem}.part-{self.index}-of-{self.count}{out.suffix}")


def shard_from_env() -> Shard | None:
    """The torchrun shard (``RANK`` of ``WORLD_SIZE``), or None outside a torchrun launch."""
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if rank is None or world is None:
        return None
    try:
        return Shard(int(rank), int(world))
    except ValueError:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world} do not name a shard") from None


def run_sharded(
    job: Callable[..., int], out: str | None, shard: Shard | None, device: str = "auto"
) -> int:
    """Run a batch command on one shard, on every torchrun rank, or on everything.

    ``job`` takes the keywords ``out``, ``shard``, ``progress`` and ``device`` and returns an
    exit code (``caption_files`` and ``label_videos`` with their other arguments bound). An
    explicit ``shard`` writes its part of ``out`` (or its rows on stdout without ``out``).
    """
    if shard is not None:
        part = shard.part_path(out) if out else None
        return job(out=part, shard=shard, progress=True, device=device)
    env_shard = shard_from_env()
    if env_shard is None:
        return job(out=out, shard=None, progress=True, device=device)
    if not out:
        raise ValueError(
            "under torchrun --out FILE is required: each rank writes FILE.part-RANK-of-N "
            "and rank 0 merges them into FILE"
        )
    return _run_ranks(job, Path(out), env_shard, device)


def _run_ranks(job: Callable[..., int], out: Path, shard: Shard, device: str) -> int:
    """One torchrun rank: write this rank's part, wait for all, rank 0 merges."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=RANK_WAIT)  # MASTER_ADDR etc. from torchrun
    try:
        code = job(
            out=shard.part_path(out),
            shard=shard,
            progress=shard.index == 0,
            device=_rank_device(device),
        )
        # The reduction is the barrier: it returns once every rank has finished its part.
        # Exit 1 only when no rank captioned anything, as for one process.
        codes = torch.tensor([code])
        dist.all_reduce(codes, op=dist.ReduceOp.MIN)
        status = torch.tensor([0])
        if shard.index == 0:
            try:
                merge_parts([s.part_path(out) for s in _all(shard.count)], out)
            except (ValueError, OSError) as exc:
                log.error("could not merge the parts into %s: %s", out, exc)
                status[0] = 2
        dist.broadcast(status, src=0)  # every rank exits with the merge's outcome
        return int(status.item()) or int(codes.item())
    finally:
        dist.destroy_process_group()


def _all(count: int) -> list[Shard]:
    return [Shard(i, count) for i in range(count)]


def _rank_device(device: str) -> str:
    """``auto`` / ``cuda`` -> this rank's own GPU (``LOCAL_RANK``), so ranks do not share one."""
    import torch

    local = os.environ.get("LOCAL_RANK")
    if device in ("auto", "cuda") and local is not None and torch.cuda.is_available():
        return f"cuda:{int(local) % torch.cuda.device_count()}"
    return device


# --------------------------------------------------------------------------- merge


def merge_parts(parts: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Join part files in shard order into ``out``, written atomically; returns ``out``.

    ``parts`` are file names or glob patterns. Refuses (``ValueError``) a missing part, parts
    of different shardings or outputs, CSV mixed with JSONL, and a path recorded in two parts.
    A torn last row (a part killed mid-write) is cut off with a warning.
    """
    out = Path(out)
    files = _expand(parts)
    ordered = _in_shard_order(files)
    kinds = {FORMATS.get(f.suffix.lower()) for f in ordered}
    if len(kinds) > 1:
        raise ValueError("cannot merge CSV parts with JSONL parts: merge each format on its own")
    (kind,) = kinds
    if kind is None:
        raise ValueError(f"parts must be .jsonl or .csv files, got {ordered[0].name}")
    if FORMATS.get(out.suffix.lower()) != kind:
        raise ValueError(f"--out must be a .{kind} file like the parts, got {out.name}")
    if out.resolve() in {f.resolve() for f in ordered}:
        raise ValueError(f"--out {out} is one of the parts; name a new file")

    owner: dict[str, Path] = {}
    for part in ordered:
        for path in _paths_in(part):
            if path in owner:
                raise ValueError(
                    f"{path} is recorded in both {owner[path].name} and {part.name}: these parts "
                    "overlap (shards of different input lists?); rerun the shards on one list"
                )
            owner[path] = part
    _write_joined(ordered, out, header=kind == "csv")
    log.info("merged %d parts (%d rows) -> %s", len(ordered), len(owner), out)
    return out


def _expand(parts: Sequence[str | os.PathLike]) -> list[Path]:
    """File names and glob patterns -> existing files, each once."""
    files: dict[Path, Path] = {}
    for item in parts:
        text = str(item)
        if Path(text).is_file():
            found = [Path(text)]
        elif glob.has_magic(text):
            found = [Path(m) for m in sorted(glob.glob(text)) if Path(m).is_file()]
            if not found:
                raise FileNotFoundError(f"no part files match {text}")
        else:
            raise FileNotFoundError(f"no such part file: {text}")
        for f in found:
            files.setdefault(f.resolve(), f)
    return list(files.values())


def _in_shard_order(files: list[Path]) -> list[Path]:
    """Parts sorted by their index; refuses foreign names, mixed counts, gaps and repeats."""
    by_index: dict[int, Path] = {}
    counts: dict[int, Path] = {}
    stems: dict[str, Path] = {}
    for f in files:
        m = PART_NAME.match(f.name)
        if not m:
            raise ValueError(f"{f.name} is not a part file (expected NAME.part-I-of-N.jsonl/.csv)")
        index, count = int(m["index"]), int(m["count"])
        counts.setdefault(count, f)
        stems.setdefault(m["stem"], f)
        if index in by_index:
            raise ValueError(f"part {index} is given twice: {by_index[index]} and {f}")
        by_index[index] = f
    if len(counts) > 1:
        names = ", ".join(f"{f.name} (of {n})" for n, f in sorted(counts.items()))
        raise ValueError(f"parts come from different shardings: {names}")
    if len(stems) > 1:
        raise ValueError(f"parts of different outputs: {', '.join(sorted(stems))}")
    (count,) = counts
    if any(i >= count for i in by_index):
        raise ValueError(f"part {max(by_index)} of {count} does not exist (indices run from 0)")
    missing = [str(i) for i in range(count) if i not in by_index]
    if missing:
        which = f"parts {', '.join(missing)}" if len(missing) > 1 else f"part {missing[0]}"
        verb = "are" if len(missing) > 1 else "is"
        raise ValueError(f"{which} of {count} {verb} missing; run that shard, then merge again")
    return [by_index[i] for i in range(count)]


def _paths_in(part: Path) -> set[str]:
    """The paths a part records, after cutting off a torn last row (read_done_paths' repair)."""
    size = part.stat().st_size
    try:
        paths = read_done_paths(part)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"{part} is not a readable part file: {exc!r}") from None
    if part.stat().st_size < size:
        log.warning(
            "%s: its last row was partly written and is left out; run that shard again "
            "with --resume to redo it, then merge again",
            part,
        )
    return paths


def _write_joined(parts: list[Path], out: Path, header: bool) -> None:
    """Concatenate ``parts`` byte for byte (one CSV header) into a temp file, then rename."""
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with tmp.open("wb") as dst:
            first: bytes | None = None
            for part in parts:
                with part.open("rb") as src:
                    line = src.readline() if header else b""
                    if line and first is None:
                        first = line
                        dst.write(line)
                    elif line and line != first:
                        raise ValueError(f"{part.name} has other CSV columns than the rest")
                    shutil.copyfileobj(src, dst)
            dst.flush()
            os.fsync(dst.fileno())

    atomic_write(out, write)
