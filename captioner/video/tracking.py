"""The camera's motion between two frames: corner tracks and the similarity fitted to them.

Shi-Tomasi corners of the first frame, spread over a grid so that no one textured thing
outvotes the rest, are tracked into the second frame by pyramidal Lucas-Kanade and kept when
tracking back lands where they started. A similarity transform (shift, scale, rotation) is
fitted to them by RANSAC, unless standing still explains as many. Too few tracks (a flat or
blank frame), or agreeing tracks all in one small patch (a textured thing over a plain wall:
an object, not the camera), give the identity with ``no_texture`` set.

Frames here are grey uint8 at the work size of :mod:`captioner.video.motion`, whose sign
conventions every number follows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

#: Short side, in pixels, at which all motion is measured (speed over detail).
WORK_SIZE = 112
#: Corners are spread over CORNER_GRID x CORNER_GRID cells, an equal share in each.
CORNER_GRID = 4
MAX_CORNERS = 128
#: Fewer tracks than this and the transform is not trusted: identity, ``no_texture`` set.
MIN_TRACKS = 10
#: ... and the same when the agreeing tracks cover less of the frame than this (their box).
MIN_SPREAD = 0.25
_FB_MAX_PX = 1.0  # forward-backward disagreement allowed to a track, work-size pixels
RANSAC_PX = 0.5  # RANSAC inlier distance, work-size pixels
# A track that moved less than this is standing still (LK is good to about a tenth of a pixel;
# at this size it is 0.3% of the frame, the geometry rule's "static").
_STILL_PX = 0.35
_LK = {
    "winSize": (13, 13),
    "maxLevel": 3,
    "criteria": (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 10, 0.03),
}
_EYE = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float64)


def _no_points() -> np.ndarray:
    return np.zeros((0, 2), np.float32)


@dataclass(frozen=True)
class CameraMotion:
    """The global similarity transform between two frames (conventions of video.motion)."""

    dx: float
    dy: float
    log_scale: float
    rotation: float
    inlier_share: float
    #: Share of the frame covered by the inliers' box (5th to 95th percentile each way).
    spread: float
    no_texture: bool
    #: 2x3 matrix in work-size pixels mapping first-frame points to second-frame points.
    matrix: np.ndarray
    #: The tracks, (n, 2) work-size pixels: where each started and where it went.
    src: np.ndarray = field(default_factory=_no_points)
    dst: np.ndarray = field(default_factory=_no_points)

    @property
    def tracks(self) -> int:
        return len(self.src)


def work_frame(frame: np.ndarray, size: int = WORK_SIZE) -> np.ndarray:
    """An RGB uint8 (H, W, 3) frame (or a grey (H, W) one) -> grey uint8, short side ``size``."""
    if frame.ndim == 3:
        frame = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    h, w = frame.shape
    scale = size / min(h, w)
    if scale >= 1.0:  # never upsample: no detail to gain, only cost
        return np.ascontiguousarray(frame)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(frame, new, interpolation=cv2.INTER_AREA)


def _identity(src: np.ndarray, dst: np.ndarray) -> CameraMotion:
    return CameraMotion(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, True, _EYE.copy(), src, dst)


def _corners(first: np.ndarray) -> np.ndarray | None:
    """Shi-Tomasi corners spread over the frame: at most an equal share of MAX_CORNERS in each
    grid cell, so one richly textured object cannot outvote the background."""
    found = cv2.goodFeaturesToTrack(
        first, maxCorners=4 * MAX_CORNERS, qualityLevel=0.002, minDistance=4, blockSize=5
    )
    if found is None:
        return None
    pts = found.reshape(-1, 2)  # strongest first
    h, w = first.shape
    n = CORNER_GRID
    cell = np.minimum((pts[:, 1] * n / h).astype(int), n - 1) * n + np.minimum(
        (pts[:, 0] * n / w).astype(int), n - 1
    )
    order = np.argsort(cell, kind="stable")  # by cell, strongest first within each
    ranked = cell[order]
    rank = np.empty(len(pts), dtype=int)
    rank[order] = np.arange(len(pts)) - np.searchsorted(ranked, ranked, side="left")
    return found[rank < MAX_CORNERS // (n * n)]


def track(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Corners of ``first`` tracked into ``second``, forward-backward checked -> (src, dst),
    each (n, 2) float32 in work-size pixels (n may be 0)."""
    corners = _corners(first)
    if corners is None or len(corners) < MIN_TRACKS:
        return _no_points(), _no_points()
    ahead, ok, _ = cv2.calcOpticalFlowPyrLK(first, second, corners, None, **_LK)
    back, ok_back, _ = cv2.calcOpticalFlowPyrLK(second, first, ahead, None, **_LK)
    fb = np.linalg.norm((back - corners).reshape(-1, 2), axis=1)
    keep = (ok.ravel() == 1) & (ok_back.ravel() == 1) & (fb < _FB_MAX_PX)
    return corners.reshape(-1, 2)[keep], ahead.reshape(-1, 2)[keep]


def similarity_parts(matrix: np.ndarray, centre: np.ndarray) -> tuple[float, float, float, float]:
    """A 2x3 similarity -> (shift x, shift y of ``centre`` in pixels, log scale, rotation)."""
    # The shift is the centre's: about the origin it would mix in the scale and the turn.
    moved = matrix[:, :2] @ centre + matrix[:, 2] - centre
    a, b = float(matrix[0, 0]), float(matrix[1, 0])
    return float(moved[0]), float(moved[1]), math.log(max(math.hypot(a, b), 1e-6)), math.atan2(b, a)


def fit_camera(src: np.ndarray, dst: np.ndarray, shape: tuple[int, int]) -> CameraMotion:
    """The camera's similarity from tracks ``src`` -> ``dst`` in a frame of ``shape`` (h, w)."""
    if len(src) < MIN_TRACKS:
        return _identity(src, dst)
    matrix, inliers = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX, refineIters=10
    )
    if matrix is None or not np.all(np.isfinite(matrix)):
        return _identity(src, dst)
    h, w = shape
    held = src[inliers.ravel() == 1]
    still = np.linalg.norm(dst - src, axis=1) < _STILL_PX
    if still.sum() >= 0.9 * len(held):
        # Standing still explains (nearly) as many tracks as the fit: no camera motion. Else
        # RANSAC may pick a moving thing's corners, or a chance fit, over a still view.
        matrix, held = _EYE.copy(), src[still]
    (x0, y0), (x1, y1) = np.percentile(held, (5, 95), axis=0)
    spread = float((x1 - x0) / w * (y1 - y0) / h)
    if spread < MIN_SPREAD:
        # All the agreeing texture sits in one small patch: that is an object moving (or not)
        # over a plain background, not the camera; the camera cannot be measured.
        return _identity(src, dst)
    sx, sy, log_scale, rotation = similarity_parts(matrix, np.array([(w - 1) / 2, (h - 1) / 2]))
    return CameraMotion(
        dx=sx / w,
        dy=sy / h,
        log_scale=log_scale,
        rotation=rotation,
        inlier_share=len(held) / len(src),
        spread=spread,
        no_texture=False,
        matrix=matrix,
        src=src,
        dst=dst,
    )


def camera_motion(first: np.ndarray, second: np.ndarray) -> CameraMotion:
    """The similarity transform taking grey work frame ``first`` to ``second``."""
    return fit_camera(*track(first, second), first.shape)
