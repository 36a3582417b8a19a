"""Writing an export: a caption bundle -> three graphs (TorchScript or ONNX), the ImageNet head's
tensors and ``export.json``."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from captioner.encoders.onnx import EncoderGraph, export_onnx
from captioner.export.format import (
    DEFAULT_OPSET,
    EXPORT_VERSION,
    FORMATS,
    HEAD_FILE,
    META_FILE,
    ONNX_PACKAGES,
    SUFFIX,
    ExportError,
    Tensors,
    known_warnings,
)
from captioner.files import atomic_write, atomic_write_text, sha256_file
from captioner.inference import Captioner
from captioner.models.caption import CaptionDecoder, DecoderState
from captioner.vocab import END, PAD, START, UNK

log = logging.getLogger(__name__)


class _InitGraph(nn.Module):
    """(B, N, C) features -> h, c (B, H) and, with attention, memory (B, N, P), keys (B, N, A)."""

    def __init__(self, decoder: CaptionDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, features: torch.Tensor) -> Tensors:
        s = self.decoder.init_state(features)
        if s.memory is None:
            return s.h, s.c
        return s.h, s.c, s.memory, s.keys


class _StepGraph(nn.Module):
    """One decoder step: log-probs (B, V), attention (B, N) if any, next h and c."""

    def __init__(self, decoder: CaptionDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(
        self,
        tokens: torch.Tensor,
        h: torch.Tensor,
        c: torch.Tensor,
        memory: torch.Tensor | None = None,
        keys: torch.Tensor | None = None,
    ) -> Tensors:
        logp, s, alpha = self.decoder.step(DecoderState(h, c, memory, keys), tokens)
        if alpha is None:
            return logp, s.h, s.c
        return logp, alpha, s.h, s.c


def _io_spec(captioner: Captioner) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Input / output names, dtypes and shapes of the three graphs ("batch" is dynamic)."""
    cfg = captioner.decoder.config
    size = captioner.preprocess.size
    rows, cols = captioner.encoder.grid_shape
    n = rows * cols
    C, H, V = cfg.feature_dim, cfg.hidden_dim, cfg.vocab_size

    def t(name: str, shape: list, dtype: str = "float32") -> dict[str, Any]:
        return {"name": name, "dtype": dtype, "shape": ["batch", *shape]}

    state_in = [t("h", [H]), t("c", [H])]
    attention = cfg.attention
    if attention:
        state_in += [t("memory", [n, cfg.proj_dim]), t("keys", [n, cfg.attention_dim])]
    step_out = [t("log_probs", [V])]
    if attention:
        step_out.append(t("attention", [n]))
    step_out += [t("next_h", [H]), t("next_c", [H])]
    return {
        "encoder": {
            "inputs": [t("images", [3, size, size], "uint8")],
            "outputs": [t("features", [n, C])],
        },
        "decoder_init": {"inputs": [t("features", [n, C])], "outputs": state_in},
        "decoder_step": {"inputs": [t("tokens", [], "int64"), *state_in], "outputs": step_out},
    }


def _example_inputs(spec: dict, batch: int) -> Tensors:
    """Inputs of one graph's ``spec`` for ``batch`` rows (valid token ids, random images)."""
    g = torch.Generator().manual_seed(batch)
    out = []
    for inp in spec["inputs"]:
        shape = [batch, *inp["shape"][1:]]
        if inp["dtype"] == "uint8":
            out.append(torch.randint(0, 256, shape, dtype=torch.uint8, generator=g))
        elif inp["dtype"] == "int64":
            out.append(torch.randint(4, 8, shape, dtype=torch.long, generator=g))
        else:
            out.append(torch.rand(shape, generator=g))
    return tuple(out)


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ExportError(
            f"ONNX export needs the optional packages ({exc}): {ONNX_PACKAGES}"
        ) from exc


def _export_torchscript(module: nn.Module, spec: dict, path: Path) -> None:
    """Trace on a batch of 2; the tracer re-runs it on a batch of 1 to check nothing is baked in."""
    example = _example_inputs(spec, 2)
    checks = [_example_inputs(spec, 1)]
    traced = torch.jit.trace(module, example, check_inputs=checks, check_tolerance=1e-4)
    traced.save(str(path))


def _export_onnx(module: nn.Module, spec: dict, path: Path, opset: int) -> None:
    """The shared exporter call (the CPU fast path exports its encoder graph with it too)."""
    names = [i["name"] for i in spec["inputs"]]
    outputs = [o["name"] for o in spec["outputs"]]
    export_onnx(module, _example_inputs(spec, 2), names, outputs, path, opset)


def export_bundle(
    bundle: str | os.PathLike,
    out: str | os.PathLike,
    fmt: str = "torchscript",
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export a caption bundle's encoder and decoder to ``out``; returns ``out/export.json``.

    Raises ``BundleError`` for a bundle that is missing, corrupt or not a caption bundle and
    ``ExportError`` for an unknown format or a missing optional package.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        _require_onnx()
    captioner = Captioner.from_bundle(bundle, device="cpu")  # BundleError unless a caption bundle
    captioner.encoder.to(memory_format=torch.contiguous_format)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    spec = _io_spec(captioner)
    modules = {
        "encoder": EncoderGraph(captioner.encoder),  # normalisation inside, as on the fast path
        "decoder_init": _InitGraph(captioner.decoder),
        "decoder_step": _StepGraph(captioner.decoder),
    }
    graphs = {}
    with torch.no_grad(), known_warnings():
        for name, module in modules.items():
            path = folder / f"{name}{SUFFIX[fmt]}"
            log.info("exporting %s -> %s", name, path)
            try:
                if fmt == "torchscript":
                    _export_torchscript(module.eval(), spec[name], path)
                else:
                    _export_onnx(module.eval(), spec[name], path, opset)
            except Exception as exc:  # tracer / exporter internals: report which graph failed
                raise ExportError(f"exporting {name} to {fmt} failed: {exc}") from exc
            graphs[name] = {"file": path.name, **spec[name]}
    meta = _metadata(captioner, bundle, fmt, opset, graphs)
    if captioner.head is not None:
        # The ImageNet head names object slots and gives tags: a plain (1000, C) matrix on the
        # grid's mean, kept as tensors rather than a graph so any runtime can apply it.
        head = folder / HEAD_FILE
        tensors = {"weight": captioner.head.weight, "bias": captioner.head.bias}
        atomic_write(head, lambda tmp: save_file(tensors, str(tmp)))
        meta["head"] = {
            "file": HEAD_FILE,
            "sha256": sha256_file(head),
            "note": "ImageNet class probabilities = softmax(weight @ mean(grid over cells) + bias)",
        }
    meta_path = folder / META_FILE
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    return meta_path


def _metadata(
    captioner: Captioner, bundle: str | os.PathLike, fmt: str, opset: int, graphs: dict
) -> dict[str, Any]:
    files = captioner.spec.files if captioner.spec is not None else {}
    search = captioner.default_search
    return {
        "format": fmt,
        "export_version": EXPORT_VERSION,
        "torch_version": torch.__version__,
        "opset": opset if fmt == "onnx" else None,
        "source": {
            "name": captioner.name,
            "version": captioner.version,
            "path": str(Path(bundle)),
            "sha256": {name: meta["sha256"] for name, meta in files.items()},
        },
        "preprocess": {
            **captioner.preprocess.to_dict(),
            "note": "RGB, resized to size x size without crop, uint8 (B, 3, S, S); mean/std "
            "are applied inside the encoder graph",
        },
        "grid": list(captioner.encoder.grid_shape),
        "model": captioner.decoder.config.to_dict(),
        "vocabulary": list(captioner.vocab.itos),
        "special_tokens": {
            name: captioner.vocab.stoi[tok]
            for name, tok in (("pad", PAD), ("start", START), ("end", END), ("unk", UNK))
        },
        "decoding": {
            "beam_size": search.beam_size,
            "max_len": search.max_len,
            "length_penalty": search.length_penalty,
            "suppress": list(search.suppress),
        },
        "graphs": graphs,
    }
