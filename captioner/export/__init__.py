"""Export a caption bundle to TorchScript or ONNX, and a small runner for the exported graphs.

A bundle becomes three graphs with a dynamic batch dimension, so a deployment needs neither
this package's Python models nor its preprocessing beyond the resize:

- ``encoder``: uint8 images (B, 3, S, S) -> feature grid (B, N, C), normalisation included;
- ``decoder_init``: features (B, N, C) -> the state before ``<start>`` (h, c, memory, keys);
- ``decoder_step``: one word per row -> log-probs (B, V), attention (B, N), the next (h, c).

The search (greedy or beam) stays outside the graphs: :class:`ExportedCaptioner` drives
``captioner.decoding`` with an adapter that calls the exported step, so the exported pipeline
and the eager one share a single beam search. ``export.json`` beside the graphs says
everything a foreign runtime needs: names and shapes, vocabulary, special ids, preprocessing.

The package: :mod:`~captioner.export.writer` (:func:`export_bundle`),
:mod:`~captioner.export.runner` (:class:`ExportedCaptioner`) and
:mod:`~captioner.export.format` (names, version, :class:`ExportError`), all re-exported here.
"""

from captioner.export.format import (
    DEFAULT_OPSET,
    EXPORT_VERSION,
    FORMATS,
    HEAD_FILE,
    META_FILE,
    ONNX_PACKAGES,
    SUFFIX,
    ExportError,
)
from captioner.export.runner import ExportedCaptioner
from captioner.export.writer import export_bundle

__all__ = [
    "DEFAULT_OPSET",
    "EXPORT_VERSION",
    "FORMATS",
    "HEAD_FILE",
    "META_FILE",
    "ONNX_PACKAGES",
    "SUFFIX",
    "ExportError",
    "ExportedCaptioner",
    "export_bundle",
]
