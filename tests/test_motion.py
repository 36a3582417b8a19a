"""The synthetic motion clips: layout, decoding, determinism, motion direction, order-only pairs."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from captioner.data.motion import (
    CLASSES,
    ORDER_PAIRS,
    _clip_rng,
    generate_motion,
    main_track,
    render_clip,
    sample_params,
)

# The sign each moving class gives to its quantity's change over the clip.
DIRECTIONS = {
    "moving_left": ("x", -1),
    "moving_right": ("x", 1),
    "moving_up": ("y", -1),
    "moving_down": ("y", 1),
    "growing": ("side", 1),
    "shrinking": ("side", -1),
    "rotating_clockwise": ("angle", -1),
    "rotating_counterclockwise": ("angle", 1),
}
COLUMN = {"x": 0, "y": 1, "side": 2, "angle": 3}


def decode(path: Path) -> np.ndarray:
    """All frames of a video as RGB, (T, H, W, 3) uint8."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return np.stack(frames)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("motion")
    generate_motion(
        root,
        seed=5,
        n_per_class=1,
        n_val_per_class=1,
        n_test_per_class=1,
        frames=8,
        size=64,
        progress=False,
    )
    return root


def test_layout_classes_and_json(small_set: Path) -> None:
    assert (small_set / "classes.txt").read_text().splitlines() == list(CLASSES)
    for split in ("train", "val", "test"):
        data = json.loads((small_set / f"{split}.json").read_text())
        assert data["info"]["classes"] == list(CLASSES)
        assert [c["class"] for c in data["clips"]] == list(CLASSES)
        for clip in data["clips"]:
            path = small_set / clip["file"]
            assert path == small_set / split / clip["class"] / "000000.mp4"
            assert path.is_file()
            assert CLASSES[clip["label"]] == clip["class"] == clip["params"]["class"]
    assert not list(small_set.rglob("*.part.mp4"))


def test_videos_decode_to_the_rendered_frames(small_set: Path) -> None:
    data = json.loads((small_set / "val.json").read_text())
    for clip in data["clips"]:
        frames = decode(small_set / clip["file"])
        assert frames.shape == (8, 64, 64, 3)
        capture = cv2.VideoCapture(str(small_set / clip["file"]))
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 8
        capture.release()
        # Re-render from the clip's own RNG: the file holds those frames, colours not swapped.
        rng = _clip_rng(5, "val", clip["class"], 0)
        assert sample_params(rng, clip["class"], 8) == clip["params"]
        rendered = render_clip(clip["params"], rng, 64).astype(np.float32)
        assert np.abs(frames - rendered).mean() < 6.0
        swapped = rendered[..., ::-1]
        assert np.abs(frames - rendered).mean() < np.abs(frames - swapped).mean()


def test_returns_paths_and_default_eval_counts(tmp_path: Path) -> None:
    paths = generate_motion(tmp_path, seed=0, n_per_class=0, frames=2, size=32, progress=False)
    assert paths == {
        "train": tmp_path / "train.json",
        "val": tmp_path / "val.json",
        "test": tmp_path / "test.json",
        "classes": tmp_path / "classes.txt",
    }
    counts = {s: len(json.loads(paths[s].read_text())["clips"]) for s in ("train", "val", "test")}
    assert counts == {"train": 0, "val": 2 * len(CLASSES), "test": 2 * len(CLASSES)}


def test_same_seed_same_files_and_new_seed_differs(tmp_path: Path) -> None:
    def make(name: str, seed: int) -> Path:
        generate_motion(
            tmp_path / name,
            seed,
            1,
            n_val_per_class=0,
            n_test_per_class=0,
            frames=4,
            size=32,
            progress=False,
        )
        return tmp_path / name

    a, b, c = make("a", 11), make("b", 11), make("c", 12)
    assert (a / "train.json").read_text() == (b / "train.json").read_text()
    assert (a / "train.json").read_text() != (c / "train.json").read_text()
    clip = "train/rotating_clockwise/000000.mp4"
    np.testing.assert_array_equal(decode(a / clip)[0], decode(b / clip)[0])
    assert not np.array_equal(decode(a / clip)[0], decode(c / clip)[0])


def test_splits_do_not_depend_on_each_others_sizes(tmp_path: Path) -> None:
    for name, n_train in (("few", 1), ("more", 3)):
        generate_motion(
            tmp_path / name,
            4,
            n_train,
            n_val_per_class=0,
            n_test_per_class=1,
            frames=4,
            size=32,
            progress=False,
        )
    few, more = tmp_path / "few", tmp_path / "more"
    assert (few / "test.json").read_text() == (more / "test.json").read_text()
    for cls in CLASSES:
        name = f"{cls}/000000.mp4"
        assert (few / "test" / name).read_bytes() == (more / "test" / name).read_bytes()
        assert (few / "train" / name).read_bytes() == (more / "train" / name).read_bytes()
    train = json.loads((more / "train.json").read_text())["clips"]
    assert len(train) == 3 * len(CLASSES)
    assert train[0]["params"] != train[1]["params"]


@pytest.mark.parametrize("cls", CLASSES)
def test_tracks_go_the_right_way(cls: str) -> None:
    for i in range(25):
        params = sample_params(np.random.default_rng([i, 3]), cls)
        track = main_track(params)
        assert track.shape == (24, 4)
        assert np.all((track[:, 2] >= 0.19) & (track[:, 2] <= 0.66))
        assert np.all((track[:, :2] > 0.05) & (track[:, :2] < 0.95))
        change = track[-1] - track[0]
        if cls == "static":
            assert np.abs(change[:2]).max() < 0.02
            assert abs(change[3]) < 2.5
            assert params["motion"] == {"quantity": "none"}
            continue
        quantity, sign = DIRECTIONS[cls]
        col = COLUMN[quantity]
        assert params["motion"]["quantity"] == quantity
        assert params["motion"]["start"] == pytest.approx(track[0, col])
        if quantity in ("x", "y"):
            assert 0.33 <= sign * change[col] <= 0.62
            assert abs(change[1 - col]) < 0.02  # no drift across the axis
        elif quantity == "side":
            ratio = track[-1, 2] / track[0, 2]
            assert 1.8 <= ratio**sign <= 2.5
        else:
            assert 148.0 <= sign * change[3] <= 242.0
        # Monotone apart from the small jitter.
        steps = np.diff(track[:, col]) * sign
        assert steps.min() > -0.02 * (1 if col < 3 else 150)


def _blue_mask(frame: np.ndarray) -> np.ndarray:
    r, g, b = (frame[..., k].astype(np.int16) for k in range(3))
    return (b - r > 60) & (b - g > 40)


@pytest.mark.parametrize("cls", CLASSES)
def test_rendered_object_moves_the_right_way(cls: str) -> None:
    """Measure the main object in the pixels: a blue ell on a plain light background."""
    size = 96
    for i in range(4):
        rng = np.random.default_rng([i, 17])
        params = sample_params(rng, cls, frames=12)
        params["background"] = "light"
        params["distractors"] = []
        params["main"].update(family="shape", kind="ell", colour="blue")
        frames = render_clip(params, rng, size)
        assert frames.shape == (12, size, size, 3)
        assert frames.dtype == np.uint8
        masks = [_blue_mask(f) for f in frames]
        area = np.array([m.sum() for m in masks], dtype=float)
        ys, xs = zip(*(np.nonzero(m) for m in masks), strict=True)
        centre = np.array([[x.mean(), y.mean()] for x, y in zip(xs, ys, strict=True)]) / size
        track = main_track(params)
        # The ell's mass sits off its box centre, so that offset turns with the object.
        offset = centre - track[:, :2]
        turned = np.degrees(np.unwrap(np.arctan2(-offset[:, 1], offset[:, 0])))
        quantity, sign = DIRECTIONS.get(cls, ("none", 0))
        if quantity in ("x", "y"):
            moved = centre[-1, COLUMN[quantity]] - centre[0, COLUMN[quantity]]
            assert sign * moved > 0.3
        elif quantity == "side":
            assert (area[-1] / area[0]) ** sign > 2.5
        elif quantity == "angle":
            assert sign * (turned[-1] - turned[0]) > 70.0
            # ...and it swings about a pivot like a clock hand, the same way round
            middle = centre.mean(axis=0)
            swing = np.degrees(
                np.unwrap(np.arctan2(-(centre[:, 1] - middle[1]), centre[:, 0] - middle[0]))
            )
            assert sign * (swing[-1] - swing[0]) > 45.0
        else:
            assert np.abs(centre[-1] - centre[0]).max() < 0.03
            assert 0.8 < area[-1] / area[0] < 1.25


def test_decoded_difference_moves_with_the_object(tmp_path: Path) -> None:
    """In the files themselves, what changed since frame 0 drifts in the motion's direction."""
    generate_motion(
        tmp_path,
        2,
        3,
        n_val_per_class=0,
        n_test_per_class=0,
        frames=12,
        size=96,
        progress=False,
    )
    for cls in ("moving_left", "moving_right", "moving_up", "moving_down"):
        quantity, sign = DIRECTIONS[cls]
        for index in range(3):
            frames = decode(tmp_path / "train" / cls / f"{index:06d}.mp4").astype(np.int16)
            centroids = []
            for t in (4, 11):
                changed = np.abs(frames[t] - frames[0]).max(axis=2) > 50
                ys, xs = np.nonzero(changed)
                centroids.append((xs.mean(), ys.mean())[COLUMN[quantity]])
            assert sign * (centroids[1] - centroids[0]) > 5.0, (cls, index)


@pytest.mark.parametrize(("first", "second"), ORDER_PAIRS)
def test_pair_members_are_time_reversed_twins(first: str, second: str) -> None:
    """From the same RNG state the pair's clips are each other's frames backwards."""
    for i in range(4):
        p1 = sample_params(np.random.default_rng([i, 8]), first, frames=10)
        p2 = sample_params(np.random.default_rng([i, 8]), second, frames=10)
        np.testing.assert_array_equal(main_track(p1), main_track(p2)[::-1])
        assert len(p1["distractors"]) == len(p2["distractors"])
        for d1, d2 in zip(p1["distractors"], p2["distractors"], strict=True):
            assert d1["track"] == d2["track"][::-1]
        f1 = render_clip(p1, np.random.default_rng([i, 9]), 48)
        f2 = render_clip(p2, np.random.default_rng([i, 9]), 48)
        np.testing.assert_array_equal(f1, f2[::-1])
        # Same frames, hence the same mean frame, yet the clips differ.
        np.testing.assert_allclose(f1.mean(axis=0), f2.mean(axis=0), atol=1e-9)
        assert not np.array_equal(f1, f2)


@pytest.mark.parametrize(("first", "second"), ORDER_PAIRS)
def test_pair_members_visit_the_same_ranges(first: str, second: str) -> None:
    """Over independent clips (as the generator seeds them), both members cover the same span
    of positions / sizes / angles; only the direction differs."""
    spans = {}
    quantity = DIRECTIONS[first][0]
    col = COLUMN[quantity]
    for cls in (first, second):
        rows = []
        for i in range(40):
            track = main_track(sample_params(_clip_rng(0, "train", cls, i), cls))
            values = track[:, col]
            if quantity == "angle":
                # The visited arc: where it begins (counterclockwise) and how wide it is.
                rows.append((values.min() % 360, np.ptp(values)))
            else:
                rows.append((values.min(), values.max()))
            direction = np.sign(track[-1, col] - track[0, col])
            assert direction == DIRECTIONS[cls][1]
        spans[cls] = np.array(rows)
    a, b = spans[first], spans[second]
    if quantity == "angle":
        # The arcs begin anywhere on the circle for both; their widths match.
        assert abs(a[:, 1].mean() - b[:, 1].mean()) < 12.0
        for starts in (a[:, 0], b[:, 0]):
            assert np.histogram(starts, bins=4, range=(0, 360))[0].min() >= 4
    else:
        assert np.abs(a.mean(axis=0) - b.mean(axis=0)).max() < 0.05
        assert np.abs(np.median(a, axis=0) - np.median(b, axis=0)).max() < 0.07
        assert abs(a.std(axis=0) - b.std(axis=0)).max() < 0.04


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown motion class"):
        sample_params(np.random.default_rng(0), "jumping")
    with pytest.raises(ValueError, match="even"):
        generate_motion(tmp_path, 0, 1, size=65, progress=False)
    with pytest.raises(ValueError, match="n_per_class"):
        generate_motion(tmp_path, 0, -1, progress=False)
    with pytest.raises(ValueError, match="frames"):
        generate_motion(tmp_path, 0, 1, frames=1, progress=False)
