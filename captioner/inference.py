"""Ready-to-use models: bytes / paths / PIL images in, plain results out.

This is the only room that puts encoder, decoder, decoding and media together; the CLI and the
HTTP service both call it, so there is one path from an image to its caption.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from captioner.bundle import Bundle, BundleError, load_bundle, load_state_strict
from captioner.decoding import Hypothesis, SearchConfig, decode, suppress_ids
from captioner.encoders import Encoder, Preprocess, build_encoder
from captioner.media import DEFAULT_LIMITS, ImageLimits, MediaError, decode_image
from captioner.models.activity import ActivityModel, ActivityModelConfig
from captioner.models.caption import CaptionDecoder, CaptionDecoderConfig
from captioner.video import (
    DEFAULT_VIDEO_LIMITS,
    VideoLimits,
    decode_clip,
    local_video,
    probe_video,
    read_frames,
    sliding_windows,
    uniform_indices,
)
from captioner.vocab import UNK, Vocabulary

log = logging.getLogger(__name__)

ImageSource = str | os.PathLike | bytes | bytearray | Image.Image
VideoSource = str | os.PathLike | bytes | bytearray


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; a CUDA request without CUDA is a clear error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available; use 'cpu'")
    return dev


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """fp16 autocast on CUDA; nothing on the CPU, so the CPU path runs the same code in fp32."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def prepare_encoder(encoder: Encoder, device: torch.device) -> Encoder:
    """Eval mode on ``device``, channels_last (depthwise convs run ~2x faster in it, CPU too)."""
    return encoder.eval().to(device, memory_format=torch.channels_last)


@torch.inference_mode()
def encode_images(encoder: Encoder, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(B, 3, S, S) uint8 -> (B, N, C) features: the one encoding path for inference and caches."""
    x = images.to(device, non_blocking=True)
    x = encoder.preprocess.normalize(x).contiguous(memory_format=torch.channels_last)
    with autocast(device):
        grid, _ = encoder(x)
    return grid


def _open_bundle(bundle: str | os.PathLike | Bundle, task: str) -> Bundle:
    """Load (hash-checked) a bundle and check it is for ``task``."""
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    if b.task != task:
        article = "an" if task[0] in "aeiou" else "a"
        raise BundleError(f"{b.path} is a {b.task!r} bundle, not {article} {task} bundle")
    return b


def _bundle_encoder(b: Bundle) -> Encoder:
    """The bundle's encoder with its own preprocessing and, if fine-tuned, its own weights.

    Preprocessing travels with the bundle: a mismatch would give every image one caption.
    """
    try:
        encoder = build_encoder(b.manifest["encoder"]["name"])
        encoder.preprocess = Preprocess.from_dict(b.manifest["encoder"]["preprocess"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{b.path}/manifest.json has no valid encoder entry: {exc}") from exc
    if "encoder.safetensors" in b.weights:
        load_state_strict(encoder.trunk, b.weights["encoder.safetensors"], "encoder")
    return encoder


@dataclass
class CaptionResult:
    """A caption with its log-probability, n-best alternatives and optional attention."""

    caption: str
    log_prob: float
    score: float
    finished: bool
    words: list[str]
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    attention: list[list[float]] | None = None  # one grid (flattened, row-major) per word
    grid: tuple[int, int] | None = None  # (rows, cols) of the attention grid

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Captioner:
    """Image captioning: a CNN encoder and an attention-LSTM decoder with beam search."""

    def __init__(
        self,
        encoder: Encoder,
        decoder: CaptionDecoder,
        vocab: Vocabulary,
        manifest: dict | None = None,
        device: str | torch.device = "auto",
        limits: ImageLimits = DEFAULT_LIMITS,
    ):
        self.device = resolve_device(device)
        self.encoder = prepare_encoder(encoder, self.device)
        self.decoder = decoder.eval().to(self.device)
        self.vocab = vocab
        self.manifest = manifest or {}
        self.limits = limits
        defaults = self.manifest.get("decoding", {})
        self.default_search = SearchConfig(
            beam_size=int(defaults.get("beam_size", 3)),
            max_len=int(defaults.get("max_len", 20)),
            length_penalty=float(defaults.get("length_penalty", 0.0)),
            suppress=suppress_ids(vocab.itos, [UNK]),
        )

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_bundle(
        cls, bundle: str | os.PathLike | Bundle, device: str | torch.device = "auto"
    ) -> Captioner:
        """Load a caption bundle (hash-checked) and its encoder."""
        b = _open_bundle(bundle, "caption")
        m = b.manifest
        try:
            vocab = Vocabulary.from_dict(m["vocabulary"])
            config = CaptionDecoderConfig.from_dict(m["model"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{b.path}/manifest.json is incomplete or invalid: {exc}") from exc
        if config.vocab_size != len(vocab):
            raise BundleError(
                f"{b.path}: decoder vocab_size {config.vocab_size}, vocabulary has {len(vocab)}"
            )
        encoder = _bundle_encoder(b)
        if config.feature_dim != encoder.feature_dim:
            raise BundleError(
                f"{b.path}: decoder expects {config.feature_dim}-d features but encoder "
                f"{encoder.name} gives {encoder.feature_dim}"
            )
        decoder = CaptionDecoder(config)
        load_state_strict(decoder, b.weights["decoder.safetensors"], "decoder")
        return cls(encoder, decoder, vocab, manifest=m, device=device)

    @property
    def name(self) -> str:
        return self.manifest.get("name", "captioner")

    @property
    def preprocess(self) -> Preprocess:
        return self.encoder.preprocess

    # -- the pipeline: preprocess -> encode -> decode -> postprocess ------------------------

    def load_image(self, source: ImageSource) -> torch.Tensor:
        """Decode and validate one image (MediaError on bad input) -> (3, S, S) uint8."""
        size = self.preprocess.size
        image = decode_image(source, self.limits, draft=(size, size))
        return self.preprocess.to_uint8(image)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) uint8 -> (B, N, C) feature grid on the model's device."""
        return encode_images(self.encoder, images, self.device)

    def search_config(
        self,
        beam_size: int | None = None,
        n_best: int = 1,
        max_len: int | None = None,
        length_penalty: float | None = None,
        return_attention: bool = False,
    ) -> SearchConfig:
        d = self.default_search
        return SearchConfig(
            beam_size=d.beam_size if beam_size is None else beam_size,
            max_len=d.max_len if max_len is None else max_len,
            n_best=n_best,
            length_penalty=d.length_penalty if length_penalty is None else length_penalty,
            suppress=d.suppress,
            return_attention=return_attention,
        )

    @torch.inference_mode()
    def caption_features(self, features: torch.Tensor, **options: Any) -> list[CaptionResult]:
        """Decode a (B, N, C) feature grid batch; options as :meth:`search_config`."""
        cfg = self.search_config(**options)
        with autocast(self.device):
            nbest = decode(self.decoder, features, cfg)
        n = features.size(1)
        side = int(round(n**0.5))
        grid = (side, n // side) if side * (n // side) == n else (1, n)
        return [self._result(hyps, grid) for hyps in nbest]

    def caption_tensors(self, images: torch.Tensor, **options: Any) -> list[CaptionResult]:
        """(B, 3, S, S) uint8 batch -> one result per image."""
        return self.caption_features(self.encode(images), **options)

    def caption_batch(self, items: Sequence[torch.Tensor], **options: Any) -> list[CaptionResult]:
        """A list of (3, S, S) uint8 tensors (from :meth:`load_image`) -> results; for batchers."""
        if not items:
            return []
        return self.caption_tensors(torch.stack(list(items)), **options)

    def caption(
        self,
        images: ImageSource | Sequence[ImageSource],
        beam_size: int | None = None,
        n_best: int = 1,
        max_len: int | None = None,
        length_penalty: float | None = None,
        return_attention: bool = False,
        batch_size: int = 16,
    ) -> CaptionResult | list[CaptionResult]:
        """Caption one image (-> a result) or a list of them (-> a list, in order).

        Sources are paths, bytes or PIL images. An unreadable image raises ``MediaError``
        naming the problem; for many files with per-file errors, use ``captioner caption``.
        """
        single = isinstance(images, (str, os.PathLike, bytes, bytearray, Image.Image))
        sources = [images] if single else list(images)
        options = dict(
            beam_size=beam_size,
            n_best=n_best,
            max_len=max_len,
            length_penalty=length_penalty,
            return_attention=return_attention,
        )
        self.search_config(**options).validate(len(self.vocab))
        results: list[CaptionResult] = []
        for start in range(0, len(sources), batch_size):
            chunk = [self.load_image(s) for s in sources[start : start + batch_size]]
            results.extend(self.caption_batch(chunk, **options))
        return results[0] if single else results

    def _result(self, hyps: list[Hypothesis], grid: tuple[int, int]) -> CaptionResult:
        best = hyps[0]
        words = [self.vocab.itos[i] for i in best.tokens]
        alternatives = [
            {"caption": self.vocab.decode(h.tokens), "log_prob": h.log_prob, "score": h.score}
            for h in hyps
        ]
        attention = None
        if best.attention is not None:
            attention = [[round(float(v), 5) for v in row] for row in best.attention]
        return CaptionResult(
            caption=" ".join(words),
            log_prob=best.log_prob,
            score=best.score,
            finished=best.finished,
            words=words,
            alternatives=alternatives,
            attention=attention,
            grid=grid if attention is not None else None,
        )


def default_bundle_dir(task: str = "caption") -> Path:
    """The shipped bundle: ``$CAPTIONER_<TASK>_BUNDLE``, else ``weights/<task>-default``."""
    env = os.environ.get(f"CAPTIONER_{task.upper()}_BUNDLE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "weights" / f"{task}-default"


def load(
    path: str | os.PathLike | None = None, device: str | torch.device = "auto"
) -> Captioner | ActivityClassifier:
    """Load a bundle folder -> the ready model for its task (default: the shipped captioner)."""
    folder = Path(path) if path is not None else default_bundle_dir("caption")
    bundle = load_bundle(folder)
    if bundle.task == "caption":
        return Captioner.from_bundle(bundle, device=device)
    return ActivityClassifier.from_bundle(bundle, device=device)


@dataclass
class ActivityResult:
    """The activity in a video: best label, its probability, the top k, optionally a timeline."""

    label: str
    score: float
    top_k: list[dict[str, Any]]
    timeline: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.timeline is None:
            d.pop("timeline")
        return d


class ActivityClassifier:
    """Video activity recognition: the CNN encodes sampled frames, an LSTM labels the clip."""

    def __init__(
        self,
        encoder: Encoder,
        model: ActivityModel,
        classes: list[str],
        manifest: dict | None = None,
        device: str | torch.device = "auto",
        limits: VideoLimits = DEFAULT_VIDEO_LIMITS,
    ):
        self.device = resolve_device(device)
        self.encoder = prepare_encoder(encoder, self.device)
        self.model = model.eval().to(self.device)
        self.classes = list(classes)
        self.manifest = manifest or {}
        self.limits = limits
        self.num_frames = int(self.manifest.get("sampling", {}).get("num_frames", 16))

    @classmethod
    def from_bundle(
        cls, bundle: str | os.PathLike | Bundle, device: str | torch.device = "auto"
    ) -> ActivityClassifier:
        """Load an activity bundle (hash-checked) and its encoder."""
        b = _open_bundle(bundle, "activity")
        m = b.manifest
        try:
            config = ActivityModelConfig.from_dict(m["model"])
            classes = list(m["classes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{b.path}/manifest.json is incomplete or invalid: {exc}") from exc
        encoder = _bundle_encoder(b)
        if len(classes) != config.num_classes:
            raise BundleError(f"{b.path}: {len(classes)} class names for {config.num_classes}")
        model = ActivityModel(config)
        load_state_strict(model, b.weights["model.safetensors"], "activity model")
        return cls(encoder, model, classes, manifest=m, device=device)

    @property
    def name(self) -> str:
        return self.manifest.get("name", "activity")

    @property
    def size(self) -> int:
        return self.encoder.preprocess.size

    def local_file(self, source: VideoSource) -> contextlib.AbstractContextManager[Path]:
        """A checked local path for ``source`` (bytes go to a private temp file, removed on
        exit), so that one upload can be read several times without being written again."""
        return local_video(source, self.limits)

    def load_clip(self, source: VideoSource) -> torch.Tensor:
        """Decode one video (MediaError on bad input) -> (T, 3, S, S) uint8 uniform clip."""
        clip = decode_clip(source, self.num_frames, self.size, "uniform", limits=self.limits)
        return torch.from_numpy(clip.frames).permute(0, 3, 1, 2)

    @torch.inference_mode()
    def probabilities(self, clips: torch.Tensor, frame_batch: int = 64) -> torch.Tensor:
        """(B, T, 3, S, S) uint8 clips -> (B, K) probabilities; frames batched across clips."""
        flat = clips.reshape(-1, *clips.shape[-3:])
        grids = torch.cat(
            [
                encode_images(self.encoder, flat[s : s + frame_batch], self.device)
                for s in range(0, flat.size(0), frame_batch)
            ]
        )
        feats = grids.reshape(*clips.shape[:2], *grids.shape[1:]).float()  # (B, T, N, C)
        with autocast(self.device):
            probs = self.model.probabilities(feats)
        return probs.float().cpu()

    def classify_batch(self, clips: Sequence[torch.Tensor], top_k: int = 5) -> list[ActivityResult]:
        """(T, 3, S, S) uint8 clips (from :meth:`load_clip`) -> results; for batchers."""
        if not clips:
            return []
        return [self.result(p, top_k) for p in self.probabilities(torch.stack(list(clips)))]

    def classify(
        self,
        videos: VideoSource | Sequence[VideoSource],
        top_k: int = 5,
        timeline: bool = False,
        window: float = 2.0,
        stride: float = 1.0,
    ) -> ActivityResult | list[ActivityResult]:
        """Label one video (-> a result) or several (-> a list, in order).

        With ``timeline``, the video is also labelled in sliding windows of ``window`` seconds
        every ``stride`` seconds (each window sampled like a whole clip).
        """
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        single = isinstance(videos, (str, os.PathLike, bytes, bytearray))
        sources = [videos] if single else list(videos)
        results = []
        for source in sources:
            result = self.classify_batch([self.load_clip(source)], top_k)[0]
            if timeline:
                result.timeline = self.timeline(source, window, stride)
            results.append(result)
        return results[0] if single else results

    def timeline(
        self, source: VideoSource, window: float = 2.0, stride: float = 1.0
    ) -> list[dict[str, Any]]:
        """Labels over time: ``[{start, end, label, score}]`` for sliding windows."""
        spans, clips = self.timeline_clips(source, window, stride)
        return self.timeline_labels(spans, self.probabilities(clips))

    def timeline_clips(
        self,
        source: VideoSource,
        window: float = 2.0,
        stride: float = 1.0,
        max_windows: int | None = None,
    ) -> tuple[list[tuple[float, float]], torch.Tensor]:
        """Decode the sliding windows of a video -> their spans and (W, T, 3, S, S) uint8 clips.

        The decoding half of :meth:`timeline`, for callers that run the model elsewhere.
        Raises ``MediaError`` when the video needs more than ``max_windows`` windows.
        """
        with local_video(source, self.limits) as path:
            info = probe_video(path, self.limits)
            fps = info.fps if info.fps > 0 else 25.0
            spans = sliding_windows(info.duration_s, window, stride)
            if max_windows is not None and len(spans) > max_windows:
                raise MediaError(
                    f"a {info.duration_s:.1f} s video in {window} s windows every {stride} s "
                    f"gives {len(spans)} windows, above the limit of {max_windows}; "
                    "use a longer stride"
                )
            wanted = []
            for start, end in spans:
                first = min(int(start * fps), info.frame_count - 1)
                count = max(1, min(int(round((end - start) * fps)), info.frame_count - first))
                wanted.append([first + i for i in uniform_indices(count, self.num_frames)])
            unique = sorted({i for w in wanted for i in w})
            frames, _ = read_frames(path, unique, self.size, self.limits)
        pos = {idx: k for k, idx in enumerate(unique)}
        tensor = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (U, 3, S, S), decoded once
        return spans, torch.stack([tensor[[pos[i] for i in w]] for w in wanted])

    def timeline_labels(
        self, spans: Sequence[tuple[float, float]], probs: torch.Tensor
    ) -> list[dict[str, Any]]:
        """Window spans and their (W, K) probabilities -> ``[{start, end, label, score}]``."""
        return [
            {
                "start": round(s, 3),
                "end": round(e, 3),
                "label": self.classes[int(p.argmax())],
                "score": round(float(p.max()), 4),
            }
            for (s, e), p in zip(spans, probs, strict=True)
        ]

    def result(self, probs: torch.Tensor, top_k: int = 5) -> ActivityResult:
        """One clip's (K,) probabilities -> its label, score and top k."""
        k = min(top_k, len(self.classes))
        values, idx = probs.topk(k)
        top = [
            {"label": self.classes[int(i)], "score": round(float(v), 4)}
            for v, i in zip(values, idx, strict=True)
        ]
        return ActivityResult(top[0]["label"], top[0]["score"], top)
