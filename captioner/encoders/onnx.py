"""An encoder as an ONNX graph run by ONNX Runtime on the CPU: exported from the live module on
first use, cached on disk, checked before it is trusted.

The graph is the one ``captioner export --format onnx`` writes for its encoder (uint8 images ->
normalisation -> trunk -> (B, N, C) grid; :class:`EncoderGraph`, :func:`export_onnx`), so the
export writer and the CPU fast path share one exporter call. A cached graph is named and
checked by :func:`fingerprint` (the module's weights, the preprocessing, the graph version, the
opset and the exporter's and runtime's versions) and, once loaded, by running it beside the
torch module on a probe batch: a stale, corrupt or wrong file is rebuilt, never used.

Needs the ``[export]`` extra (onnx, onnxscript and onnxruntime); :class:`OnnxUnavailable`
says what is missing or what failed, so the caller can keep torch.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.metadata
import inspect
import logging
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from captioner.encoders.module import Encoder
from captioner.encoders.registry import EncoderError
from captioner.files import atomic_write

log = logging.getLogger(__name__)

#: The ONNX opset every graph of this package is exported at.
DEFAULT_OPSET = 18
#: Bumped whenever :class:`EncoderGraph` computes something else: old cache files go stale.
GRAPH_VERSION = 1
#: The key under which a cached graph carries its fingerprint (ONNX ``metadata_props``).
FINGERPRINT_KEY = "captioner.encoder_fingerprint"
ONNX_EXTRA = "pip install 'captioner[export]'  (or: pip install onnx onnxscript onnxruntime)"
#: Packages whose versions change what the exporter writes or how the runtime runs it.
_VERSIONED = ("torch", "onnx", "onnxscript", "onnx-ir", "onnxruntime")


class OnnxUnavailable(EncoderError):
    """The encoder cannot run in ONNX Runtime here: a package is missing or the export failed."""


class EncoderGraph(nn.Module):
    """uint8 (B, 3, S, S) -> (B, N, C): the encoder's normalisation, then its trunk."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        pre = encoder.preprocess
        self.encoder = encoder
        self.register_buffer("mean", torch.tensor(pre.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(pre.std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() / 255.0 - self.mean) / self.std  # as Preprocess.normalize
        grid, _ = self.encoder(x)
        return grid


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
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


def export_onnx(
    module: nn.Module,
    example: Sequence[torch.Tensor],
    input_names: list[str],
    output_names: list[str],
    path: Path,
    opset: int = DEFAULT_OPSET,
    metadata: dict[str, str] | None = None,
) -> None:
    """The dynamo exporter: weights inside the file, the batch dimension dynamic on every input,
    ``metadata`` stored as the model's ``metadata_props``."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    # dynamic_shapes is keyed by forward()'s parameter names, not the ONNX input names.
    params = list(inspect.signature(module.forward).parameters)[: len(input_names)]
    with quiet_exporter():
        program = torch.onnx.export(
            module,
            tuple(example),
            input_names=input_names,
            output_names=output_names,
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,  # the exporter's progress lines would mix into the CLI's JSON on stdout
            dynamic_shapes={name: {0: batch} for name in params},
        )
    for key, value in (metadata or {}).items():
        program.model.metadata_props[key] = value
    program.save(str(path), external_data=False)


def runtime_versions() -> dict[str, str]:
    """Versions of the packages the graph depends on; OnnxUnavailable when one is missing."""
    try:
        return {name: importlib.metadata.version(name) for name in _VERSIONED}
    except importlib.metadata.PackageNotFoundError as exc:
        raise OnnxUnavailable(f"the ONNX encoder needs {exc.name}: {ONNX_EXTRA}") from exc


def fingerprint(encoder: Encoder, opset: int = DEFAULT_OPSET) -> str:
    """sha256 over everything the exported graph depends on: the encoder's name, every tensor
    of its state dict (name, dtype, shape, values), its preprocessing, the graph version, the
    opset and the exporter's and runtime's versions."""
    h = hashlib.sha256()
    header = [encoder.name, encoder.preprocess.to_dict(), GRAPH_VERSION, opset, runtime_versions()]
    h.update(repr(header).encode())
    for name, tensor in encoder.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def session_options(threads: int | None, spin: bool = True) -> Any:
    """ONNX Runtime options: ``threads`` intra-op threads (None: its default), one inter-op;
    ``spin=False``: idle threads sleep instead of spin-waiting for the next run."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def ort_session(model: Path | bytes, threads: int | None, spin: bool = True) -> Any:
    """A CPU InferenceSession on a file or the bytes of one (``run`` is thread-safe)."""
    import onnxruntime as ort

    source = str(model) if isinstance(model, Path) else model
    options = session_options(threads, spin)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


class OnnxEncoder:
    """A session over an :class:`EncoderGraph`: (B, 3, S, S) uint8 -> (B, N, C) float32 grid.

    One per encoder, shared by every thread that encodes with it (``session.run`` is
    thread-safe). ``path`` is the cache file it came from (None when it could not be cached).
    """

    def __init__(self, session: Any, fingerprint: str, path: Path | None, threads: int | None):
        self.session = session
        self.fingerprint = fingerprint
        self.path = path
        self.threads = threads
        self._input = session.get_inputs()[0].name

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"the ONNX encoder takes uint8 images, got {images.dtype}")
        feed = {self._input: images.detach().cpu().contiguous().numpy()}
        return torch.from_numpy(self.session.run(None, feed)[0])


def _probe(size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=g)


def disagreement(encoder: Encoder, onnx: OnnxEncoder) -> tuple[float, float]:
    """(max abs difference, allowed) between the graph and the torch module on a probe batch.

    fp32 on both sides differs only in the order of sums (at most 4e-5 to 7e-5 on
    EfficientNet-Lite0's grid, whose values lie in [0, 6]); the allowance, 1e-3 of the grid's
    scale, is far below what a wrong or damaged weight gives.
    """
    x = _probe(encoder.preprocess.size)
    graph = EncoderGraph(encoder).eval()
    with torch.inference_mode():
        want = graph(x).float()
    got = onnx(x)
    if got.shape != want.shape:
        return float("inf"), 0.0
    return float((got - want).abs().max()), 1e-3 * (1.0 + float(want.abs().max()))


def _export_encoder(encoder: Encoder, path: Path, opset: int, fp: str) -> None:
    """Export a copy of ``encoder`` (plain memory format, in fp32 on the CPU) to ``path``."""
    twin = copy.deepcopy(encoder).float().cpu().to(memory_format=torch.contiguous_format)
    graph = EncoderGraph(twin).eval()
    example = (_probe(encoder.preprocess.size),)
    # The caller may be under inference_mode (encode_images is): the exporter traces outside it.
    with torch.inference_mode(False), torch.no_grad():
        export_onnx(graph, example, ["images"], ["features"], path, opset, {FINGERPRINT_KEY: fp})


def cache_file(folder: Path, encoder: Encoder, fp: str) -> Path:
    """``<folder>/<encoder name>-<first 16 hex of the fingerprint>.onnx``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", encoder.name)
    return folder / f"{name}-{fp[:16]}.onnx"


def _checked(encoder: Encoder, source: Path | bytes, fp: str, threads: int | None) -> OnnxEncoder:
    """A session on ``source`` if it carries ``fp`` and agrees with torch; else ValueError."""
    # No spin-waiting: between encoder runs the torch decoder needs the same cores (on 2 busy
    # cores the caption pipeline ran ~1.8x faster with it off, at ~0.6x the CPU time).
    session = ort_session(source, threads, spin=False)
    found = session.get_modelmeta().custom_metadata_map.get(FINGERPRINT_KEY)
    if found != fp:
        raise ValueError(f"fingerprint {found!r} is not this encoder's")
    onnx = OnnxEncoder(session, fp, source if isinstance(source, Path) else None, threads)
    diff, allowed = disagreement(encoder, onnx)
    if not diff <= allowed:
        raise ValueError(f"it differs from torch by {diff:.3g} (allowed {allowed:.3g})")
    return onnx


def onnx_encoder(
    encoder: Encoder, folder: Path, threads: int | None, opset: int = DEFAULT_OPSET
) -> OnnxEncoder:
    """``encoder`` in ONNX Runtime: the cached graph in ``folder`` when it is this encoder's and
    sound, else exported afresh and cached (atomically); OnnxUnavailable when that fails.

    A folder that cannot be written costs the cache only: the graph is then exported to a
    temporary folder and loaded from memory.
    """
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise OnnxUnavailable(f"onnxruntime is not installed: {ONNX_EXTRA}") from exc
    fp = fingerprint(encoder, opset)
    path = cache_file(folder, encoder, fp)
    if path.is_file():
        try:
            return _checked(encoder, path, fp, threads)
        except Exception as exc:  # a torn, damaged or foreign file: rebuilt below
            log.warning("the cached ONNX encoder %s is unusable (%s); rebuilding it", path, exc)
    log.info("exporting encoder %s to ONNX -> %s (once for these weights)", encoder.name, path)
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise OnnxUnavailable(
            f"exporting the encoder to ONNX needs {exc.name}: {ONNX_EXTRA}"
        ) from exc
    try:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: _export_encoder(encoder, tmp, opset, fp))
            source: Path | bytes = path
        except OSError as exc:
            log.warning(
                "cannot cache the ONNX encoder in %s (%s); it is rebuilt next run", folder, exc
            )
            with tempfile.TemporaryDirectory() as tmp:
                _export_encoder(encoder, Path(tmp) / "encoder.onnx", opset, fp)
                source = (Path(tmp) / "encoder.onnx").read_bytes()
        return _checked(encoder, source, fp, threads)
    except Exception as exc:  # exporter internals, a graph that disagrees with torch
        raise OnnxUnavailable(f"exporting encoder {encoder.name} to ONNX failed: {exc}") from exc
