"""The shipped models by name: what ``captioner.load("caption")`` and ``list_models()`` read.

A name is a task (``"caption"``, ``"activity"``: that task's default model, which
``$CAPTIONER_<TASK>_BUNDLE`` may replace) or a shipped bundle's folder name
(``"caption-default"``, ``"activity-default"``). Anything else is a bundle folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from captioner.bundle import MANIFEST, BundleError, read_spec, shipped_bundle_dir
from captioner.inference.common import default_bundle_dir

__all__ = ["MODEL_TASKS", "ModelInfo", "bundle_path", "list_models", "model_names"]

#: The tasks :func:`captioner.load` gives a model for. A ``motion`` bundle is not one: it is a
#: part the activity pipeline loads (``ActivityClassifier(..., motion=...)``).
MODEL_TASKS = ("caption", "activity")


@dataclass(frozen=True)
class ModelInfo:
    """A shipped model, from its manifest alone (no weights read)."""

    name: str  # the shipped bundle's folder name, e.g. "caption-default"
    task: str
    aliases: tuple[str, ...]  # other names load() takes for it (the task, unless overridden)
    path: Path
    model_name: str  # the name the model gives itself in its manifest
    version: str
    encoder: str
    input_size: int  # pixels of the encoder's square input
    labels: int  # vocabulary tokens (caption) or classes (activity)


def model_names() -> list[str]:
    """Every name :func:`bundle_path` knows: the tasks, then the shipped bundles."""
    return [*MODEL_TASKS, *(f"{task}-default" for task in MODEL_TASKS)]


def bundle_path(model: str | os.PathLike | None = None, task: str = "caption") -> Path:
    """A model name or a bundle folder -> the folder (``None``: the default model of ``task``).

    A path that exists is always that path, so a folder of the same name as a model still
    loads (write ``./caption`` to be sure). An unknown name that is not a folder either is a
    BundleError listing the names there are.
    """
    if model is None:
        return default_bundle_dir(task)
    text = os.fsdecode(model)
    if Path(text).exists():
        return Path(text)
    if text in MODEL_TASKS:
        return default_bundle_dir(text)
    if text.endswith("-default") and text.removesuffix("-default") in MODEL_TASKS:
        return shipped_bundle_dir(text.removesuffix("-default"))
    if os.sep in text or "/" in text or text.endswith(MANIFEST):
        return Path(text)  # meant as a path: the loader's error names the missing folder
    raise BundleError(
        f"no model named {text!r} and no bundle folder at {text}: the models by name are "
        f"{', '.join(model_names())} (captioner.list_models()); or pass a bundle folder"
    )


def list_models() -> list[ModelInfo]:
    """The shipped models, one per task, described from their manifests (fast: no weights).

    A shipped bundle missing from this install is left out. ``$CAPTIONER_<TASK>_BUNDLE``
    makes another folder the task's default: the shipped one then has no alias.
    """
    out = []
    for task in MODEL_TASKS:
        folder = shipped_bundle_dir(task)
        try:
            spec = read_spec(folder)
        except BundleError:
            continue
        out.append(
            ModelInfo(
                name=f"{task}-default",
                task=task,
                aliases=(task,) if default_bundle_dir(task) == folder else (),
                path=folder,
                model_name=spec.name,
                version=spec.version,
                encoder=spec.encoder.name,
                input_size=spec.encoder.preprocess.size,
                labels=len(spec.tokens) if task == "caption" else len(spec.classes or []),
            )
        )
    return out
