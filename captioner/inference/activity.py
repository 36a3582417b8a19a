"""The activity pipeline: video -> sampled frames (and timeline windows) -> grids -> labels.

:func:`prepare_clip` decodes one video into a :class:`ClipInput` (no model needed, so data
loader workers and the service's decode pool run it); :meth:`ActivityClassifier.classify_inputs`
labels a batch of them, timelines included, encoding every distinct frame once.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from captioner.bundle import Bundle, BundleError, Manifest
from captioner.bundle.manifest import DEFAULT_NUM_FRAMES
from captioner.encoders import Encoder
from captioner.inference.common import (
    BundleModel,
    autocast,
    bundle_encoder,
    bundle_module,
    encode_images,
    manifest_part,
    open_bundle,
    per_item,
    precision_name,
    prepare_encoder,
    resolve_device,
)
from captioner.inference.describe import crop_classifier, describe_prepared, motion_pairs
from captioner.inference.motion_model import MotionSource, motion_reader
from captioner.inference.results import ActivityResult, ErrorResult, Errors, check_errors
from captioner.media import MediaError
from captioner.models.activity import ActivityModel, ActivityModelConfig
from captioner.video import (
    DEFAULT_VIDEO_LIMITS,
    VideoInfo,
    VideoLimits,
    local_video,
    probe_video,
    read_frames,
    sliding_windows,
    uniform_indices,
)

VideoSource = str | os.PathLike | bytes | bytearray
DEFAULT_WINDOW_S = 2.0  # timeline window of a model that does not say its clip length

log = logging.getLogger(__name__)


def check_timeline(window: float | None, stride: float | None = None) -> None:
    """The one check of timeline options (ValueError): a window and a stride in seconds, both
    positive, and a stride no longer than the window (longer would leave gaps between
    windows). None is a default still to be resolved (:meth:`ActivityClassifier.timeline_window`)
    and passes; the CLI and the service call this before any work."""
    for name, value in (("window", window), ("stride", stride)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"the timeline {name} must be a number of seconds, got {value!r}")
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"the timeline {name} must be a positive number of seconds: {value}")
    if window is not None and stride is not None and stride > window:
        raise ValueError(
            f"the timeline stride ({stride:g} s) is longer than the window ({window:g} s): the "
            "windows would leave gaps; use a stride no longer than the window"
        )


@dataclass
class ClipInput:
    """One decoded video, ready for the model: each distinct frame once, and which frames
    make the whole clip and (for a timeline) each window."""

    frames: torch.Tensor  # (U, 3, S, S) uint8, distinct frames in stream order
    clip: list[int]  # T positions into ``frames``: the whole video, uniformly sampled
    windows: list[list[int]] | None = None  # W lists of T positions, one per timeline window
    spans: list[tuple[float, float]] | None = None  # (start, end) seconds of each window
    # never encoded: per clip frame, the two (T, 3, S, S) frames PARTNER_GAP_S apart whose
    # motion stands for it (describe.py); the stream time (s) of each of ``frames``
    pairs: tuple[torch.Tensor, torch.Tensor] | None = None
    times: list[float] | None = None

    @property
    def cost(self) -> int:
        """Frames the encoder must run on: what a batcher should count."""
        return int(self.frames.shape[0])

    def clip_frames(self) -> torch.Tensor:
        """(T, 3, S, S) uint8: the whole-video clip."""
        return self.frames[self.clip]


def window_indices(
    info: VideoInfo,
    window: float,
    stride: float,
    num_frames: int,
    max_windows: int | None = None,
) -> tuple[list[tuple[float, float]], list[list[int]]]:
    """Sliding windows over a probed video -> their spans and each one's sampled frame indices.

    Raises ``MediaError`` when the video needs more than ``max_windows`` windows.
    """
    fps = info.fps if info.fps > 0 else 25.0
    spans = sliding_windows(info.duration_s, window, stride)
    if max_windows is not None and len(spans) > max_windows:
        raise MediaError(
            f"a {info.duration_s:.1f} s video in {window} s windows every {stride} s "
            f"gives {len(spans)} windows, above the limit of {max_windows}; use a longer stride"
        )
    wanted = []
    for start, end in spans:
        first = min(int(start * fps), info.frame_count - 1)
        count = max(1, min(round((end - start) * fps), info.frame_count - first))
        wanted.append([first + i for i in uniform_indices(count, num_frames)])
    return spans, wanted


def prepare_clip(
    source: VideoSource,
    num_frames: int,
    size: int,
    limits: VideoLimits = DEFAULT_VIDEO_LIMITS,
    timeline: bool = False,
    window: float = 2.0,
    stride: float = 1.0,
    max_windows: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    describe: bool = False,
) -> ClipInput:
    """Decode one video (MediaError on bad input) -> a :class:`ClipInput`.

    The file is read once: the whole-video sample and every timeline window's frames come
    from one pass, and a frame shared by several windows is decoded (and later encoded) once.
    With ``describe``, each sampled frame's partner (for the motion between them) is read in
    the same pass. ``should_stop`` is asked between frames; when it says yes,
    ``DecodeCancelled`` is raised.
    """
    with local_video(source, limits) as path:
        info = probe_video(path, limits)
        clip = uniform_indices(info.frame_count, num_frames)
        spans, windows = None, None
        if timeline:
            spans, windows = window_indices(info, window, stride, num_frames, max_windows)
        unique = sorted(set(clip).union(*(windows or [])))
        firsts, seconds = motion_pairs(clip, info.fps, info.frame_count) if describe else ([], [])
        read = sorted(set(unique).union(firsts, seconds))
        decoded, stamps = read_frames(path, read, size, limits, should_stop=should_stop)
    at = {idx: k for k, idx in enumerate(read)}

    def pick(indices: Sequence[int]) -> torch.Tensor:
        return torch.from_numpy(decoded[[at[i] for i in indices]]).permute(0, 3, 1, 2)

    pos = {idx: k for k, idx in enumerate(unique)}
    return ClipInput(
        frames=pick(unique),
        clip=[pos[i] for i in clip],
        windows=None if windows is None else [[pos[i] for i in w] for w in windows],
        spans=spans,
        pairs=(pick(firsts), pick(seconds)) if describe else None,
        times=[float(stamps[at[i]]) for i in unique],
    )


@torch.inference_mode()
def clip_probabilities(
    model: ActivityModel, features: torch.Tensor, device: torch.device, batch_size: int = 64
) -> torch.Tensor:
    """(B, T, N, C) frame grids -> (B, K) class probabilities on the CPU, ``batch_size`` clips
    at a time, under the pipeline's precision policy (validation and evaluation use it too)."""
    model.eval()
    out = []
    for s in range(0, features.size(0), batch_size):
        chunk = features[s : s + batch_size].to(device, non_blocking=True).float()
        with autocast(device):
            out.append(model.probabilities(chunk).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.config.num_classes)


class ActivityClassifier(BundleModel):
    """Video activity recognition: the CNN encodes sampled frames, an LSTM labels the clip.

    ``manifest``: the bundle's typed manifest (``spec``): frames per clip, training clip length.
    """

    task = "activity"

    def __init__(
        self,
        encoder: Encoder,
        model: ActivityModel,
        classes: list[str],
        manifest: Manifest | dict | None = None,
        device: str | torch.device = "auto",
        limits: VideoLimits = DEFAULT_VIDEO_LIMITS,
        describe: bool = True,
        motion: MotionSource = "default",
    ):
        self.device = resolve_device(device)
        self.describe = describe  # also measure the motion and say what happens (describe.py)
        self.motion = motion_reader(motion)  # reads the motion; None: the geometry rule
        self.encoder = prepare_encoder(encoder, self.device)
        self.model = model.eval().to(self.device)
        self.classes = list(classes)
        if isinstance(manifest, dict):
            manifest = Manifest.from_dict(manifest)
        self.spec = manifest
        self.limits = limits
        self.num_frames = manifest.num_frames if manifest else DEFAULT_NUM_FRAMES
        # The length of the clips it was trained on: the natural timeline window.
        self.clip_seconds = manifest.clip_seconds if manifest else None
        self._warned_windows: set[float] = set()

    @classmethod
    def from_bundle(
        cls,
        bundle: str | os.PathLike | Bundle,
        device: str | torch.device = "auto",
        motion: MotionSource = "default",
    ) -> ActivityClassifier:
        """Load an activity bundle (hash-checked), its encoder and ``motion`` (motion_reader)."""
        b = open_bundle(bundle, "activity")
        config = manifest_part(b, lambda: ActivityModelConfig.from_dict(b.spec.model))
        classes = list(b.spec.classes or [])
        encoder = bundle_encoder(b)
        if len(classes) != config.num_classes:
            raise BundleError(f"{b.path}: {len(classes)} class names for {config.num_classes}")
        model = bundle_module(b, ActivityModel(config), "model.safetensors", "activity model")
        return cls(encoder, model, classes, manifest=b.spec, device=device, motion=motion)

    @property
    def size(self) -> int:
        return self.encoder.preprocess.size

    @property
    def precision(self) -> str:
        return precision_name(self.device)

    @property
    def default_window(self) -> float:
        """Timeline window when none is given: the training clips' length (2 s if unknown)."""
        return self.clip_seconds["median"] if self.clip_seconds else DEFAULT_WINDOW_S

    def timeline_window(
        self, window: float | None = None, stride: float | None = None
    ) -> tuple[float, float]:
        """Resolve a timeline's ``(window, stride)``: the training clip length and half of it by
        default. A window shorter than the shortest training clip is allowed, with a warning:
        the model never saw so little of a motion, and labels such windows less reliably.
        Bad values raise ValueError (:func:`check_timeline`)."""
        check_timeline(window, stride)
        window = self.default_window if window is None else float(window)
        stride = window / 2 if stride is None else float(stride)
        check_timeline(window, stride)
        shortest = self.clip_seconds["min"] if self.clip_seconds else None
        if shortest is not None and window < shortest - 1e-6 and window not in self._warned_windows:
            self._warned_windows.add(window)
            log.warning(
                "timeline windows of %g s are shorter than the %g s clips %s was trained on: "
                "expect less reliable labels (use --window %g or more)",
                window,
                shortest,
                self.name,
                shortest,
            )
        return window, stride

    # -- preprocess -------------------------------------------------------------------------

    def prepare(
        self,
        source: VideoSource,
        timeline: bool = False,
        window: float | None = None,
        stride: float | None = None,
        max_windows: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> ClipInput:
        """Decode one video for :meth:`classify_inputs` (MediaError on bad input); timeline
        windows as :meth:`timeline_window` resolves them."""
        if timeline:
            window, stride = self.timeline_window(window, stride)
        return prepare_clip(
            source,
            self.num_frames,
            self.size,
            self.limits,
            timeline=timeline,
            window=window or DEFAULT_WINDOW_S,
            stride=stride or DEFAULT_WINDOW_S / 2,
            max_windows=max_windows,
            should_stop=should_stop,
            describe=self.describe,
        )

    def load_clip(self, source: VideoSource) -> torch.Tensor:
        """Decode one video (MediaError on bad input) -> (T, 3, S, S) uint8 uniform clip."""
        return self.prepare(source).clip_frames()

    # -- the model --------------------------------------------------------------------------

    def encode_frames(self, frames: torch.Tensor, frame_batch: int = 64) -> torch.Tensor:
        """(F, 3, S, S) uint8 frames -> (F, N, C) float grids, ``frame_batch`` at a time."""
        grids = [
            encode_images(self.encoder, frames[s : s + frame_batch], self.device)
            for s in range(0, frames.size(0), frame_batch)
        ]
        return torch.cat(grids).float()

    def probabilities_from_features(
        self, features: torch.Tensor, batch_size: int = 64
    ) -> torch.Tensor:
        """(B, T, N, C) frame grids -> (B, K) probabilities on the CPU."""
        return clip_probabilities(self.model, features, self.device, batch_size)

    def probabilities(self, clips: torch.Tensor, frame_batch: int = 64) -> torch.Tensor:
        """(B, T, 3, S, S) uint8 clips -> (B, K) probabilities; frames batched across clips."""
        grids = self.encode_frames(clips.reshape(-1, *clips.shape[-3:]), frame_batch)
        return self.probabilities_from_features(grids.reshape(*clips.shape[:2], *grids.shape[1:]))

    # -- batches ----------------------------------------------------------------------------

    def classify_inputs(
        self, items: Sequence[ClipInput], top_k: int | Sequence[int] = 5
    ) -> list[ActivityResult]:
        """Label prepared videos (from :meth:`prepare`), timelines included, in one model pass.

        Each distinct frame is encoded once, however many windows share it. ``top_k`` is one
        number for all, or one per item.
        """
        if not items:
            return []
        ks = [top_k] * len(items) if isinstance(top_k, int) else list(top_k)
        grids = self.encode_frames(torch.cat([it.frames for it in items]))  # (sum U, N, C)
        rows, offset = [], 0
        for it in items:
            rows.append([offset + i for i in it.clip])
            rows.extend([offset + i for i in w] for w in it.windows or [])
            offset += it.cost
        probs = self.probabilities_from_features(grids[torch.tensor(rows)])  # (rows, K)
        results, r, offset = [], 0, 0
        for it, k in zip(items, ks, strict=True):
            result = self.result(probs[r], k)
            r += 1
            if it.windows is not None and it.spans is not None:
                w = len(it.windows)
                result.timeline = self.timeline_labels(it.spans, probs[r : r + w])
                r += w
            if it.pairs is not None:
                self._describe(it, grids[offset : offset + it.cost], result)
            offset += it.cost
            results.append(result)
        return results

    def _describe(self, it: ClipInput, grids: torch.Tensor, result: ActivityResult) -> None:
        """Attach what happens in the clip (and in each timeline window) to its result."""
        assert it.pairs is not None
        assert it.times is not None
        head = getattr(self.encoder, "head", None)
        classify = crop_classifier(self.encoder, self.device) if head is not None else None
        result.description, said = describe_prepared(
            it.frames, it.clip, it.windows, it.spans, it.pairs, it.times, grids, head, classify,
            self.motion,
        )  # fmt: skip
        for entry, words in zip(result.timeline or [], said or [], strict=True):
            entry.update(words)

    def classify(
        self,
        videos: VideoSource | Sequence[VideoSource],
        top_k: int = 5,
        timeline: bool = False,
        window: float | None = None,
        stride: float | None = None,
        errors: Errors = "raise",
    ) -> ActivityResult | ErrorResult | list[ActivityResult | ErrorResult]:
        """Label one video (-> a result) or several (-> a list, in order).

        With ``timeline``, the video is also labelled in sliding windows of ``window`` seconds
        (default: the length of the model's training clips) every ``stride`` seconds (default:
        half the window), each window sampled like a whole clip. An unreadable video raises
        ``MediaError``; with ``errors="return"`` it gives an :class:`ErrorResult` in its place
        instead, and the other videos are labelled.
        """
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        check_errors(errors)
        if timeline:
            window, stride = self.timeline_window(window, stride)
        single = isinstance(videos, (str, os.PathLike, bytes, bytearray))
        sources = [videos] if single else list(videos)  # type: ignore[arg-type]
        results: list[ActivityResult | ErrorResult] = []
        for source in sources:  # one at a time: a video's frames can be many
            results.extend(
                per_item(
                    [source],
                    lambda s: self.prepare(s, timeline, window, stride),
                    lambda clips: self.classify_inputs(clips, top_k),
                    errors,
                )
            )
        return results[0] if single else results

    def __call__(
        self, videos: VideoSource | Sequence[VideoSource], **options: Any
    ) -> ActivityResult | ErrorResult | list[ActivityResult | ErrorResult]:
        """``model(videos, ...)`` is ``model.classify(videos, ...)``."""
        return self.classify(videos, **options)

    def timeline(
        self, source: VideoSource, window: float | None = None, stride: float | None = None
    ) -> list[dict[str, Any]]:
        """Labels over time: ``[{start, end, label, score}]`` for sliding windows."""
        result = self.classify_inputs([self.prepare(source, True, window, stride)], 1)[0]
        return result.timeline or []

    # -- postprocess ------------------------------------------------------------------------

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
