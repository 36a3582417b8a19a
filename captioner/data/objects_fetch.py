"""Fetch the Debian packages the object bank is made from, at generation time.

The photo cut-outs come from ``tuxpaint-stamps-default`` and some backgrounds from
``plasma-workspace-wallpapers`` and ``gnome-backgrounds``. None of them is committed: each is
downloaded with ``apt-get download`` and unpacked with ``dpkg -x`` into a cache folder
(``$CAPTIONER_CACHE/packages`` or ``~/.cache/captioner/packages``), once. A user without
apt can unpack the packages elsewhere and point ``--stamps`` / ``--backgrounds`` at them.
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import subprocess
import tempfile
from collections.abc import Sequence

__all__ = [
    "BACKGROUND_PACKAGES",
    "STAMPS_PACKAGE",
    "STAMPS_SUBDIR",
    "PackageFetchError",
    "background_folders",
    "fetch_package",
    "package_cache",
    "stamps_root",
]

logger = logging.getLogger(__name__)

STAMPS_PACKAGE = "tuxpaint-stamps-default"
BACKGROUND_PACKAGES: tuple[str, ...] = ("plasma-workspace-wallpapers", "gnome-backgrounds")
#: Where the stamps lie inside the unpacked package.
STAMPS_SUBDIR = pathlib.PurePosixPath("usr/share/tuxpaint/stamps")
_DONE = ".unpacked"


class PackageFetchError(FileNotFoundError):
    """A Debian package could not be fetched (no apt-get/dpkg, or the download failed)."""


def package_cache() -> pathlib.Path:
    """``$CAPTIONER_CACHE/packages``, or ``~/.cache/captioner/packages``."""
    env = os.environ.get("CAPTIONER_CACHE")
    root = pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "captioner"
    return root / "packages"


def fetch_package(
    name: str, cache: str | os.PathLike | None = None, hint: str = ""
) -> pathlib.Path:
    """Download and unpack Debian package ``name`` once; return the folder it was unpacked in.

    Raises :class:`PackageFetchError` naming the package (and ``hint``, the way around it)
    when ``apt-get`` or ``dpkg`` is missing or the download fails.
    """
    dest = pathlib.Path(cache) if cache is not None else package_cache()
    dest = dest / name
    if (dest / _DONE).exists():
        return dest
    tools = {tool: shutil.which(tool) for tool in ("apt-get", "dpkg")}
    missing = [tool for tool, path in tools.items() if path is None]
    where = f"; {hint}" if hint else ""
    if missing:
        raise PackageFetchError(
            f"cannot fetch the Debian package {name}: {' and '.join(missing)} not found "
            f"(this needs a Debian or Ubuntu system){where}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{name}-") as tmp:
        logger.info("downloading the Debian package %s", name)
        try:
            subprocess.run(
                [tools["apt-get"], "download", name],
                cwd=tmp,
                check=True,
                capture_output=True,
                text=True,
            )
            debs = sorted(pathlib.Path(tmp).glob(f"{name}_*.deb"))
            if not debs:
                raise PackageFetchError(f"apt-get download {name} wrote no .deb file{where}")
            unpacked = pathlib.Path(tmp) / "root"
            subprocess.run(
                [tools["dpkg"], "-x", str(debs[0]), str(unpacked)],
                check=True,
                capture_output=True,
                text=True,
            )
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or "").strip().splitlines()
            reason = detail[-1] if detail else f"exit status {exc.returncode}"
            raise PackageFetchError(
                f"cannot fetch the Debian package {name}: {reason}{where}"
            ) from exc
        (unpacked / _DONE).write_text(debs[0].name + "\n", encoding="utf-8")
        if dest.exists():  # a half-unpacked earlier try
            shutil.rmtree(dest)
        os.replace(unpacked, dest)
    return dest


def stamps_root(
    stamps: str | os.PathLike | None = None, cache: str | os.PathLike | None = None
) -> pathlib.Path:
    """The folder of stamp categories: ``stamps`` if given, else the fetched package's.

    ``stamps`` may be the stamps folder itself or a folder the package was unpacked into
    (``dpkg -x tuxpaint-stamps-default_*.deb DIR``).
    """
    if stamps is not None:
        root = pathlib.Path(stamps)
        if not root.is_dir():
            raise FileNotFoundError(f"--stamps {root}: no such folder")
        nested = root / STAMPS_SUBDIR
        return nested if nested.is_dir() else root
    hint = (
        f"unpack {STAMPS_PACKAGE} yourself (dpkg -x {STAMPS_PACKAGE}_*.deb DIR) and pass "
        "--stamps DIR"
    )
    return fetch_package(STAMPS_PACKAGE, cache, hint=hint) / STAMPS_SUBDIR


def background_folders(
    backgrounds: str | os.PathLike | None,
    cache: str | os.PathLike | None = None,
    packages: Sequence[str] = BACKGROUND_PACKAGES,
) -> list[str]:
    """Where the background packages lie: ``[backgrounds]`` when given (``"none"``: no
    folder), else each of ``packages`` fetched; one that cannot be fetched is warned about and
    left out, since the generators can go on with scikit-image's pictures."""
    if backgrounds is not None:
        if str(backgrounds) == "none":
            return []
        if not pathlib.Path(backgrounds).is_dir():
            raise FileNotFoundError(f"--backgrounds {backgrounds}: no such folder")
        return [str(backgrounds)]
    folders = []
    for package in packages:
        try:
            folders.append(str(fetch_package(package, cache)))
        except PackageFetchError as exc:
            logger.warning("%s; going on without its backgrounds", exc)
    return folders
