"""captioner: CNN + LSTM image captioning and video activity recognition.

The public face: ``captioner.load(path)`` returns a ready model for a bundle folder:
a ``Captioner`` for caption bundles, an ``ActivityClassifier`` for activity bundles.
"""

from captioner.bundle import BundleError
from captioner.inference import (
    ActivityClassifier,
    ActivityResult,
    Captioner,
    CaptionResult,
    default_bundle_dir,
    load,
)
from captioner.media import MediaError, UnsupportedFormat

__all__ = [
    "ActivityClassifier",
    "ActivityResult",
    "BundleError",
    "CaptionResult",
    "Captioner",
    "MediaError",
    "UnsupportedFormat",
    "default_bundle_dir",
    "load",
]
__version__ = "0.1.0"
