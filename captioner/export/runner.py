"""Running an export: :class:`ExportedCaptioner`, the inference pipeline driven through the
exported graphs (TorchScript with ``torch.jit.load``, ONNX with onnxruntime)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file

from captioner.decoding import SearchConfig
from captioner.encoders import ImageNetHead, Preprocess
from captioner.encoders.onnx import ort_session
from captioner.export.format import (
    EXPORT_VERSION,
    FORMATS,
    META_FILE,
    ONNX_PACKAGES,
    ExportError,
    Tensors,
    known_warnings,
)
from captioner.files import sha256_file
from captioner.inference import CaptionPipeline
from captioner.inference.common import encode_chunk
from captioner.media import DEFAULT_LIMITS, ImageLimits
from captioner.models.caption import CaptionDecoderConfig, DecoderState
from captioner.vocab import Vocabulary


class _GraphDecoder:
    """The decoder interface ``captioner.decoding`` drives, backed by exported graphs."""

    def __init__(self, config: CaptionDecoderConfig, init: Callable, step: Callable):
        self.config = config
        self._init, self._step = init, step

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def init_state(self, features: torch.Tensor) -> DecoderState:
        out = self._init(features)
        if self.config.attention:
            h, c, memory, keys = out
            return DecoderState(h, c, memory, keys)
        h, c = out
        return DecoderState(h, c, None, None)

    def step(
        self, state: DecoderState, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        if self.config.attention:
            logp, alpha, h, c = self._step(tokens, state.h, state.c, state.memory, state.keys)
        else:
            (logp, h, c), alpha = self._step(tokens, state.h, state.c), None
        return logp, DecoderState(h, c, state.memory, state.keys), alpha


def _torchscript_runner(path: Path) -> Callable[..., Tensors]:
    with known_warnings():
        module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(*inputs: torch.Tensor) -> Tensors:
        with torch.no_grad():
            out = module(*inputs)
        return out if isinstance(out, tuple) else (out,)

    return run


def _onnx_runner(path: Path, names: list[str], threads: int | None) -> Callable[..., Tensors]:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ExportError(f"running an ONNX export needs onnxruntime: {ONNX_PACKAGES}") from exc
    session = ort_session(path, threads)

    def run(*inputs: torch.Tensor) -> Tensors:
        feed = {
            n: t.detach().cpu().contiguous().numpy() for n, t in zip(names, inputs, strict=True)
        }
        return tuple(torch.from_numpy(a) for a in session.run(None, feed))

    return run


class ExportedCaptioner(CaptionPipeline):
    """A reference runner for an export folder: images in, captions out, on the CPU.

    TorchScript graphs load with ``torch.jit.load``, ONNX graphs with onnxruntime. Image
    loading, the search and the results are the inference pipeline's own
    (:class:`~captioner.inference.CaptionPipeline`), driven through the exported graphs.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        threads: int | None = None,
        limits: ImageLimits = DEFAULT_LIMITS,
    ):
        self.folder = Path(folder)
        meta_path = self.folder / META_FILE
        if not meta_path.is_file():
            raise ExportError(f"no export at {folder}: expected export.json (captioner export)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") not in FORMATS or meta.get("export_version") != EXPORT_VERSION:
            raise ExportError(f"{meta_path}: unsupported export (format {meta.get('format')!r})")
        self.meta = meta
        self.format: str = meta["format"]
        runners = {}
        for name, graph in meta["graphs"].items():
            path = self.folder / graph["file"]
            if not path.is_file():
                raise ExportError(f"export {folder} is missing its graph file {graph['file']}")
            if self.format == "torchscript":
                runners[name] = _torchscript_runner(path)
            else:
                names = [i["name"] for i in graph["inputs"]]
                runners[name] = _onnx_runner(path, names, threads)
        self._encoder = runners["encoder"]
        head = meta.get("head")
        config = CaptionDecoderConfig.from_dict(meta["model"])
        d = meta["decoding"]
        search = SearchConfig(
            beam_size=d["beam_size"],
            max_len=d["max_len"],
            length_penalty=d["length_penalty"],
            suppress=tuple(d["suppress"]),
        )
        super().__init__(
            _GraphDecoder(config, runners["decoder_init"], runners["decoder_step"]),
            Vocabulary(meta["vocabulary"]),
            search,
            torch.device("cpu"),
            Preprocess.from_dict(meta["preprocess"]),
            limits=limits,
        )
        if head is not None:  # object slots and tags, as in the bundle
            path = self.folder / head["file"]
            if not path.is_file() or sha256_file(path) != head["sha256"]:
                raise ExportError(f"export {folder}: {head['file']} is missing or corrupt")
            tensors = load_file(str(path))
            self.head = ImageNetHead(tensors["weight"], tensors["bias"])

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) uint8 -> (B, N, C) features through the exported encoder, in the
        pipeline's chunks (:func:`~captioner.inference.common.encode_chunk`)."""
        size = encode_chunk(self.device) or max(1, len(images))
        parts = [
            self._encoder(images[s : s + size])[0] for s in range(0, max(1, len(images)), size)
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)
