"""What both tasks' pipelines share: device and precision policy, encoding, opening bundles.

Encoding has one policy too (:func:`encode_images`): the encoder runs in chunks sized for the
device (:func:`encode_chunk`) and, on the CPU, in ONNX Runtime when it is installed
(:func:`encoder_runtime`); the decoders always see the whole batch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from captioner.bundle import (
    Bundle,
    BundleError,
    Manifest,
    load_bundle,
    load_state_strict,
    read_manifest,
    shipped_bundle_dir,
)
from captioner.bundle.manifest import DEFAULT_NAMES
from captioner.data.features import default_cache_root
from captioner.encoders import Encoder, build_encoder
from captioner.encoders.onnx import OnnxEncoder, OnnxUnavailable, onnx_encoder
from captioner.inference.results import ErrorResult, Errors
from captioner.media import MediaError

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
M = TypeVar("M", bound=torch.nn.Module)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; a CUDA request without CUDA is a clear error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available; use 'cpu'")
    return dev


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """fp16 autocast on CUDA; nothing on the CPU, so the CPU path runs the same code in fp32.

    This is the one precision policy: serving, batch jobs, evaluation and validation during
    training all run the model under it, so reported scores measure what is served.
    """
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def precision_name(device: torch.device) -> str:
    """How :func:`autocast` runs the model on ``device``, for reports and evaluation results."""
    return "fp16-autocast" if device.type == "cuda" else "fp32"


def prepare_encoder(encoder: Encoder, device: torch.device) -> Encoder:
    """Eval mode on ``device``, channels_last (depthwise convs run ~2x faster in it, CPU too)."""
    return encoder.eval().to(device, memory_format=torch.channels_last)


RUNTIME_ENV = "CAPTIONER_ENCODER_RUNTIME"
CHUNK_ENV = "CAPTIONER_ENCODE_CHUNK"
RUNTIMES = ("auto", "torch", "onnx")
#: Images per encoder pass on the CPU: on 2 cores a batch of 4 runs 1.2-1.4x faster per image
#: than 32, whose activations no longer fit the cache (bench/encoder_runtime.py).
CPU_ENCODE_CHUNK = 4


def encode_chunk(device: torch.device) -> int | None:
    """Images per encoder pass on ``device``: ``$CAPTIONER_ENCODE_CHUNK`` (0: the whole batch),
    else :data:`CPU_ENCODE_CHUNK` on the CPU and the whole batch (None) on a GPU."""
    env = os.environ.get(CHUNK_ENV, "").strip()
    if env:
        if not env.isdigit():
            raise ValueError(f"${CHUNK_ENV} must be a whole number of images (0: all), not {env!r}")
        return int(env) or None
    return CPU_ENCODE_CHUNK if device.type == "cpu" else None


@dataclass(eq=False)
class _Runtime:
    """One encoder's runtime: the choice made for it and its ONNX session, built once."""

    requested: str | None = None  # None: $CAPTIONER_ENCODER_RUNTIME, else auto
    onnx: OnnxEncoder | None = None
    stamp: int | None = None  # the weights the session was built from (see _weights_stamp)
    failed: str | None = None  # why ONNX Runtime cannot encode for it (auto then keeps torch)
    said: str | None = None  # the runtime the log last named
    lock: threading.Lock = field(default_factory=threading.Lock)


_RUNTIMES: weakref.WeakKeyDictionary[Encoder, _Runtime] = weakref.WeakKeyDictionary()
_RUNTIMES_LOCK = threading.Lock()


def _runtime(encoder: Encoder) -> _Runtime:
    with _RUNTIMES_LOCK:
        return _RUNTIMES.setdefault(encoder, _Runtime())


def _requested(state: _Runtime) -> str:
    want = state.requested or os.environ.get(RUNTIME_ENV, "").strip().lower() or "auto"
    if want not in RUNTIMES:
        raise ValueError(f"${RUNTIME_ENV} must be one of {', '.join(RUNTIMES)}, not {want!r}")
    return want


def set_encoder_runtime(encoder: Encoder, runtime: str | None) -> None:
    """Choose how ``encoder`` runs on the CPU: ``"onnx"`` (ONNX Runtime, an error if it
    cannot), ``"torch"`` (eager), ``"auto"`` (ONNX Runtime when installed, else torch) or None
    (``$CAPTIONER_ENCODER_RUNTIME``, default auto). A GPU always runs torch with AMP."""
    if runtime is not None and runtime not in RUNTIMES:
        raise ValueError(f"encoder runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    _runtime(encoder).requested = runtime


def _weights_stamp(encoder: Encoder) -> int:
    # Cheap enough for every call: in-place updates (load_state_dict, an optimiser step) bump a
    # tensor's version, a replaced tensor has a new address; either means the graph is stale.
    tensors = chain(encoder.parameters(), encoder.buffers())
    return hash(tuple((t.data_ptr(), _version(t)) for t in tensors))


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # an inference tensor keeps no version counter
        return -1


def _onnx_for(encoder: Encoder, state: _Runtime, want: str) -> OnnxEncoder | None:
    """The encoder's ONNX session, built (or reloaded from the cache) when its weights changed;
    None when it cannot be had and ``want`` is auto (the reason is logged once)."""
    stamp = _weights_stamp(encoder)
    with state.lock:  # one build per encoder, however many threads encode at once
        if state.onnx is not None and state.stamp == stamp:
            return state.onnx
        if state.failed is None or want == "onnx":
            try:
                folder = default_cache_root() / "onnx"
                state.onnx = onnx_encoder(encoder, folder, torch.get_num_threads())
                state.stamp, state.failed = stamp, None
                return state.onnx
            except OnnxUnavailable as exc:
                if want == "onnx":
                    raise
                state.onnx, state.failed = None, str(exc)
                # a plain install has no ONNX Runtime: that is a choice, not a fault
                plain = want == "auto" and "onnxruntime is not installed" in str(exc)
                (log.info if plain else log.warning)(
                    "%s; encoder %s keeps torch", exc, encoder.name
                )
        return None


def encoder_runtime(encoder: Encoder, device: torch.device) -> str:
    """What encodes for ``encoder`` on ``device``: ``"onnx"`` or ``"torch"`` (deciding it, and
    building the ONNX graph, on the first call)."""
    return "torch" if _onnx_session(encoder, device) is None else "onnx"


def _onnx_session(encoder: Encoder, device: torch.device) -> OnnxEncoder | None:
    """The session that encodes for ``encoder`` on ``device``, or None for torch.

    A module being trained (train mode, or a parameter that requires grad) always runs in
    torch, whose graph follows its weights; so does every GPU (with AMP).
    """
    state = _runtime(encoder)
    want = _requested(state)
    training = encoder.training or any(p.requires_grad for p in encoder.parameters())
    if device.type == "cpu" and want != "torch" and not training:
        onnx = _onnx_for(encoder, state, want)
        if onnx is not None:
            _say(encoder, state, "onnx", device, f", graph {onnx.path or 'not cached'}")
            return onnx
    elif want == "onnx" and device.type != "cpu" and state.said is None:
        log.warning("$%s=onnx applies to the CPU only: %s runs torch", RUNTIME_ENV, device)
    _say(encoder, state, "torch", device, "")
    return None


def _say(encoder: Encoder, state: _Runtime, runtime: str, device: torch.device, extra: str) -> None:
    """The one log line that says which runtime encodes (again only when it changes)."""
    if state.said == runtime:
        return
    state.said = runtime
    chunk = encode_chunk(device)
    chunks = f"chunks of {chunk}" if chunk else "whole batches"
    if runtime == "onnx":
        import onnxruntime

        log.info(
            "encoder %s runs in ONNX Runtime %s on the CPU (%d threads, %s%s); $%s=torch for torch",
            encoder.name,
            onnxruntime.__version__,
            torch.get_num_threads(),
            chunks,
            extra,
            RUNTIME_ENV,
        )
    else:
        how = "eager" if device.type == "cpu" else precision_name(device)
        log.info(
            "encoder %s runs in torch %s on %s (%s, %s)",
            encoder.name,
            torch.__version__,
            device,
            how,
            chunks,
        )


def _torch_encode(encoder: Encoder, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = images.to(device, non_blocking=True)
    x = encoder.preprocess.normalize(x).contiguous(memory_format=torch.channels_last)
    with autocast(device):
        grid, _ = encoder(x)
    return grid


@torch.inference_mode()
def encode_images(
    encoder: Encoder, images: torch.Tensor, device: torch.device, chunk: int | None = None
) -> torch.Tensor:
    """(B, 3, S, S) uint8 -> (B, N, C) features: the one encoding path for inference and caches.

    The encoder runs ``chunk`` images at a time (default :func:`encode_chunk`), in the runtime
    :func:`encoder_runtime` chooses; the grids come back as one batch on ``device``.
    """
    size = chunk or encode_chunk(device) or images.size(0)
    onnx = _onnx_session(encoder, device) if images.size(0) else None
    parts = []
    for start in range(0, max(1, images.size(0)), max(1, size)):
        part = images[start : start + size]
        parts.append(_torch_encode(encoder, part, device) if onnx is None else onnx(part))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def open_bundle(bundle: str | os.PathLike | Bundle, task: str) -> Bundle:
    """Load (hash-checked) a bundle and check it is for ``task``: a bundle of the other task is
    refused as such before its manifest is read field by field."""
    found = bundle.task if isinstance(bundle, Bundle) else read_manifest(bundle)["task"]
    if found != task:
        where = bundle.path if isinstance(bundle, Bundle) else bundle
        article = "an" if task[0] in "aeiou" else "a"
        raise BundleError(f"{where} is a {found!r} bundle, not {article} {task} bundle")
    return bundle if isinstance(bundle, Bundle) else load_bundle(bundle)


def manifest_part(b: Bundle, read: Callable[[], T]) -> T:
    """``read()`` a part of a bundle's manifest (a config, a vocabulary); what it refuses
    becomes a BundleError naming the bundle."""
    try:
        return read()
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{b.path}/manifest.json is incomplete or invalid: {exc}") from exc


def bundle_module(b: Bundle, module: M, weights: str, what: str) -> M:
    """``module`` with the bundle's weights from ``weights`` loaded strictly (BundleError on a
    mismatch), ready for :func:`prepare_encoder`-style placement by its pipeline."""
    load_state_strict(module, b.weights[weights], what)
    return module


def bundle_encoder(b: Bundle) -> Encoder:
    """The bundle's encoder with its own preprocessing and, if fine-tuned, its own weights.

    Preprocessing travels with the bundle: a mismatch would give every image one caption.
    """
    entry = b.spec.encoder
    encoder = build_encoder(entry.name)
    encoder.preprocess = entry.preprocess
    if "encoder.safetensors" in b.weights:
        load_state_strict(encoder.trunk, b.weights["encoder.safetensors"], "encoder")
    rows, cols = encoder.grid_shape
    log.info(
        "%s: encoder %s at %d px, a %dx%d grid of %d-d features",
        b.path.name,
        entry.name,
        entry.preprocess.size,
        rows,
        cols,
        encoder.feature_dim,
    )
    return encoder


def default_bundle_dir(task: str = "caption") -> Path:
    """The shipped bundle: ``$CAPTIONER_<TASK>_BUNDLE``, else the one installed with the package
    (``weights/<task>-default`` in a source checkout)."""
    env = os.environ.get(f"CAPTIONER_{task.upper()}_BUNDLE")
    if env:
        return Path(env)
    return shipped_bundle_dir(task)


class BundleModel:
    """What a task's model says about itself, read from its bundle's typed manifest (``spec``;
    None for a model built without a bundle, which then goes by its task's default name)."""

    task: str = "caption"
    spec: Manifest | None = None

    @property
    def name(self) -> str:
        return self.spec.name if self.spec is not None else DEFAULT_NAMES[self.task]

    @property
    def version(self) -> str:
        return self.spec.version if self.spec is not None else ""

    @property
    def metrics(self) -> dict[str, Any]:
        """Evaluation results stored in the bundle, by split (empty when there are none)."""
        return self.spec.metrics if self.spec is not None else {}

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest as its JSON object (a copy; read the typed ``spec`` instead)."""
        return self.spec.to_dict() if self.spec is not None else {}


def per_item(
    sources: Sequence[Any],
    load: Callable[[Any], T],
    run: Callable[[list[T]], list[R]],
    errors: Errors,
) -> list[R | ErrorResult]:
    """``load`` each source, ``run`` the model once on those that loaded; results in order.

    A source that ``load`` refuses (MediaError) raises with ``errors="raise"``; with
    ``errors="return"`` it gets an :class:`ErrorResult` in its place and the rest go on.
    """
    loaded: list[T | ErrorResult] = []
    for source in sources:
        try:
            loaded.append(load(source))
        except MediaError as exc:
            if errors == "raise":
                raise
            loaded.append(ErrorResult.of(source, exc))
    good = [x for x in loaded if not isinstance(x, ErrorResult)]
    out = iter(run(good) if good else [])
    return [x if isinstance(x, ErrorResult) else next(out) for x in loaded]


_ARRAY_SHAPES = "an HxWx3 uint8 RGB array (HxW grey and HxWx4 RGBA are accepted too)"


def image_from_array(array: np.ndarray) -> Image.Image:
    """A NumPy image -> a PIL image for :func:`captioner.media.decode_image` (which applies the
    size limits and composites RGBA on white). Anything but uint8 ``HxWx3``, ``HxW`` or
    ``HxWx4`` is a MediaError naming the expected shape and dtype."""
    if array.dtype != np.uint8:
        hint = ""
        if np.issubdtype(array.dtype, np.floating):
            hint = "; for 0-1 floats use (array * 255).round().astype(np.uint8)"
        raise MediaError(f"expected {_ARRAY_SHAPES}, got dtype {array.dtype}{hint}")
    grey = array.ndim == 2
    if not (grey or (array.ndim == 3 and array.shape[2] in (3, 4))) or 0 in array.shape:
        hint = ""
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (3, 4):
            hint = "; for a channels-first array use array.transpose(1, 2, 0)"
        raise MediaError(f"expected {_ARRAY_SHAPES}, got shape {tuple(array.shape)}{hint}")
    return Image.fromarray(np.ascontiguousarray(array))
