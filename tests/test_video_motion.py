"""Motion features, shot cuts and the geometry rule, on clips rendered with known motion.

Every clip is a real photograph (scikit-image's) seen by a virtual camera: each frame is the
previous one's view moved by a known similarity transform about the frame centre, so the
answer (sign, size, where the moving thing is) is known exactly.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from captioner.video import (
    CAMERA_MOTIONS,
    FIELD,
    MOTION_DIM,
    MOTION_FIELDS,
    OBJECT_MOTIONS,
    camera_label,
    clip_motion,
    cut_times,
    find_cuts,
    geometry_labels,
    object_label,
    pair_motion,
    shot_spans,
    split_windows,
)
from captioner.video.geometry import CONTENT_SCALE, CONTENT_SHIFT, OBJECT_SCALE, OBJECT_SHIFT

data = pytest.importorskip("skimage.data")

SIZE = 224
Move = tuple[float, float, float, float]  # content dx px, dy px, log scale, rotation (cw, rad)


def photo(name: str) -> np.ndarray:
    image = getattr(data, name)()
    return np.dstack([image] * 3) if image.ndim == 2 else image


def _similarity(move: Move) -> np.ndarray:
    dx, dy, log_scale, rotation = move
    centre = ((SIZE - 1) / 2, (SIZE - 1) / 2)
    # OpenCV's angle turns counter-clockwise on screen; the module's rotation is clockwise.
    m = cv2.getRotationMatrix2D(centre, -math.degrees(rotation), math.exp(log_scale))
    m[:, 2] += (dx, dy)
    return np.vstack([m, [0, 0, 1]])


def render(texture: np.ndarray, moves: list[Move]) -> np.ndarray:
    """A camera's view of ``texture`` (centre crop of SIZE), moved by ``moves[i]`` between
    frame i and i+1 -> (len(moves) + 1, SIZE, SIZE, 3) uint8."""
    h, w = texture.shape[:2]
    view = np.array([[1, 0, -(w - SIZE) / 2], [0, 1, -(h - SIZE) / 2], [0, 0, 1.0]])
    frames = []
    for move in [*moves, None]:
        frames.append(
            cv2.warpAffine(texture, view[:2], (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT)
        )
        if move is not None:
            view = _similarity(move) @ view
    return np.stack(frames)


def steady(move: Move, pairs: int = 5) -> list[Move]:
    return [move] * pairs


def paste(frames: np.ndarray, patch: np.ndarray, centres, sizes) -> np.ndarray:
    """``patch`` resized to ``sizes[t]`` square and pasted centred on ``centres[t]`` in frame t."""
    out = frames.copy()
    for t, ((cx, cy), s) in enumerate(zip(centres, sizes, strict=True)):
        x0, y0 = round(cx - s / 2), round(cy - s / 2)
        out[t, y0 : y0 + s, x0 : x0 + s] = cv2.resize(patch, (s, s), interpolation=cv2.INTER_AREA)
    return out


def column(features: np.ndarray, name: str) -> np.ndarray:
    return features[:, FIELD[name]]


PATCH = photo("coffee")[100:300, 200:400]  # a cup: texture unlike the astronaut behind it


# ------------------------------------------------------------------------ camera transform


@pytest.mark.parametrize(
    ("move", "field", "expected"),
    [
        ((6, 0, 0, 0), "dx", 6 / SIZE),  # content right
        ((-6, 0, 0, 0), "dx", -6 / SIZE),
        ((0, 5, 0, 0), "dy", 5 / SIZE),  # content down
        ((0, -5, 0, 0), "dy", -5 / SIZE),
        ((0, 0, 0.03, 0), "log_scale", 0.03),  # content grows
        ((0, 0, -0.03, 0), "log_scale", -0.03),
        ((0, 0, 0, 0.03), "rotation", 0.03),  # clockwise on screen
        ((0, 0, 0, -0.03), "rotation", -0.03),
        ((25, 0, 0, 0), "dx", 25 / SIZE),  # a fast pan: 11% of the frame per pair
    ],
)
@pytest.mark.parametrize("texture", ["astronaut", "grass"])
def test_the_camera_transform_has_the_right_sign_and_size(move, field, expected, texture) -> None:
    features = clip_motion(render(photo(texture), steady(move)))
    assert features.shape == (5, MOTION_DIM)
    assert column(features, field) == pytest.approx(np.full(5, expected), rel=0.1, abs=1e-3)
    for other in {"dx", "dy", "log_scale", "rotation"} - {field}:
        assert np.abs(column(features, other)).max() < 2e-3, other
    assert column(features, "no_texture").max() == 0
    assert column(features, "inlier_share").min() > 0.8
    assert column(features, "region_present").sum() <= 1  # the whole frame moves together


def test_the_shift_is_the_frame_centres_even_while_zooming_and_turning() -> None:
    features = clip_motion(render(photo("astronaut"), steady((4, -3, 0.02, 0.02))))
    assert column(features, "dx") == pytest.approx(np.full(5, 4 / SIZE), abs=1.5e-3)
    assert column(features, "dy") == pytest.approx(np.full(5, -3 / SIZE), abs=1.5e-3)
    assert column(features, "log_scale") == pytest.approx(np.full(5, 0.02), abs=2e-3)
    assert column(features, "rotation") == pytest.approx(np.full(5, 0.02), abs=2e-3)


def test_a_still_clip_is_still_and_features_are_deterministic() -> None:
    frames = render(photo("astronaut"), steady((0, 0, 0, 0)))
    features = clip_motion(frames)
    assert np.abs(features[:, :4]).max() < 1e-4
    assert column(features, "region_present").max() == 0
    moving = render(photo("astronaut"), steady((3, 2, 0.01, 0.01)))
    assert np.array_equal(clip_motion(moving), clip_motion(moving))
    assert features.dtype == np.float32


def test_a_flat_clip_is_flagged_not_an_error() -> None:
    flat = np.full((4, SIZE, SIZE, 3), (90, 140, 60), np.uint8)
    features = clip_motion(flat)
    assert features.shape == (3, MOTION_DIM)
    assert column(features, "no_texture").tolist() == [1, 1, 1]
    assert np.abs(features[:, :4]).max() == 0  # the identity
    assert column(features, "inlier_share").max() == 0
    assert column(features, "region_present").max() == 0
    assert camera_label(features) == ("static", 0.0)  # nothing could have been seen to move
    assert object_label(features)[0] == "none"
    noisy = flat + np.random.default_rng(0).integers(0, 3, flat.shape, dtype=np.uint8)
    assert column(clip_motion(noisy), "region_present").max() == 0  # sensor noise moves nothing


def test_clip_shapes_and_the_layout() -> None:
    assert len(MOTION_FIELDS) == len(set(MOTION_FIELDS)) == MOTION_DIM
    assert all(MOTION_FIELDS[i] == name for name, i in FIELD.items())
    frames = render(photo("astronaut"), steady((2, 0, 0, 0), 2))
    assert clip_motion(frames[:1]).shape == (0, MOTION_DIM)
    pair = pair_motion(frames[0], frames[1])
    assert np.array_equal(pair.vector(), clip_motion(frames[:2])[0])
    with pytest.raises(ValueError, match="T, H, W, 3"):
        clip_motion(frames[0])
    with pytest.raises(ValueError, match="differ in shape"):
        pair_motion(frames[0], frames[1, :100])


# ------------------------------------------------------------------------ residual motion


def test_a_moving_cutout_is_found_where_it_is_moving_its_way() -> None:
    background = render(photo("astronaut"), steady((0, 0, 0, 0), 6))
    centres = [(60 + 8 * t, 150) for t in range(7)]
    features = clip_motion(paste(background, PATCH, centres, [50] * 7))
    assert np.abs(column(features, "dx")).max() < 1e-3  # the camera stays still
    assert column(features, "region_present").tolist() == [1] * 6
    assert column(features, "region_dx") == pytest.approx(np.full(6, 8 / SIZE), rel=0.4)
    assert np.abs(column(features, "region_dy")).max() < 0.005
    cx, cy = column(features, "region_cx"), column(features, "region_cy")
    truth = np.array([c[0] for c in centres[:-1]]) / SIZE
    assert np.abs(cx - truth).max() < 0.06
    assert np.all(np.diff(cx) > 0)  # moving right, frame after frame
    assert np.abs(cy - 150 / SIZE).max() < 0.06
    assert np.all(column(features, "region_x0") < truth)
    assert np.all(column(features, "region_x1") > truth)
    # The residual grid lights up in the cup's row of cells (row 2 of 4), not elsewhere.
    mags = features[:, [FIELD[f"cell{r}{c}_mag"] for r in range(4) for c in range(4)]]
    rows = mags.reshape(6, 4, 4).max(axis=2)
    assert np.all(rows.argmax(axis=1) == 2)
    assert object_label(features)[0] == "right"


@pytest.mark.parametrize(
    ("sizes", "sign", "label"),
    [
        ([40 + 8 * t for t in range(7)], 1, "approach"),
        ([100 - 8 * t for t in range(7)], -1, "recede"),
    ],
)
def test_a_growing_cutout_approaches_and_a_shrinking_one_recedes(sizes, sign, label) -> None:
    background = render(photo("astronaut"), steady((0, 0, 0, 0), 6))
    features = clip_motion(paste(background, PATCH, [(112, 112)] * 7, sizes))
    assert np.all(np.sign(column(features, "region_log_scale")) == sign)
    # The corner tracks on the cup measure its own scale change more sharply than the flow.
    tracked = column(features, "region_tracks") > 0
    assert tracked.sum() >= 4
    truth = np.diff(np.log(sizes))
    measured = column(features, "region_track_log_scale")[tracked]
    assert np.all(np.sign(measured) == sign)
    assert np.abs(measured - truth[tracked]).max() < 0.5 * np.abs(truth).min()
    assert np.abs(column(features, "log_scale")).max() < 2e-3  # not a zoom: the rest is still
    labels = geometry_labels(features)
    assert (labels.camera, labels.object) == ("static", label)
    assert labels.object_score > 0.5


def test_an_object_is_seen_moving_while_the_camera_pans() -> None:
    background = render(photo("astronaut"), steady((-5, 0, 0, 0), 6))
    centres = [(170, 60 + 8 * t) for t in range(7)]  # down the frame, as the view slides left
    features = clip_motion(paste(background, PATCH, centres, [50] * 7))
    assert column(features, "dx") == pytest.approx(np.full(6, -5 / SIZE), abs=1e-3)
    labels = geometry_labels(features)
    # Against the scene, the cup moves down and right (the view slides left under it).
    assert (labels.camera, labels.object) == ("pan_right", "down")


def test_a_followed_subject_moves_against_the_background() -> None:
    background = render(photo("astronaut"), steady((5, 0, 0, 0), 6))  # the camera turns left
    frames = paste(background, PATCH, [(112, 120)] * 7, [50] * 7)  # the cup stays in frame
    labels = geometry_labels(clip_motion(frames))
    assert (labels.camera, labels.object) == ("pan_left", "left")


def test_a_textured_thing_over_a_plain_wall_is_an_object_not_the_camera() -> None:
    wall = np.full((7, SIZE, SIZE, 3), 120, np.uint8)
    frames = paste(wall, PATCH, [(70 + 10 * t, 100) for t in range(7)], [50] * 7)
    features = clip_motion(frames)
    assert column(features, "no_texture").tolist() == [1] * 6
    assert geometry_labels(features).object == "right"


# ------------------------------------------------------------------------ shot cuts


def test_two_photos_give_exactly_one_cut_at_the_join() -> None:
    first = render(photo("astronaut"), steady((6, 0, 0, 0), 6))
    second = render(photo("coffee"), steady((6, 0, 0, 0), 4))
    frames = np.concatenate([first, second])
    assert find_cuts(frames) == [7]
    times = [0.5 * i for i in range(len(frames))]
    assert cut_times([7], times) == [3.25]
    assert shot_spans(len(frames), [7]) == [(0, 7), (7, 12)]


@pytest.mark.parametrize("texture", ["astronaut", "coffee", "chelsea", "rocket"])
def test_a_fast_pan_over_one_photo_is_no_cut(texture) -> None:
    assert find_cuts(render(photo(texture), steady((40, 0, 0, 0), 7))) == []


def test_a_flash_is_no_cut_but_a_cut_after_it_is() -> None:
    frames = render(photo("astronaut"), steady((4, 0, 0, 0), 7))
    frames[4] = np.clip(frames[4].astype(int) + 120, 0, 255).astype(np.uint8)
    assert find_cuts(frames) == []
    later = np.concatenate([frames, render(photo("chelsea"), steady((0, 0, 0, 0), 3))])
    assert find_cuts(later) == [8]


def test_windows_never_span_a_cut() -> None:
    windows = [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0)]
    split = split_windows(windows, [2.5])
    assert split == [(0.0, 2.0), (1.0, 2.5), (2.5, 3.0), (2.0, 2.5), (2.5, 4.0)]
    assert all(not (a < 2.5 < b) for a, b in split)
    assert split_windows(windows, [2.5], min_length=0.75) == [(0.0, 2.0), (1.0, 2.5), (2.5, 4.0)]
    edges = [(0.0, 2.0), (2.0, 4.0)]
    assert split_windows(edges, [2.0]) == edges  # a cut on a window's edge splits nothing


# ------------------------------------------------------------------------ the geometry rule


CAMERA_CASES = [
    ("static", (0, 0, 0, 0)),
    ("pan_left", (6, 0, 0, 0)),  # the camera turns left: the content moves right
    ("pan_right", (-6, 0, 0, 0)),
    ("tilt_up", (0, 5, 0, 0)),  # the camera turns up: the content moves down
    ("tilt_down", (0, -5, 0, 0)),
    ("zoom_in", (0, 0, 0.03, 0)),
    ("zoom_out", (0, 0, -0.03, 0)),
    ("roll", (0, 0, 0, 0.03)),
    ("roll", (0, 0, 0, -0.03)),
    ("pan_left", (1.2, 0, 0, 0)),  # slow, but steady
]


@pytest.mark.parametrize(("label", "move"), CAMERA_CASES)
@pytest.mark.parametrize("texture", ["astronaut", "brick"])
def test_the_rule_names_the_camera_motion(label, move, texture) -> None:
    labels = geometry_labels(clip_motion(render(photo(texture), steady(move, 7))))
    assert (labels.camera, labels.object) == (label, "none")
    assert 0.5 <= labels.camera_score <= 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_jittered_camera_is_handheld(seed) -> None:
    shake = np.random.default_rng(seed).normal(0, 2.5, (8, 2))  # where the camera points
    moves = [(dx, dy, 0.0, 0.0) for dx, dy in np.diff(shake, axis=0)]
    labels = geometry_labels(clip_motion(render(photo("astronaut"), moves)))
    assert labels.camera == "handheld"
    assert labels.camera_score > 0.4


def test_the_conventions_are_one_set_of_constants() -> None:
    assert set(CONTENT_SHIFT) | set(CONTENT_SCALE) | {"static", "handheld", "roll"} == set(
        CAMERA_MOTIONS
    )
    assert set(OBJECT_SHIFT) | set(OBJECT_SCALE) | {"none"} == set(OBJECT_MOTIONS)
    assert CONTENT_SHIFT["pan_left"] == (1, 0)  # content moves right
    assert CONTENT_SHIFT["tilt_up"] == (0, 1)  # content moves down
    with pytest.raises(ValueError, match="pairs"):
        geometry_labels(np.zeros((3, 5)))
