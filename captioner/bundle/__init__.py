"""A trained model on disk: ``manifest.json`` plus safetensors weight files. No pickle anywhere.

The manifest says everything needed to rebuild the model without the training code: format
version, task, encoder name and preprocessing, decoder config, vocabulary or class names,
decoding defaults, how it was trained, its metrics, and the sha256 of every weight file. Its
typed form is :class:`~captioner.bundle.manifest.Manifest` (``Bundle.spec``, ``read_spec``).
"""

from __future__ import annotations

import importlib.resources
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from captioner.bundle.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    TASKS,
    BundleError,
    Decoding,
    EncoderEntry,
    Manifest,
)
from captioner.files import atomic_write, sha256_file

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "TASKS",
    "Bundle",
    "BundleError",
    "Decoding",
    "EncoderEntry",
    "Manifest",
    "load_bundle",
    "load_state_strict",
    "read_manifest",
    "read_spec",
    "record_metrics",
    "save_bundle",
    "shipped_bundle_dir",
]


@dataclass
class Bundle:
    """A bundle read from disk: its manifest and its weight tensors by file name.

    ``spec`` is the manifest typed and checked, parsed once when the bundle is made (a
    BundleError names the bad field and the file); ``manifest`` is the JSON object as read.
    """

    path: Path
    manifest: dict
    weights: dict[str, dict[str, torch.Tensor]]
    spec: Manifest = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.spec = Manifest.from_dict(self.manifest, where=str(self.path / MANIFEST))

    @property
    def task(self) -> str:
        return self.spec.task


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    atomic_write(path, lambda tmp: write(str(tmp)))


def _write_manifest(folder: Path, manifest: dict) -> None:
    text = json.dumps(manifest, indent=2) + "\n"
    _atomic_write(folder / MANIFEST, lambda tmp: Path(tmp).write_text(text))


def save_bundle(
    path: str | os.PathLike,
    manifest: Manifest | dict,
    weights: dict[str, dict[str, torch.Tensor]],
) -> Path:
    """Write ``weights`` ({file name: state dict}) and a manifest with their hashes to ``path``.

    ``manifest`` is a :class:`Manifest` (checked before anything is written) or a dict of the
    task-specific fields (``task``, ``encoder``, ``model``, ...); this function adds the
    format, version and file hashes.
    """
    if isinstance(manifest, Manifest):
        # A round trip through the reader: what is written is what a loader will accept.
        Manifest.from_dict(manifest.to_dict(), where=f"the manifest for {path}")
        manifest = manifest.to_dict()
    manifest = {k: v for k, v in manifest.items() if k not in ("format", "format_version", "files")}
    if manifest.get("task") not in TASKS:
        raise BundleError(f"manifest task must be one of {TASKS}, got {manifest.get('task')!r}")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, state in weights.items():
        if not name.endswith(".safetensors") or "/" in name:
            raise BundleError(
                f"weight file names must be plain '*.safetensors' names, got {name!r}"
            )
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        _atomic_write(out / name, lambda tmp, t=tensors: save_file(t, tmp))
        files[name] = {"sha256": sha256_file(out / name), "bytes": (out / name).stat().st_size}
    _write_manifest(
        out, {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest, "files": files}
    )
    return out


def read_manifest(path: str | os.PathLike) -> dict:
    """Read and check a bundle's manifest (format, version, task), without loading weights."""
    folder = Path(path)
    file = folder / MANIFEST if folder.is_dir() else folder
    if not file.is_file():
        raise BundleError(
            f"no bundle at {path}: expected a folder with {MANIFEST} and *.safetensors files "
            "(as written by 'captioner train')"
        )
    try:
        manifest = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{file} is not a captioner bundle manifest (format != {FORMAT!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{file} has bundle format version {version!r}; this captioner reads version "
            f"{FORMAT_VERSION}. Upgrade captioner or re-export the bundle."
        )
    if manifest.get("task") not in TASKS:
        raise BundleError(f"{file}: unknown task {manifest.get('task')!r}, expected one of {TASKS}")
    if not isinstance(manifest.get("files"), dict) or not manifest["files"]:
        raise BundleError(f"{file} lists no weight files")
    return manifest


def read_spec(path: str | os.PathLike) -> Manifest:
    """Read a bundle's manifest, typed and checked, without loading weights."""
    folder = Path(path)
    file = folder / MANIFEST if folder.is_dir() else folder
    return Manifest.from_dict(read_manifest(folder), where=str(file))


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Read a bundle, checking every weight file's sha256 against the manifest."""
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    manifest = read_manifest(folder)
    weights = {}
    for name, meta in manifest["files"].items():
        file = folder / name
        if not file.is_file():
            raise BundleError(f"bundle {folder} is missing its weight file {name}")
        digest = sha256_file(file)
        if digest != meta.get("sha256"):
            raise BundleError(
                f"{file} has sha256 {digest} but the manifest says {meta.get('sha256')}: "
                "the file is corrupt or was changed; copy the bundle again"
            )
        weights[name] = load_file(str(file))
    return Bundle(folder, manifest, weights)


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with shape mismatches reported as a BundleError."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{k}: bundle {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}")
        if wrong:
            parts.append(f"mismatched shapes {wrong[:5]}")
        raise BundleError(
            f"{what} weights do not fit the config in the manifest: " + "; ".join(parts)
        )
    module.load_state_dict(state, strict=True)


def record_metrics(path: str | os.PathLike, name: str, values: dict) -> None:
    """Store evaluation results in a bundle's manifest under ``metrics[name]`` (atomic rewrite).

    The manifest is not covered by the weight hashes, so the weights stay valid.
    """
    folder = Path(path)
    manifest = read_manifest(folder)
    manifest.setdefault("metrics", {})[name] = values
    _write_manifest(folder, manifest)


def shipped_bundle_dir(task: str = "caption") -> Path:
    """The default bundle for ``task`` shipped with captioner (``<task>-default``).

    Installed, it is package data (``captioner/_weights``, which is ``weights/`` in the source
    tree); otherwise the source tree's ``weights/``. The path is returned even when missing, so
    that the loader's error names it.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    name = f"{task}-default"
    packaged = importlib.resources.files("captioner") / "_weights" / name
    if isinstance(packaged, Path) and (packaged / MANIFEST).is_file():  # a plain folder, no zip
        return packaged.resolve()
    return Path(__file__).resolve().parents[2] / "weights" / name
