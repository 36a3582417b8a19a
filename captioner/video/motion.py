"""Motion between sampled frames: the camera's global transform, and what moves on top of it.

For each pair of consecutive frames, at low resolution (short side :data:`WORK_SIZE`, grey):

1. **Camera**: Shi-Tomasi corners of the first frame tracked into the second by pyramidal
   Lucas-Kanade, kept when tracking back lands where they started, then a similarity transform
   (shift, scale, rotation) fitted by RANSAC. Too few tracks (a flat or blank frame), or
   agreeing tracks all in one small patch (a textured thing over a plain wall: that is an
   object, not the camera), give the identity with ``no_texture`` set.
2. **Residual**: the second frame warped back by that transform, dense DIS flow from the first
   frame to it; what is left is motion the camera does not explain. It is summarised on a
   :data:`GRID` x :data:`GRID` grid of cells, and as one *moving region*: the pixels whose
   residual stands clearly above the background's, with their box, centroid, mean motion and
   divergence (the region's own scale change, which tells approach from recede). Only pixels
   with some image gradient count towards the region: in a flat patch any flow fits.

Sign conventions, in image coordinates (x to the right, y down); shifts are fractions of the
frame's width (x) and height (y):

- ``dx > 0``: the content moves right; ``dy > 0``: it moves down.
- ``log_scale > 0``: the content grows (zoom in; for a region: it approaches).
- ``rotation > 0`` (radians): the content turns clockwise as seen on screen (from +x towards +y).

Each pair becomes one float32 vector of :data:`MOTION_DIM` values laid out as
:data:`MOTION_FIELDS` (:data:`FIELD` maps a name to its index). A clip of T frames gives T-1
rows: a motion exists only between two frames, and a padded first row would read as "a
textured, perfectly still pair", which is a claim, not an absence. Everything is numpy and
OpenCV on the CPU, deterministic (RANSAC in OpenCV seeds its own generator on every call).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

#: Short side, in pixels, at which all motion is measured (speed over detail).
WORK_SIZE = 112
#: Residual flow is summarised on GRID x GRID cells.
GRID = 4
MAX_CORNERS = 128
#: Fewer tracks than this and the transform is not trusted: identity, ``no_texture`` set.
MIN_TRACKS = 10
#: ... and the same when the agreeing tracks cover less of the frame than this (their box).
MIN_SPREAD = 0.12
_FB_MAX_PX = 1.0  # forward-backward disagreement allowed to a track, work-size pixels
_RANSAC_PX = 1.0  # RANSAC inlier distance, work-size pixels
_LK = {
    "winSize": (13, 13),
    "maxLevel": 3,
    "criteria": (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 10, 0.03),
}
# A region pixel moves at least this much after the camera is taken out, and clearly more than
# the background does (median + _MAD_K robust deviations).
_MIN_RESIDUAL_PX = 0.6
_MAD_K = 5.0
# Root-mean-square Sobel gradient (7x7 neighbourhood) below which a pixel counts as flat: a
# 3x3 Sobel reads a one-grey-level step as 4, so this is a few grey levels per pixel.
_MIN_GRADIENT = 16.0
_MIN_REGION_SHARE = 0.005  # of the frame; fewer moving pixels are noise, not a region
_MARGIN_PX = 3  # pixels this close to the frame's edge are not trusted (DIS is poor there)

GLOBAL_FIELDS = (
    "dx",
    "dy",
    "log_scale",
    "rotation",
    "inlier_share",
    "track_share",  # tracks found / MAX_CORNERS
    "inlier_spread",  # share of the frame the inliers' box covers
    "no_texture",  # 1.0 when the transform could not be measured (identity reported)
)
CELL_FIELDS = tuple(
    f"cell{r}{c}_{q}" for r in range(GRID) for c in range(GRID) for q in ("dx", "dy", "mag")
)
REGION_FIELDS = (
    "region_present",
    "region_share",  # of the frame
    "region_cx",  # centroid, fractions of width / height from the top-left corner
    "region_cy",
    "region_x0",  # box: left, top, right, bottom
    "region_y0",
    "region_x1",
    "region_y1",
    "region_dx",  # mean residual motion of the region
    "region_dy",
    "region_log_scale",  # the region's own scale change: > 0 grows (approaches)
    "background_residual",  # median residual magnitude: how much the transform leaves over
)
#: Names of the vector's entries, in order: 8 camera, 48 grid (row-major cells, each dx, dy,
#: magnitude), 12 region.
MOTION_FIELDS = GLOBAL_FIELDS + CELL_FIELDS + REGION_FIELDS
MOTION_DIM = len(MOTION_FIELDS)
#: Field name -> index in a motion vector.
FIELD = {name: i for i, name in enumerate(MOTION_FIELDS)}


@dataclass(frozen=True)
class CameraMotion:
    """The global similarity transform between two frames (module conventions)."""

    dx: float
    dy: float
    log_scale: float
    rotation: float
    inlier_share: float
    tracks: int
    #: Share of the frame covered by the inliers' box (5th to 95th percentile each way).
    spread: float
    no_texture: bool
    #: 2x3 matrix in work-size pixels mapping first-frame points to second-frame points.
    matrix: np.ndarray


@dataclass(frozen=True)
class MovingRegion:
    """Pixels moving on their own: share of the frame, centroid, box, motion, scale change."""

    share: float
    centroid: tuple[float, float]
    box: tuple[float, float, float, float]
    dx: float
    dy: float
    log_scale: float


@dataclass(frozen=True)
class PairMotion:
    """Motion between two frames: camera, residual grid (GRID, GRID, 3), moving region."""

    camera: CameraMotion
    cells: np.ndarray
    region: MovingRegion | None
    background_residual: float

    def vector(self) -> np.ndarray:
        """-> (MOTION_DIM,) float32 laid out as :data:`MOTION_FIELDS`."""
        c, r = self.camera, self.region
        head = [
            c.dx,
            c.dy,
            c.log_scale,
            c.rotation,
            c.inlier_share,
            c.tracks / MAX_CORNERS,
            c.spread,
            float(c.no_texture),
        ]
        if r is None:
            tail = [0.0] * (len(REGION_FIELDS) - 1)
        else:
            tail = [1.0, r.share, *r.centroid, *r.box, r.dx, r.dy, r.log_scale]
        out = np.concatenate(
            [head, self.cells.reshape(-1), tail, [self.background_residual]]
        ).astype(np.float32)
        assert out.shape == (MOTION_DIM,)
        return out


# ------------------------------------------------------------------------------ camera


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


def _identity(tracks: int) -> CameraMotion:
    eye = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float64)
    return CameraMotion(0.0, 0.0, 0.0, 0.0, 0.0, tracks, 0.0, True, eye)


def _corners(first: np.ndarray) -> np.ndarray | None:
    """Shi-Tomasi corners spread over the frame: at most an equal share of MAX_CORNERS in each
    of GRID x GRID cells, so one richly textured object cannot outvote the background."""
    found = cv2.goodFeaturesToTrack(
        first, maxCorners=4 * MAX_CORNERS, qualityLevel=0.002, minDistance=4, blockSize=5
    )
    if found is None:
        return None
    pts = found.reshape(-1, 2)  # strongest first
    h, w = first.shape
    col = np.minimum((pts[:, 0] * GRID / w).astype(int), GRID - 1)
    row = np.minimum((pts[:, 1] * GRID / h).astype(int), GRID - 1)
    cell = row * GRID + col
    order = np.argsort(cell, kind="stable")  # by cell, strongest first within each
    ranked = cell[order]
    rank = np.empty(len(pts), dtype=int)
    rank[order] = np.arange(len(pts)) - np.searchsorted(ranked, ranked, side="left")
    return found[rank < MAX_CORNERS // (GRID * GRID)]


def camera_motion(first: np.ndarray, second: np.ndarray) -> CameraMotion:
    """The similarity transform taking grey work frame ``first`` to ``second``."""
    corners = _corners(first)
    if corners is None or len(corners) < MIN_TRACKS:
        return _identity(0)
    ahead, ok, _ = cv2.calcOpticalFlowPyrLK(first, second, corners, None, **_LK)
    back, ok_back, _ = cv2.calcOpticalFlowPyrLK(second, first, ahead, None, **_LK)
    fb = np.linalg.norm((back - corners).reshape(-1, 2), axis=1)
    keep = (ok.ravel() == 1) & (ok_back.ravel() == 1) & (fb < _FB_MAX_PX)
    src, dst = corners.reshape(-1, 2)[keep], ahead.reshape(-1, 2)[keep]
    tracks = len(src)
    if tracks < MIN_TRACKS:
        return _identity(tracks)
    matrix, inliers = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=_RANSAC_PX, refineIters=10
    )
    if matrix is None or not np.all(np.isfinite(matrix)):
        return _identity(tracks)
    h, w = first.shape
    held = src[inliers.ravel() == 1]
    (x0, y0), (x1, y1) = np.percentile(held, (5, 95), axis=0)
    spread = float((x1 - x0) / w * (y1 - y0) / h)
    if spread < MIN_SPREAD:
        # All the agreeing texture sits in one small patch: that is an object moving (or not)
        # over a plain background, not the camera; the camera cannot be measured.
        return _identity(tracks)
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    # The shift reported is the frame centre's: about the origin it would mix in scale and turn.
    moved = matrix[:, :2] @ centre + matrix[:, 2] - centre
    a, b = float(matrix[0, 0]), float(matrix[1, 0])
    return CameraMotion(
        dx=float(moved[0] / w),
        dy=float(moved[1] / h),
        log_scale=math.log(max(math.hypot(a, b), 1e-6)),
        rotation=math.atan2(b, a),
        inlier_share=float(inliers.sum() / tracks),
        tracks=tracks,
        spread=spread,
        no_texture=False,
        matrix=matrix,
    )


# ------------------------------------------------------------------------------ residual


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


def _region(flow: np.ndarray, mask: np.ndarray) -> MovingRegion | None:
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
    return MovingRegion(
        share=len(xs) / (h * w),
        centroid=(float(cx + 0.5) / w, float(cy + 0.5) / h),
        box=(float(x0) / w, float(y0) / h, float(x1 + 1) / w, float(y1 + 1) / h),
        dx=float(u.mean()) / w,
        dy=float(v.mean()) / h,
        log_scale=math.log1p(max(k, -0.9)),
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
    moving = cv2.morphologyEx(moving, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    background = float(np.median(relative[counted])) if not camera.no_texture else 0.0
    return cells, _region(flow, moving.astype(bool)), background


# ------------------------------------------------------------------------------ public


def make_flow() -> cv2.DISOpticalFlow:
    """The dense flow used for residuals: DIS, fast preset, refined to half work resolution."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    dis.setFinestScale(1)
    return dis


def pair_motion(
    first: np.ndarray, second: np.ndarray, dis: cv2.DISOpticalFlow | None = None
) -> PairMotion:
    """Motion from frame ``first`` to ``second`` (RGB uint8 (H, W, 3), same size)."""
    if first.shape != second.shape:
        raise ValueError(f"frames differ in shape: {first.shape} and {second.shape}")
    a, b = work_frame(first), work_frame(second)
    camera = camera_motion(a, b)
    cells, region, level = residual_motion(a, b, camera, dis or make_flow())
    return PairMotion(camera, cells, region, level)


def clip_motion(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB frames -> (T-1, MOTION_DIM) float32: one row per consecutive
    pair, row i the motion from frame i to frame i+1 (layout: :data:`MOTION_FIELDS`)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) RGB, got shape {frames.shape}")
    out = np.zeros((max(len(frames) - 1, 0), MOTION_DIM), np.float32)
    if len(frames) < 2:
        return out
    dis = make_flow()
    grey = [work_frame(f) for f in frames]
    for i in range(len(frames) - 1):
        camera = camera_motion(grey[i], grey[i + 1])
        cells, region, level = residual_motion(grey[i], grey[i + 1], camera, dis)
        out[i] = PairMotion(camera, cells, region, level).vector()
    return out
