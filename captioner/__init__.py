"""captioner: CNN + LSTM image captioning and video activity recognition.

The public face: ``captioner.load(name_or_path)`` returns a ready model for a model name
(``"caption"``, ``"activity"``; see ``captioner.list_models()``) or a bundle folder: a
``Captioner`` for caption bundles, an ``ActivityClassifier`` for activity bundles.

The names below are imported on first use (PEP 562), so ``import captioner`` (and
``captioner --version``) does not pay for torch until a model is asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_LAZY = {
    "ActivityClassifier": "captioner.inference",
    "ActivityResult": "captioner.inference",
    "BundleError": "captioner.bundle.manifest",
    "CaptionResult": "captioner.inference",
    "Captioner": "captioner.inference",
    "ErrorResult": "captioner.inference",
    "MediaError": "captioner.media",
    "ModelInfo": "captioner.inference",
    "UnsupportedFormat": "captioner.media",
    "default_bundle_dir": "captioner.inference",
    "list_models": "captioner.inference",
    "load": "captioner.inference",
}

__all__ = [
    "ActivityClassifier",
    "ActivityResult",
    "BundleError",
    "CaptionResult",
    "Captioner",
    "ErrorResult",
    "MediaError",
    "ModelInfo",
    "UnsupportedFormat",
    "default_bundle_dir",
    "list_models",
    "load",
]
assert set(__all__) == set(_LAZY)

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from captioner.bundle.manifest import BundleError
    from captioner.inference import (
        ActivityClassifier,
        ActivityResult,
        Captioner,
        CaptionResult,
        ErrorResult,
        ModelInfo,
        default_bundle_dir,
        list_models,
        load,
    )
    from captioner.media import MediaError, UnsupportedFormat


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'captioner' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
