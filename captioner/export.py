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
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from captioner.decoding import SearchConfig
from captioner.encoders import ImageNetHead, Preprocess, sha256_file
from captioner.inference import Captioner, CaptionPipeline
from captioner.media import DEFAULT_LIMITS, ImageLimits
from captioner.models.caption import CaptionDecoder, CaptionDecoderConfig, DecoderState
from captioner.vocab import END, PAD, START, UNK, Vocabulary

log = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx")
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}
EXPORT_VERSION = 1
HEAD_FILE = "head.safetensors"
DEFAULT_OPSET = 18
ONNX_PACKAGES = "pip install 'captioner[export]'  (or: pip install onnx onnxscript onnxruntime)"

Tensors = tuple[torch.Tensor, ...]


class ExportError(ValueError):
    """An export cannot be written or read: unknown format, missing package, bad export folder."""


# --- the graphs ---------------------------------------------------------------------------------


class _EncoderGraph(nn.Module):
    """uint8 (B, 3, S, S) -> (B, N, C): the bundle's normalisation, then the CNN trunk."""

    def __init__(self, captioner: Captioner):
        super().__init__()
        pre = captioner.preprocess
        self.encoder = captioner.encoder
        self.register_buffer("mean", torch.tensor(pre.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(pre.std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() / 255.0 - self.mean) / self.std  # as Preprocess.normalize
        grid, _ = self.encoder(x)
        return grid


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
    rows, cols = _grid_shape(captioner)
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


def _grid_shape(captioner: Captioner) -> tuple[int, int]:
    """(rows, cols) of the encoder's feature map at the bundle's input size."""
    size = captioner.preprocess.size
    with torch.no_grad():
        fmap = captioner.encoder.trunk(torch.zeros(1, 3, size, size))
    return int(fmap.size(-2)), int(fmap.size(-1))


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


# --- exporting ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _known_warnings():
    """Hide warnings that say nothing about this export: TorchScript's deprecation notice, the
    tracer's note that the grid size is baked in (it is fixed by the bundle anyway) and the
    ONNX exporter's note that every input shares the one "batch" dimension."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r"# The axis name: batch will not be used")
        yield


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's own INFO lines (graph passes, optimisations) show only under -v."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    names = ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


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
    """The dynamo exporter, weights inside the file, batch dimension dynamic on every input."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    names = [i["name"] for i in spec["inputs"]]
    with _quiet_exporter():
        program = _onnx_program(module, spec, names, batch, opset)
    program.save(str(path), external_data=False)


def _onnx_program(module: nn.Module, spec: dict, names: list[str], batch: Any, opset: int) -> Any:
    return torch.onnx.export(
        module,
        _example_inputs(spec, 2),
        input_names=names,
        output_names=[o["name"] for o in spec["outputs"]],
        opset_version=opset,
        dynamo=True,
        external_data=False,
        verbose=False,  # the exporter's progress lines would mix into the CLI's JSON on stdout
        dynamic_shapes={name: {0: batch} for name in _forward_arg_names(module, len(names))},
    )


def _forward_arg_names(module: nn.Module, count: int) -> list[str]:
    """``dynamic_shapes`` is keyed by forward()'s parameter names, not the ONNX input names."""
    return list(inspect.signature(module.forward).parameters)[:count]


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
        "encoder": _EncoderGraph(captioner),
        "decoder_init": _InitGraph(captioner.decoder),
        "decoder_step": _StepGraph(captioner.decoder),
    }
    graphs = {}
    with torch.no_grad(), _known_warnings():
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
        save_file({"weight": captioner.head.weight, "bias": captioner.head.bias}, str(head))
        meta["head"] = {
            "file": HEAD_FILE,
            "sha256": sha256_file(head),
            "note": "ImageNet class probabilities = softmax(weight @ mean(grid over cells) + bias)",
        }
    meta_path = folder / "export.json"
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta_path


def _metadata(
    captioner: Captioner, bundle: str | os.PathLike, fmt: str, opset: int, graphs: dict
) -> dict[str, Any]:
    m = captioner.manifest
    search = captioner.default_search
    return {
        "format": fmt,
        "export_version": EXPORT_VERSION,
        "torch_version": torch.__version__,
        "opset": opset if fmt == "onnx" else None,
        "source": {
            "name": m.get("name"),
            "version": m.get("version"),
            "path": str(Path(bundle)),
            "sha256": {name: meta["sha256"] for name, meta in m["files"].items()},
        },
        "preprocess": {
            **captioner.preprocess.to_dict(),
            "note": "RGB, resized to size x size without crop, uint8 (B, 3, S, S); mean/std "
            "are applied inside the encoder graph",
        },
        "grid": list(_grid_shape(captioner)),
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


# --- running an export --------------------------------------------------------------------------


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
    with _known_warnings():
        module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(*inputs: torch.Tensor) -> Tensors:
        with torch.no_grad():
            out = module(*inputs)
        return out if isinstance(out, tuple) else (out,)

    return run


def _onnx_runner(path: Path, names: list[str], threads: int | None) -> Callable[..., Tensors]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ExportError(f"running an ONNX export needs onnxruntime: {ONNX_PACKAGES}") from exc
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

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
        meta_path = self.folder / "export.json"
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
        """(B, 3, S, S) uint8 -> (B, N, C) features through the exported encoder."""
        return self._encoder(images)[0]
