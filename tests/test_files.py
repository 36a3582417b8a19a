"""The files helper: atomic writes with the permissions of a plain open(), and sha256."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from captioner.files import atomic_write, atomic_write_text, default_file_mode, sha256_file


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_gives_the_mode_of_a_plain_open(tmp_path: Path, umask_027) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = atomic_write_text(tmp_path / "atomic.txt", "x")
    assert mode(written) == mode(plain) == 0o640 == default_file_mode()
    assert written.read_text() == "x"


def test_atomic_write_replaces_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    atomic_write(target, lambda tmp: tmp.write_bytes(b"new"))
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    data = os.urandom(3 * 1024 + 7)
    path.write_bytes(data)
    assert sha256_file(path, chunk=1024) == hashlib.sha256(data).hexdigest()


def test_sha256_file_stays_importable_from_encoders() -> None:
    from captioner.encoders import sha256_file as old_place

    assert old_place is sha256_file
