"""captioner: CNN + LSTM image captioning (and video activity recognition).

The public face: ``captioner.load(path)`` returns a ready model for a bundle folder;
``Captioner`` captions images.
"""

from captioner.bundle import BundleError
from captioner.inference import Captioner, CaptionResult, load
from captioner.media import MediaError

__all__ = ["BundleError", "CaptionResult", "Captioner", "MediaError", "load"]
__version__ = "0.1.0"
