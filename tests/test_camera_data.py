"""The camera-motion clips (captioner data camera): motion directions against the pixels,
the recorded transforms, cuts, determinism, the files and the command.

Backgrounds are scikit-image's photographs (``--backgrounds none``); a tiny stamps folder
made here stands in for tuxpaint-stamps-default, so nothing needs apt or the network.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import pytest

from captioner.data.camera import (
    CAMERA_MOTIONS,
    OBJECT_MOTIONS,
    clip_record,
    generate_camera,
    load_camera_assets,
    plan_clip,
    render_clip,
)
from captioner.data.camera_plan import frame_transforms
from captioner.data.synth import seeded_rng
from captioner.data.videos import load_video_dataset
from captioner.video import decode_clip, probe_video, read_frames
from tests.conftest import save_stamp

SIZE = 96
FRAMES = 8
# Real keys of the reviewed noun table, so the stand-ins get real category names.
FAKE = {
    "animals/mammals/dogs/dog": (70, 56, (150, 110, 60)),
    "food/fruit/banana": (36, 70, (240, 220, 60)),
    "food/fruit/apple_red": (50, 50, (200, 30, 30)),
}


@pytest.fixture(scope="module")
def stamps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stamps")
    for key, (w, h, colour) in FAKE.items():
        save_stamp(root / f"{key}.png", w, h, colour)
    return root


@pytest.fixture(scope="module")
def assets(stamps: Path):
    return load_camera_assets(stamps, backgrounds="none")


def _clip(assets, camera: str, seed: int = 0, **pins) -> tuple[dict, np.ndarray, dict]:
    """A clip of ``camera``; clean (no cut-outs, layers, cuts or degradations) unless pinned."""
    rng = seeded_rng(seed, "test", CAMERA_MOTIONS.index(camera))
    options = {"objects": 0, "parallax": False, "degrade": False, **pins}
    cuts = options.pop("cuts", 0.0)
    plan = plan_clip(rng, camera, assets.categories, FRAMES, SIZE, cuts, **options)
    frames, info = render_clip(plan, assets, rng)
    return plan, frames, clip_record(plan, info, "x.mp4")


def _grey(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)


def _similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[dx, dy, log_scale, rotation] of b against a, about the centre: corners tracked by
    Lucas-Kanade, a similarity fitted with RANSAC."""
    ga, gb = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (a, b))
    points = cv2.goodFeaturesToTrack(ga, 200, 0.01, 4)
    moved, status, _ = cv2.calcOpticalFlowPyrLK(ga, gb, points, None)
    ok = status[:, 0] == 1
    c = (a.shape[1] - 1) / 2
    m, _ = cv2.estimateAffinePartial2D(points[ok] - c, moved[ok] - c, method=cv2.RANSAC)
    scale = math.hypot(m[0, 0], m[1, 0])
    angle = math.atan2(m[1, 0], m[0, 0])  # radians, clockwise on screen
    return np.array([m[0, 2] / a.shape[1], m[1, 2] / a.shape[0], math.log(scale), angle])


# ----------------------------------------------------------------------------- camera


@pytest.mark.parametrize(
    ("camera", "axis", "sign"),
    [("pan_left", 0, 1), ("pan_right", 0, -1), ("tilt_up", 1, 1), ("tilt_down", 1, -1)],
)
def test_pans_and_tilts_move_the_content_the_documented_way(assets, camera, axis, sign) -> None:
    _, frames, record = _clip(assets, camera)
    shifts = np.array([cv2.phaseCorrelate(_grey(a), _grey(b))[0] for a, b in pairwise(frames)])
    mean = shifts.mean(axis=0)
    assert np.sign(mean[axis]) == sign, (camera, mean)
    assert abs(mean[axis]) > 2 * abs(mean[1 - axis])
    recorded = np.array([t[axis] for t in record["transforms"][1:]]) * SIZE
    assert np.sign(recorded.mean()) == sign
    assert abs(mean[axis] - recorded.mean()) < 0.25 * abs(recorded.mean()) + 0.3


@pytest.mark.parametrize("camera", ["zoom_in", "zoom_out", "roll", "handheld", "pan_right"])
def test_recorded_transforms_are_what_the_pixels_do(assets, camera) -> None:
    _, frames, record = _clip(assets, camera, seed=3)
    truth = np.array(record["transforms"][1:])
    seen = np.array([_similarity(a, b) for a, b in pairwise(frames)])
    assert np.abs(seen[:, :2] - truth[:, :2]).mean() < 0.003  # shift, fraction of the side
    assert np.abs(seen[:, 2] - truth[:, 2]).mean() < 0.004  # log-scale
    assert np.abs(seen[:, 3] - truth[:, 3]).mean() < 0.0026  # radians (0.15 degrees)
    if camera == "zoom_in":
        assert (truth[:, 2] > 0).all()
        assert seen[:, 2].mean() > 0.005  # the content grows
    if camera == "zoom_out":
        assert seen[:, 2].mean() < -0.005
    if camera == "roll":
        assert abs(seen[:, 3].mean()) > 0.005  # radians (0.3 degrees) per frame
        assert np.sign(seen[:, 3].mean()) == np.sign(truth[:, 3].mean())


def test_static_does_not_move_and_handheld_jitters_without_drift(assets) -> None:
    _, frames, record = _clip(assets, "static")
    assert all(np.array_equal(frames[0], f) for f in frames[1:])
    assert record["transforms"] == [[0.0, 0.0, 0.0, 0.0]] * FRAMES
    plan, frames, record = _clip(assets, "handheld", seed=1)
    steps = np.abs(np.array(record["transforms"][1:])[:, :2]).sum(axis=1)
    assert steps.mean() > 0.001  # it moves every frame...
    assert np.abs(plan["path"]["shift"][-1]).max() < 1e-9  # ...and ends where it started


def test_transform_record_format(assets) -> None:
    _, _, record = _clip(assets, "pan_left", cuts=1.0)
    cut = record["cut"]
    assert 3 <= cut <= FRAMES - 3
    transforms = record["transforms"]
    assert len(transforms) == FRAMES
    assert transforms[0] == [0.0, 0.0, 0.0, 0.0]
    assert transforms[cut] is None
    assert all(len(t) == 4 for i, t in enumerate(transforms) if i != cut)
    assert transforms[1][0] > 0  # pan_left: the content moves right


def test_a_cut_changes_the_picture_at_the_recorded_frame(assets) -> None:
    _, frames, record = _clip(assets, "pan_right", seed=2, cuts=1.0)
    cut = record["cut"]
    assert cut is not None
    assert len(set(record["layers"]["backgrounds"])) == 2

    def histogram(frame: np.ndarray) -> np.ndarray:
        h = cv2.calcHist([frame], [0, 1, 2], None, [8, 8, 8], [0, 256] * 3).ravel()
        return h / h.sum()

    jumps = [np.abs(histogram(a) - histogram(b)).sum() for a, b in pairwise(frames)]
    assert int(np.argmax(jumps)) + 1 == cut
    assert max(jumps) > 3 * sorted(jumps)[-2]


def test_parallax_moves_the_near_layer_further(assets) -> None:
    rng = seeded_rng(4, "test", 0)
    plan = plan_clip(
        rng, "pan_left", assets.categories, FRAMES, SIZE, 0.0, objects=0, parallax=True,
        degrade=False,
    )  # fmt: skip
    plan["near"] = {"kind": "band", "side": "bottom", "depth": 0.45, "rate": 2.0, "blur": 0.5}
    frames, _ = render_clip(plan, assets, rng)
    top = [cv2.phaseCorrelate(_grey(a[:30]), _grey(b[:30]))[0][0] for a, b in pairwise(frames)]
    bottom = [cv2.phaseCorrelate(_grey(a[-24:]), _grey(b[-24:]))[0][0] for a, b in pairwise(frames)]
    assert np.mean(top) > 0.5
    assert np.mean(bottom) > 1.6 * np.mean(top)


def test_motion_blur_softens_the_frames(assets) -> None:
    _, sharp, _ = _clip(assets, "pan_right", seed=5)
    rng = seeded_rng(5, "test", CAMERA_MOTIONS.index("pan_right"))
    plan = plan_clip(rng, "pan_right", assets.categories, FRAMES, SIZE, 0.0, objects=0,
                     parallax=False, degrade=False)  # fmt: skip
    plan["degrade"]["blur"] = 1.0
    blurred, _ = render_clip(plan, assets, rng)

    def detail(frames: np.ndarray) -> float:
        return float(np.mean([cv2.Laplacian(_grey(f), cv2.CV_32F).var() for f in frames[1:-1]]))

    assert detail(blurred) < 0.8 * detail(sharp)


# ----------------------------------------------------------------------------- objects


def _object_masks(assets, motion: str) -> tuple[dict, np.ndarray]:
    """A still camera's clip with one moving cut-out, and where each frame differs from the
    same clip rendered without it, (T, H, W) bool."""
    rng = seeded_rng(6, "test", OBJECT_MOTIONS.index(motion))
    plan = plan_clip(rng, "static", assets.categories, FRAMES, SIZE, 0.0, objects=1,
                     object_motion=motion, parallax=False, degrade=False)  # fmt: skip
    alone = copy.deepcopy(rng)
    frames, info = render_clip(plan, assets, rng)
    empty, _ = render_clip({**plan, "objects": []}, assets, alone)
    mask = np.abs(frames.astype(np.int16) - empty.astype(np.int16)).max(axis=3) > 0
    return clip_record(plan, info, "x.mp4"), mask


@pytest.mark.parametrize("motion", ["left", "right", "up", "down", "approach", "recede"])
def test_objects_move_the_way_their_label_says(assets, motion) -> None:
    record, mask = _object_masks(assets, motion)
    assert record["object"] == record["object_in_frame"] == motion
    assert record["moves"] in {"dog", "banana", "apple"}
    (obj,) = record["objects"]
    assert obj["category"] == record["moves"]
    assert len(obj["boxes"]) == len(obj["visible"]) == len(obj["track"]) == FRAMES
    track = np.array(obj["track"])
    ys, xs = np.mgrid[:SIZE, :SIZE]
    ends = [0, FRAMES - 1]
    cx = [float((xs * mask[t]).sum() / mask[t].sum()) for t in ends]
    cy = [float((ys * mask[t]).sum() / mask[t].sum()) for t in ends]
    area = [float(mask[t].sum()) for t in ends]
    expected = {
        "left": cx[1] < cx[0] - 4,
        "right": cx[1] > cx[0] + 4,
        "up": cy[1] < cy[0] - 3,
        "down": cy[1] > cy[0] + 3,
        "approach": area[1] > 1.5 * area[0],
        "recede": area[1] < 0.67 * area[0],
    }
    assert expected[motion], (cx, cy, area)
    assert (
        expected[motion]
        == {
            "left": track[-1, 0] < track[0, 0],
            "right": track[-1, 0] > track[0, 0],
            "up": track[-1, 1] < track[0, 1],
            "down": track[-1, 1] > track[0, 1],
            "approach": track[-1, 2] > track[0, 2],
            "recede": track[-1, 2] < track[0, 2],
        }[motion]
    )


def test_a_followed_subject_stays_while_the_background_moves(assets) -> None:
    _, _, record = _clip(assets, "pan_right", seed=7, objects=1, follow=True)
    assert record["follow"]
    assert record["object"] == "right"  # against the background, the way the camera turns
    assert record["object_in_frame"] == "none"
    track = np.array(record["objects"][0]["track"])
    assert np.ptp(track[:, 0]) < 0.02
    assert sum(t[0] for t in record["transforms"][1:]) < -0.05  # the background slides left


def test_two_cut_outs_can_cross_and_hide_each_other(assets) -> None:
    hidden = 0
    for seed in range(40):
        _, _, record = _clip(assets, "static", seed=seed, objects=2, object_motion="right")
        objects = record["objects"]
        assert sum(o["main"] for o in objects) == 1
        assert next(o for o in objects if o["main"])["motion"] == "right"
        hidden += len(objects) == 2 and max(max(o["occluded"]) for o in objects) > 0.2
    assert hidden >= 3


def test_labels_come_from_one_vocabulary(assets) -> None:
    for i in range(18):
        camera = CAMERA_MOTIONS[i % len(CAMERA_MOTIONS)]
        rng = seeded_rng(8, "vocab", i)
        plan = plan_clip(rng, camera, assets.categories, FRAMES, SIZE, 0.5)
        assert plan["camera"] in CAMERA_MOTIONS
        assert plan["object"] in OBJECT_MOTIONS
        assert all(o["motion"] in OBJECT_MOTIONS for o in plan["objects"])
    with pytest.raises(ValueError, match="unknown camera motion"):
        plan_clip(seeded_rng(0), "dolly", assets.categories)
    with pytest.raises(ValueError, match="pan or a tilt"):
        plan_clip(seeded_rng(0), "zoom_in", assets.categories, follow=True)


# ----------------------------------------------------------------------------- files


def _generate(out: Path, stamps: Path, seed: int = 1, **kw) -> dict:
    args = {"n_train": 3, "n_val": 1, "n_test": 0, "frames": FRAMES, "size": SIZE, "cuts": 0.3}
    args.update(kw)
    return generate_camera(out, seed, stamps=stamps, backgrounds="none", progress=False, **args)


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_or_workers(tmp_path: Path, stamps: Path) -> None:
    _generate(tmp_path / "a", stamps)
    _generate(tmp_path / "b", stamps, workers=2)  # files do not depend on the workers
    _generate(tmp_path / "c", stamps, seed=2)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b
    clips = [k for k in a if k.endswith(".mp4")]
    assert len(clips) == 4
    assert all(a[k] != c[k] for k in clips)


def test_layout_labels_and_readers(tmp_path: Path, stamps: Path, assets) -> None:
    paths = _generate(tmp_path, stamps)
    assert (tmp_path / "classes.txt").read_text().split() == list(CAMERA_MOTIONS)
    data = json.loads(paths["train"].read_text())
    assert data["info"]["camera_motions"] == list(CAMERA_MOTIONS)
    clips = data["clips"]
    assert [c["camera"] for c in clips] == list(CAMERA_MOTIONS[:3])
    for clip in clips:
        path = tmp_path / clip["path"]
        assert path.parent.name == clip["camera"]
        assert probe_video(path).frame_count == FRAMES
        frames, _ = read_frames(path, list(range(FRAMES)))
        assert frames.shape == (FRAMES, SIZE, SIZE, 3)
        assert decode_clip(path, 4).frames.shape == (4, SIZE, SIZE, 3)
        # The record is the plan that (seed, split, index) gives, in any process.
        rng = seeded_rng(1, "train", clip["index"])
        plan = plan_clip(rng, clip["camera"], assets.categories, FRAMES, SIZE, 0.3)
        assert clip["transforms"] == frame_transforms(plan["path"], SIZE, plan["cut"])
        assert clip["object"] == plan["object"]
    dataset = load_video_dataset(tmp_path / "train")
    assert dataset.classes == list(CAMERA_MOTIONS)
    assert len(dataset) == 3
    objects = load_video_dataset(tmp_path / "train" / "objects.csv")
    assert {objects.classes[r.label] for r in objects.records} == {c["object"] for c in clips}


def test_rendered_clip_survives_the_video_file(tmp_path: Path, assets) -> None:
    from captioner.data.motion import write_video

    _, frames, _ = _clip(assets, "pan_left")
    write_video(tmp_path / "c.mp4", frames, 12)
    decoded, _ = read_frames(tmp_path / "c.mp4", list(range(FRAMES)))
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 12


# ----------------------------------------------------------------------------- command


def test_command_writes_the_dataset(tmp_path: Path, stamps: Path, capsys) -> None:
    from captioner.cli import main

    out = tmp_path / "cam"
    argv = ["data", "camera", "--out", str(out), "--stamps", str(stamps), "--backgrounds",
            "none", "--n-train", "2", "--n-val", "1", "--n-test", "1", "--frames", "6",
            "--size", "64", "--workers", "1", "--seed", "3"]  # fmt: skip
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"train", "val", "test", "classes"}
    for split, n in (("train", 2), ("val", 1), ("test", 1)):
        clips = json.loads((out / f"{split}.json").read_text())["clips"]
        assert len(clips) == n
        assert all((out / c["path"]).is_file() for c in clips)
        assert (out / split / "objects.csv").read_text().count("\n") == n + 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--size", "63"], "even number of pixels"),
        (["--frames", "3"], "at least 4"),
        (["--packages", "/nonexistent", "--stamps", "/x"], "not both"),
        (["--stamps", "/nonexistent/stamps"], "no such folder"),
        (["--backgrounds", "/nonexistent/bg"], "no such folder"),
    ],
)
def test_command_refuses_bad_arguments_clearly(
    tmp_path: Path, stamps: Path, caplog: pytest.LogCaptureFixture, extra, message
) -> None:
    from captioner.cli import main

    argv = ["data", "camera", "--out", str(tmp_path / "o"), "--n-train", "1", "--n-val", "0",
            "--n-test", "0", "--workers", "1"]  # fmt: skip
    if "--stamps" not in extra and "--packages" not in extra:
        argv += ["--stamps", str(stamps)]
    if "--backgrounds" not in extra and "--packages" not in extra:
        argv += ["--backgrounds", "none"]
    with caplog.at_level(logging.ERROR):
        assert main(argv + extra) == 2
    assert message in caplog.text
    assert not any((tmp_path / "o").rglob("*.mp4"))


def test_command_refuses_a_share_outside_0_to_1(capsys) -> None:
    from captioner.cli import main

    with pytest.raises(SystemExit) as info:
        main(["data", "camera", "--out", "x", "--cuts", "1.5"])
    assert info.value.code == 2
    assert "must be between 0 and 1" in capsys.readouterr().err
