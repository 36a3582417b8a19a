"""What happens in a clip, in words: its shots, how the camera moves, what moves and how.

The readings come from measured motion (:mod:`captioner.video.motion`: the camera's global
transform and the residual flow after it), read by a learned motion model when one is given
(:mod:`captioner.inference.motion_model`, softmax probabilities as scores), else by the
geometry rule (:mod:`captioner.video.geometry`), the honest no-learning baseline; the
description's ``source`` names which. What moves is named by
the encoder and its ImageNet head on the moving region cut from the frame (the person signal
first, as in the captions; one encoder pass per shot or window with a moving thing). Shot cuts
come from colour-histogram jumps (:mod:`captioner.video.shots`).
:mod:`captioner.inference.sentences` turns the readings into a sentence that claims nothing
else.

Pairs of frames: a timeline window's sampled frames are close in time (a 2 s window of 16
frames: one every 0.13 s), so each consecutive pair is measured. The whole clip's samples can
be seconds apart, too far for motion between them; each of its sampled frames is paired with
the frame :data:`PARTNER_GAP_S` later instead, decoded in the same pass and never encoded.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from captioner.inference.evidence import Evidence, GroundingConfig, scene_table
from captioner.inference.motion_model import GEOMETRY, MotionReader
from captioner.inference.sentences import (
    Reading,
    SentenceConfig,
    Subject,
    WindowFacts,
    clip_sentence,
    window_sentence,
)
from captioner.video.geometry import geometry_labels
from captioner.video.motion import FIELD, MOTION_DIM, make_flow, pair_motion
from captioner.video.shots import MIN_DISTANCE, distance, find_cuts, histogram
from captioner.video.shots import cut_times as times_of_cuts

__all__ = [
    "MAX_CUT_GAP_S",
    "PARTNER_GAP_S",
    "crop_classifier",
    "describe_clip",
    "describe_prepared",
    "describe_windows",
    "motion_pairs",
    "pair_vectors",
    "region_subject",
]

#: A crop (H, W, 3) RGB uint8 -> its (1000,) ImageNet class probabilities.
Classify = Callable[[np.ndarray], torch.Tensor]

#: The whole clip's sampled frames are each measured against the frame this much later.
PARTNER_GAP_S = 0.1
#: Cuts are looked for among sampled frames at most this far apart (median spacing).
MAX_CUT_GAP_S = 0.5


@dataclass(frozen=True)
class _Shot:
    start: float
    end: float
    pairs: np.ndarray  # (P, MOTION_DIM)
    grids: list[torch.Tensor]  # the first frame of each pair: (N, C) encoder grid
    frames: list[np.ndarray]  # the first frame of each pair: (H, W, 3) RGB


def motion_pairs(clip: Sequence[int], fps: float, frame_count: int) -> tuple[list[int], list[int]]:
    """The frame indices (firsts, seconds) whose motion stands for each sampled ``clip``
    frame: the frame itself and the one :data:`PARTNER_GAP_S` later (a sample with no frame
    that far after it is measured from the frame that far before the end)."""
    gap = max(1, round(PARTNER_GAP_S * (fps if fps > 0 else 25.0)))
    last = max(0, frame_count - 1)
    firsts = [i if i + gap <= last else max(0, last - gap) for i in clip]
    return firsts, [min(f + gap, last) for f in firsts]


def pair_vectors(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(P, H, W, 3) and (P, H, W, 3) RGB uint8 frames -> (P, MOTION_DIM) motion, pair by pair.

    A pair whose colours jump like a cut is measured as nothing (all zeros, ``no_texture``
    set): motion across a cut is not motion."""
    out = np.zeros((len(first), MOTION_DIM), np.float32)
    dis = make_flow()
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        if distance(histogram(a), histogram(b)) >= MIN_DISTANCE:
            out[i, FIELD["no_texture"]] = 1.0
            continue
        out[i] = pair_motion(a, b, dis).vector()
    return out


def region_box(vector: np.ndarray, size: tuple[int, int], pad: float = 0.15) -> tuple[int, ...]:
    """The moving region's box of one pair's motion ``vector`` in pixels of a frame of
    ``size`` (H, W), grown by ``pad`` of its size each way (a cut-out's edges move least)."""
    h, w = size
    x0, y0, x1, y1 = (float(vector[FIELD[f"region_{k}"]]) for k in ("x0", "y0", "x1", "y1"))
    px, py = pad * (x1 - x0), pad * (y1 - y0)
    box = (
        int(np.floor(max(0.0, x0 - px) * w)),
        int(np.floor(max(0.0, y0 - py) * h)),
        int(np.ceil(min(1.0, x1 + px) * w)),
        int(np.ceil(min(1.0, y1 + py) * h)),
    )
    return box[0], box[1], max(box[2], box[0] + 1), max(box[3], box[1] + 1)


def region_subject(
    frame: np.ndarray,
    vector: np.ndarray,
    classify: Classify | None,
    config: GroundingConfig | None = None,
) -> Subject | None:
    """The head's name for the moving region of one pair: the region cut from ``frame``
    (H, W, 3) and given to ``classify`` (a crop -> (1000,) ImageNet probabilities). The person
    signal (clothing and role classes, as in the captions) says "a person"; else the best
    thing word with its summed probability. None: no region, or nothing to classify with."""
    if vector[FIELD["region_present"]] < 0.5 or classify is None:
        return None
    cfg = config or GroundingConfig()
    x0, y0, x1, y1 = region_box(vector, frame.shape[:2])
    ev = Evidence(classify(np.ascontiguousarray(frame[y0:y1, x0:x1])))
    person, _ = ev.person()
    if person >= cfg.person:
        return Subject("a person", min(1.0, 0.5 + person), person=True)
    ((word, score),) = ev.things(1)
    article = "an" if word[:1] in "aeiou" else "a"
    return Subject(f"{article} {word}", float(score))


def _best_region(pairs: np.ndarray) -> int | None:
    present = pairs[:, FIELD["region_present"]] > 0.5
    if not present.any():
        return None
    share = np.where(present, pairs[:, FIELD["region_share"]], -1.0)
    return int(np.argmax(share))


def _scene(grid: torch.Tensor, head: Any, config: GroundingConfig) -> str | None:
    """A landscape the head is sure of on one frame ("a mountain landscape"), else None."""
    if head is None:
        return None
    probs = head(grid.float().mean(0, keepdim=True))[0].cpu()
    found = Evidence(probs).scene()
    if found is None or found[1] < config.scene:
        return None
    return scene_table()[found[0]].alone


def _facts(
    shot: _Shot,
    head: Any,
    classify: Classify | None,
    config: GroundingConfig,
    motion: MotionReader | None = None,
) -> tuple[WindowFacts, dict]:
    labels = None
    if len(shot.pairs):
        labels = geometry_labels(shot.pairs) if motion is None else motion.read(shot.pairs)
    camera = Reading(labels.camera, labels.camera_score) if labels else None
    motion = Reading(labels.object, labels.object_score) if labels else None
    subject = None
    # the name costs an encoder pass: only where the motion is strong enough to be said
    if labels and labels.object != "none" and labels.object_score >= SentenceConfig().probable:
        best = _best_region(shot.pairs)
        if best is not None:
            subject = region_subject(shot.frames[best], shot.pairs[best], classify, config)
    scene = _scene(shot.grids[len(shot.grids) // 2], head, config) if shot.grids else None
    facts = WindowFacts(shot.start, shot.end, camera, motion, subject, scene)
    record: dict[str, Any] = {
        "camera": _reading(camera),
        "motion": _reading(motion),
        "subject": None
        if subject is None
        else {"name": subject.name, "score": round(subject.score, 4), "person": subject.person},
    }
    return facts, record


def _reading(r: Reading | None) -> dict[str, Any] | None:
    return None if r is None else {"label": r.label, "score": round(float(r.score), 4)}


def describe_clip(
    frames: np.ndarray,
    partners: np.ndarray,
    times: Sequence[float],
    grids: Sequence[torch.Tensor],
    head: Any,
    classify: Classify | None = None,
    config: GroundingConfig | None = None,
    sentence: SentenceConfig | None = None,
    cut_times: Sequence[float] | None = None,
    motion: MotionReader | None = None,
) -> dict[str, Any]:
    """The whole clip's description from its T sampled ``frames`` (T, H, W, 3), each one's
    ``partner`` frame :data:`PARTNER_GAP_S` later, their ``times`` (s) and encoder ``grids``;
    the camera and object readings from ``motion`` (None: the geometry rule).

    -> ``{"sentence", "shots": [{"start", "end", "camera", "motion", "subject",
    "sentence"}], "cuts": [seconds] or None, "source"}``; ``cuts`` is None where the samples
    lie too far apart to look for cuts (over :data:`MAX_CUT_GAP_S`); ``source`` names what
    made the readings (the motion model's name, or ``"geometry"``)."""
    cfg = config or GroundingConfig()
    source = GEOMETRY if motion is None else motion.name
    if len(frames) == 0:
        return {"sentence": "Unsure.", "shots": [], "cuts": [], "source": source}
    pairs = pair_vectors(frames, partners)
    # samples far apart change colour in any moving shot: cuts are only looked for among close
    # ones (a timeline's windows sample densely; see describe_windows)
    gaps = np.diff(np.asarray(times, dtype=np.float64))
    close = len(gaps) > 0 and float(np.median(gaps)) <= MAX_CUT_GAP_S
    if cut_times is not None:  # found elsewhere, among denser frames (a timeline's)
        close = True
        cut_s = [round(float(t), 3) for t in sorted(cut_times) if times[0] < t < times[-1]]
        cuts = sorted({int(np.searchsorted(times, t)) for t in cut_s})
        cut_s = [t for t in cut_s if 0 < int(np.searchsorted(times, t)) < len(frames)]
        cuts = [c for c in cuts if 0 < c < len(frames)]
        if len(cuts) != len(cut_s):  # two cuts between the same two samples: keep the first
            cut_s = [next(t for t in cut_s if int(np.searchsorted(times, t)) == c) for c in cuts]
    else:
        cuts = find_cuts(frames) if close else []
        cut_s = [round(t, 3) for t in times_of_cuts(cuts, times)]
    edges = [0, *cuts, len(frames)]
    shots, facts = [], []
    for k, (a, b) in enumerate(itertools.pairwise(edges)):
        start = 0.0 if k == 0 else cut_s[k - 1]
        end = times[-1] + PARTNER_GAP_S if k == len(edges) - 2 else cut_s[k]
        shot = _Shot(start, end, pairs[a:b], list(grids[a:b]), list(frames[a:b]))
        f, record = _facts(shot, head, classify, cfg, motion)
        facts.append(f)
        shots.append(
            {"start": round(start, 3), "end": round(end, 3), **record,
             "sentence": window_sentence(f, sentence)}
        )  # fmt: skip
    sentence_text = clip_sentence(facts, cut_s, sentence)
    return {
        "sentence": sentence_text,
        "shots": shots,
        "cuts": cut_s if close else None,
        "source": source,
    }


def _window_pairs(w: Sequence[int]) -> list[tuple[int, int]]:
    """A window's measured pairs: every other consecutive pair (frames 0-1, 2-3, ...). The
    gap stays one sample; half the pairs cost half, and a window still has 7-8 of them."""
    return [(w[i], w[i + 1]) for i in range(0, len(w) - 1, 2)]


def describe_windows(
    frames: np.ndarray,
    windows: Sequence[Sequence[int]],
    spans: Sequence[tuple[float, float]],
    grids: torch.Tensor,
    head: Any,
    classify: Classify | None = None,
    config: GroundingConfig | None = None,
    sentence: SentenceConfig | None = None,
    motion: MotionReader | None = None,
) -> list[dict[str, Any]]:
    """Per timeline window (its positions into the (U, H, W, 3) distinct ``frames`` and their
    (U, N, C) ``grids``): ``{"camera", "motion", "subject", "sentence"}``, read by ``motion``
    (None: the geometry rule). Each measured pair (:func:`_window_pairs`) is measured once,
    however many windows share it."""
    cfg = config or GroundingConfig()
    wanted = sorted({k for w in windows for k in _window_pairs(w)})
    wanted = [(a, b) for a, b in wanted if a != b]
    vectors: dict[tuple[int, int], np.ndarray] = {}
    if wanted:
        firsts = np.stack([frames[a] for a, _ in wanted])
        seconds = np.stack([frames[b] for _, b in wanted])
        for key, v in zip(wanted, pair_vectors(firsts, seconds), strict=True):
            vectors[key] = v
    out = []
    for w, (start, end) in zip(windows, spans, strict=True):
        keys = [k for k in _window_pairs(w) if k[0] != k[1]]
        pairs = np.stack([vectors[k] for k in keys]) if keys else np.zeros((0, MOTION_DIM))
        shot = _Shot(start, end, pairs, [grids[a] for a, _ in keys], [frames[a] for a, _ in keys])
        f, record = _facts(shot, head, classify, cfg, motion)
        out.append({**record, "sentence": window_sentence(f, sentence)})
    return out


def crop_classifier(encoder: Any, device: torch.device) -> Classify:
    """A crop -> the ``encoder``'s ImageNet head probabilities, the crop resized to the
    encoder's input size and encoded the one way the pipeline encodes."""
    from captioner.inference.common import encode_images

    size = encoder.preprocess.size

    def classify(crop: np.ndarray) -> torch.Tensor:
        image = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
        batch = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
        grid = encode_images(encoder, batch, device)
        return encoder.head(grid.float().mean(1))[0].cpu()

    return classify


def describe_prepared(
    frames: torch.Tensor,
    clip: Sequence[int],
    windows: Sequence[Sequence[int]] | None,
    spans: Sequence[tuple[float, float]] | None,
    pairs: tuple[torch.Tensor, torch.Tensor],
    times: Sequence[float],
    grids: torch.Tensor,
    head: Any,
    classify: Classify | None,
    motion: MotionReader | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """A decoded clip's description and (with timeline ``windows``) each window's words, from
    its (U, 3, S, S) uint8 distinct ``frames``, the ``clip``'s positions into them, the clip's
    motion ``pairs``, every frame's ``times`` and the (U, N, C) ``grids``; readings by
    ``motion`` (None: the geometry rule)."""
    hwc = frames.permute(0, 2, 3, 1).numpy()  # (U, S, S, 3)
    cuts = None
    if windows is not None:  # a timeline samples densely: cuts are looked for there
        cuts = [round(t, 3) for t in times_of_cuts(find_cuts(hwc), times)]
    first, second = (p.permute(0, 2, 3, 1).numpy() for p in pairs)
    description = describe_clip(
        first,
        second,
        [times[i] for i in clip],
        [grids[i] for i in clip],
        head,
        classify,
        cut_times=cuts,
        motion=motion,
    )
    said = None
    if windows is not None and spans is not None:
        said = describe_windows(hwc, windows, spans, grids, head, classify, motion=motion)
    return description, said
