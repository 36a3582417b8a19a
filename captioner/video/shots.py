"""Shot cuts: where consecutive sampled frames stop showing the same shot.

A cut is a jump in the colour histogram (HSV, :data:`HIST_BINS` bins per channel, compared
by the Hellinger form of the Bhattacharyya distance, 0 = same colours, 1 = none shared)
between two consecutive frames that stands out against the distances around it:

- above :data:`MIN_DISTANCE` (an absolute floor) and :data:`RATIO` times the median distance of
  the :data:`CONTEXT` pairs either side, so a fast pan or a busy scene, whose colours change
  steadily, raises its own bar;
- and not a *flash*: when the frame after the jump looks like the frame before it again (a
  single bright, dark or corrupt frame), there is no cut.

What it misses: gradual transitions (fades, dissolves, wipes), which spread the change over
many small steps; cuts between two shots of the same colours (the same set from another angle);
two cuts less than a frame apart at the sampling rate. What it can take for a cut: a shot whose
colours change completely from one sampled frame to the next (a light switched on and left on,
a whip pan onto a different scene: which many would call a cut).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import cv2
import numpy as np

#: Histogram bins for hue, saturation and value.
HIST_BINS = (16, 4, 4)
#: A jump must reach this distance, whatever the context.
MIN_DISTANCE = 0.35
#: ... and this many times the local median distance.
RATIO = 3.0
#: Pairs either side that form the local context of a pair.
CONTEXT = 4
#: The frames either side of a lone odd frame must be at least this close for it to be a flash.
FLASH_DISTANCE = 0.25
_SIZE = 64  # histograms are taken of frames shrunk to this short side: colour, not detail


def histogram(frame: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> its HSV histogram, flattened and summing to 1 (float64)."""
    h, w = frame.shape[:2]
    scale = _SIZE / min(h, w)
    if scale < 1:
        frame = cv2.resize(
            np.ascontiguousarray(frame),
            (max(1, round(w * scale)), max(1, round(h * scale))),
            interpolation=cv2.INTER_AREA,
        )
    hsv = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, list(HIST_BINS), [0, 180, 0, 256, 0, 256])
    hist = hist.astype(np.float64).ravel()
    return hist / max(hist.sum(), 1.0)


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya (Hellinger) distance between two normalised histograms, in [0, 1]."""
    return float(np.sqrt(max(0.0, 1.0 - float(np.sqrt(a * b).sum()))))


def histogram_distances(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) RGB frames -> (T-1,) distances between consecutive frames' histograms."""
    hists = [histogram(f) for f in frames]
    return np.array([distance(hists[i], hists[i + 1]) for i in range(len(hists) - 1)])


def find_cuts(frames: np.ndarray) -> list[int]:
    """Shot cuts in (T, H, W, 3) RGB frames -> sorted indices ``i``: frame ``i`` begins a new
    shot (the cut lies between frames ``i - 1`` and ``i``)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) RGB, got shape {frames.shape}")
    if len(frames) < 2:
        return []
    hists = [histogram(f) for f in frames]
    d = np.array([distance(hists[i], hists[i + 1]) for i in range(len(hists) - 1)])
    cuts = []
    for i, value in enumerate(d):
        around = np.concatenate([d[max(0, i - CONTEXT) : i], d[i + 1 : i + 1 + CONTEXT]])
        local = float(np.median(around)) if len(around) else 0.0
        if value < MIN_DISTANCE or value < RATIO * local:
            continue
        # Flash: frame i+1 is odd, and frame i+2 is back to what frame i showed.
        if i + 2 < len(hists) and distance(hists[i], hists[i + 2]) < FLASH_DISTANCE:
            continue
        # The far side of a flash: frame i is the odd one, frame i+1 matches frame i-1.
        if i >= 1 and distance(hists[i - 1], hists[i + 1]) < FLASH_DISTANCE:
            continue
        cuts.append(i + 1)
    return cuts


def cut_times(cuts: Sequence[int], timestamps: Sequence[float]) -> list[float]:
    """Each cut's time, estimated midway between the last frame before it and the first after
    (the sampled frames only bound where the cut lies)."""
    return [(timestamps[i - 1] + timestamps[i]) / 2 for i in cuts]


def shot_spans(n_frames: int, cuts: Sequence[int]) -> list[tuple[int, int]]:
    """Frame ranges ``(start, end)`` (end exclusive) of the shots that ``cuts`` make."""
    edges = [0, *sorted(c for c in cuts if 0 < c < n_frames), n_frames]
    return [(a, b) for a, b in pairwise(edges) if b > a]


def split_windows(
    windows: Sequence[tuple[float, float]], times: Sequence[float], min_length: float = 0.0
) -> list[tuple[float, float]]:
    """Timeline windows ``(start, end)`` in seconds, each split at every cut time strictly
    inside it, so that no window spans a cut; pieces shorter than ``min_length`` are dropped.

    Windows are kept in order; two windows may overlap as before (a sliding stride)."""
    out: list[tuple[float, float]] = []
    ordered = sorted(times)
    for start, end in windows:
        edges = [start, *(t for t in ordered if start < t < end), end]
        out.extend((a, b) for a, b in pairwise(edges) if b - a >= min_length)
    return out
