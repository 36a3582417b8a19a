"""What moves once the camera's motion is taken out: residual flow, its grid, the moving region.

The second frame is warped back onto the first by the camera's similarity and dense DIS flow
measured between them; what is left is motion the camera does not explain. It is summarised
on a :data:`GRID` x :data:`GRID` grid of cells, and as one *moving region*: the pixels whose
residual stands clearly above the background's, with their box, centroid, mean motion and
divergence (the region's own scale change, which tells approach from recede). Only pixels
with some image gradient count towards the region: in a flat patch any flow fits. Corner
tracks that start on the region give a second, sharper reading of its scale change and turn:
a similarity of their own, fitted with the camera's motion taken out.

Frames are grey uint8 at the work size; conventions are those of :mod:`captioner.video.motion`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from captioner.video.tracking import RANSAC_PX, CameraMotion, similarity_parts

#: Residual flow is summarised on GRID x GRID cells.
GRID = 4
# A region pixel moves at least this much after the camera is taken out, and clearly more than
# the background does (median + _MAD_K robust deviations).
_MIN_RESIDUAL_PX = 0.6
_MAD_K = 5.0
# Root-mean-square Sobel gradient (7x7 neighbourhood) below which a pixel counts as flat: a
# 3x3 Sobel reads a one-grey-level step as 4, so this is a few grey levels per pixel.
_MIN_GRADIENT = 16.0
_MIN_REGION_SHARE = 0.005  # of the frame; fewer moving pixels are noise, not a region
_MARGIN_PX = 3  # pixels this close to the frame's edge are not trusted (DIS is poor there)
#: The region's own similarity needs this many agreeing tracks on it.
MIN_REGION_TRACKS = 6


@dataclass(frozen=True)
class MovingRegion:
    """Pixels moving on their own: share of the frame, centroid and box (fractions), mean
    residual motion (dx, dy), divergence as a log scale; and the similarity of the corner
    tracks on it (``tracks`` agreeing, 0 when too few), camera taken out."""

    share: float
    centroid: tuple[float, float]
    box: tuple[float, float, float, float]
    dx: float
    dy: float
    log_scale: float
    tracks: int = 0
    track_log_scale: float = 0.0
    track_rotation: float = 0.0


def make_flow() -> cv2.DISOpticalFlow:
    """The dense flow used for residuals: DIS, fast preset, refined to half work resolution."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    dis.setFinestScale(1)
    return dis


def _inside(matrix: np.ndarray, h: int, w: int) -> np.ndarray:
    """Pixels of the first frame whose transformed position lies inside the second frame."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    mx = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
    my = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
    return (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)


def _textured(first: np.ndarray) -> np.ndarray:
    """Pixels with enough image gradient nearby for flow to mean something: in a flat patch
    any motion fits, and DIS output there is noise, not a moving region."""
    gx = cv2.Sobel(first, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(first, cv2.CV_32F, 0, 1, ksize=3)
    energy = cv2.blur(gx * gx + gy * gy, (7, 7))
    return energy > _MIN_GRADIENT**2


def _cells(flow: np.ndarray, mag: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mean residual (dx, dy as fractions) and magnitude per grid cell -> (GRID, GRID, 3)."""
    h, w = valid.shape
    weight = valid.astype(np.float32)
    stack = np.dstack([flow[..., 0] / w, flow[..., 1] / h, mag, np.ones_like(mag)])
    stack *= weight[..., None]
    sums = cv2.resize(stack, (GRID, GRID), interpolation=cv2.INTER_AREA)  # (GRID, GRID, 4)
    counts = sums[..., 3:4]
    return np.where(counts > 1e-6, sums[..., :3] / np.maximum(counts, 1e-6), 0.0)


def _own_similarity(
    camera: CameraMotion, moving: np.ndarray, centre: np.ndarray
) -> tuple[int, float, float]:
    """The tracks starting on ``moving``, their end points mapped back by the camera's inverse,
    fitted with a similarity -> (agreeing tracks, log scale, rotation about ``centre``)."""
    if camera.tracks < MIN_REGION_TRACKS:
        return 0, 0.0, 0.0
    h, w = moving.shape
    near = cv2.dilate(moving.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # edge corners
    xs = np.clip(np.rint(camera.src[:, 0]).astype(int), 0, w - 1)
    ys = np.clip(np.rint(camera.src[:, 1]).astype(int), 0, h - 1)
    on = near[ys, xs]
    if on.sum() < MIN_REGION_TRACKS:
        return 0, 0.0, 0.0
    inverse = cv2.invertAffineTransform(camera.matrix)
    back = (camera.dst[on] @ inverse[:, :2].T + inverse[:, 2]).astype(np.float32)
    matrix, inliers = cv2.estimateAffinePartial2D(
        camera.src[on], back, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX, refineIters=10
    )
    if matrix is None or not np.all(np.isfinite(matrix)) or inliers.sum() < MIN_REGION_TRACKS:
        return 0, 0.0, 0.0
    _, _, log_scale, rotation = similarity_parts(matrix, centre)
    return int(inliers.sum()), log_scale, rotation


def _region(flow: np.ndarray, mask: np.ndarray, camera: CameraMotion) -> MovingRegion | None:
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    if len(xs) < _MIN_REGION_SHARE * h * w:
        return None
    u, v = flow[ys, xs, 0], flow[ys, xs, 1]
    cx, cy = xs.mean(), ys.mean()
    # Divergence: the least-squares k in (u, v) - mean = k (p - centroid), a scale rate.
    rx, ry = xs - cx, ys - cy
    spread = float((rx * rx + ry * ry).sum())
    k = float((rx * (u - u.mean()) + ry * (v - v.mean())).sum() / spread) if spread > 0 else 0.0
    # A box from percentiles, so a few stray pixels do not stretch it across the frame.
    x0, x1 = np.percentile(xs, (2, 98))
    y0, y1 = np.percentile(ys, (2, 98))
    tracks, track_log_scale, track_rotation = _own_similarity(camera, mask, np.array([cx, cy]))
    return MovingRegion(
        share=len(xs) / (h * w),
        centroid=(float(cx + 0.5) / w, float(cy + 0.5) / h),
        box=(float(x0) / w, float(y0) / h, float(x1 + 1) / w, float(y1 + 1) / h),
        dx=float(u.mean()) / w,
        dy=float(v.mean()) / h,
        log_scale=math.log1p(max(k, -0.9)),
        tracks=tracks,
        track_log_scale=track_log_scale,
        track_rotation=track_rotation,
    )


def residual_motion(
    first: np.ndarray, second: np.ndarray, camera: CameraMotion, dis: cv2.DISOpticalFlow
) -> tuple[np.ndarray, MovingRegion | None, float]:
    """What moves once ``camera`` is taken out -> (cells, region or None, background level).

    ``second`` is warped back onto ``first`` by the camera transform and DIS flow measured
    between them, so the residual is in the first frame's pixel grid (work-size pixels)."""
    h, w = first.shape
    aligned = cv2.warpAffine(
        second, camera.matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    )
    inside = _inside(camera.matrix, h, w)
    # Where the second frame has nothing (content that left), the first frame stands in: the
    # camera alone explains it, so the residual there is zero instead of an edge artefact.
    aligned[~inside] = first[~inside]
    flow = dis.calc(first, aligned, None)  # (h, w, 2), work-size pixels
    valid = inside.copy()
    m = _MARGIN_PX
    valid[:m], valid[h - m :], valid[:, :m], valid[:, w - m :] = False, False, False, False
    mag = np.hypot(flow[..., 0], flow[..., 1])
    # Reported magnitudes are in the same fractions as the shifts: hypot(dx / w, dy / h).
    relative = np.hypot(flow[..., 0] / w, flow[..., 1] / h)
    cells = _cells(flow, relative, valid).astype(np.float32)
    counted = valid & _textured(first)
    if not counted.any():
        return cells, None, 0.0
    # The background's own level, from textured pixels only: DIS smears motion across flat
    # areas. When the camera could not be measured, the frame offers no background to learn
    # from (what texture there is may be the object itself): the identity's level, zero.
    seen = mag[counted]
    level, mad = 0.0, 0.0
    if not camera.no_texture:
        level = float(np.median(seen))
        mad = float(np.median(np.abs(seen - level))) * 1.4826
    threshold = max(_MIN_RESIDUAL_PX, level + _MAD_K * mad)
    moving = ((mag > threshold) & counted).astype(np.uint8)
    moving = cv2.morphologyEx(moving, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0
    background = float(np.median(relative[counted])) if not camera.no_texture else 0.0
    return cells, _region(flow, moving, camera), background
