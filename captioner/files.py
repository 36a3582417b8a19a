"""Files on disk: the sha256 of a file, and atomic writes with normal permissions.

Every file the library writes where a reader may look at any moment (bundles, checkpoints,
caches, exports) goes through :func:`atomic_write`: a temporary file in the same folder, then
``os.replace`` over the target, so a reader sees the old file or the new one, never half of
one. ``tempfile.mkstemp`` creates its file with mode 0600; the result is given the mode an
ordinary ``open(path, "w")`` would have (``0o666`` less the umask), so bundles and exports can
be shared like any other file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text", "default_file_mode", "sha256_file"]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    # /proc first: os.umask can only be read by setting it, which races with other threads.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file: ``0o666`` less the umask."""
    return 0o666 & ~_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Write ``path`` through ``write(tmp)`` on a temporary file in the same folder, then rename.

    ``write`` receives the temporary file's path and writes the whole content there. If it
    raises, the temporary file is removed and ``path`` is left as it was. -> ``path``.
    """
    target = Path(path)
    fd, name = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """:func:`atomic_write` of a text file."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding))
