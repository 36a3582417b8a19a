"""Progress bars for long work: tqdm on a terminal; nothing when stderr is not a terminal
(logs and CI get no carriage-return noise) or when the command line was given ``-q``."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

_quiet = False


def set_quiet(quiet: bool) -> None:
    """Hide every progress bar of this process (``captioner -q``)."""
    global _quiet
    _quiet = bool(quiet)


def showing(enabled: bool = True) -> bool:
    """Whether a bar asked for with ``enabled`` is drawn here and now."""
    stream = sys.stderr
    return enabled and not _quiet and stream is not None and stream.isatty()


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr, disabled unless :func:`showing` says it is wanted."""
    kwargs.setdefault("file", sys.stderr)
    return tqdm(iterable, disable=not showing(enabled), **kwargs)
