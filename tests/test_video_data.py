"""Labelled video lists (folder per class, CSV, UCF101) and clip decoding for the feature cache."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from captioner.data.videos import ClipFiles, load_video_dataset
from captioner.video import VideoLimits, decode_clip


def write_video(path: Path, frames: int = 10, size: int = 32, seed: int = 0) -> Path:
    """A tiny real MPEG-4 clip: a bright square sliding right over a dark noisy background."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (size, size))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    rng = np.random.default_rng(seed)
    for t in range(frames):
        frame = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
        x = t * (size - 8) // max(1, frames - 1)
        frame[12:20, x : x + 8] = 230
        writer.write(frame)
    writer.release()
    return path


def touch(path: Path) -> Path:
    """An empty placeholder: enough where only the listing is read, not the video."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def names(dataset) -> list[tuple[str, str]]:
    """(file name, class name) per record, to compare listings."""
    return [(r.path.name, dataset.classes[r.label]) for r in dataset.records]


# --------------------------------------------------------------------------- folder per class


def test_folder_per_class_sorts_classes_and_files(tmp_path) -> None:
    for rel in ["walk/b.mp4", "walk/a.avi", "run/x.mkv", "run/deeper/y.webm", "jump/z.mov"]:
        touch(tmp_path / rel)
    touch(tmp_path / "run" / "notes.txt")  # not a video suffix: ignored
    (tmp_path / ".hidden").mkdir()
    data = load_video_dataset(tmp_path)
    assert data.classes == ["jump", "run", "walk"]
    assert len(data) == 5
    assert names(data) == [
        ("z.mov", "jump"),
        ("y.webm", "run"),
        ("x.mkv", "run"),
        ("a.avi", "walk"),
        ("b.mp4", "walk"),
    ]
    assert all(r.path.is_file() for r in data.records)


def test_classes_txt_fixes_the_label_order(tmp_path) -> None:
    for rel in ["walk/a.mp4", "run/b.mp4", "jump/c.mp4"]:
        touch(tmp_path / rel)
    (tmp_path / "classes.txt").write_text("walk\nrun\n\njump\n")
    data = load_video_dataset(tmp_path)
    assert data.classes == ["walk", "run", "jump"]
    assert {(r.path.name, r.label) for r in data.records} == {
        ("a.mp4", 0),
        ("b.mp4", 1),
        ("c.mp4", 2),
    }


def test_a_class_folder_missing_from_classes_txt_is_not_silently_dropped(tmp_path) -> None:
    for rel in ["walk/a.mp4", "run/b.mp4", "swim/c.mp4"]:
        touch(tmp_path / rel)
    (tmp_path / "classes.txt").write_text("walk\nrun\n")
    with pytest.raises(ValueError, match="swim"):
        load_video_dataset(tmp_path)


def test_classes_argument_fixes_order_and_refuses_unknown_names(tmp_path) -> None:
    for rel in ["walk/a.mp4", "run/b.mp4"]:
        touch(tmp_path / rel)
    data = load_video_dataset(tmp_path, classes=["sit", "walk", "run"])
    assert data.classes == ["sit", "walk", "run"]
    assert {(r.path.name, r.label) for r in data.records} == {("a.mp4", 1), ("b.mp4", 2)}
    with pytest.raises(ValueError, match="run") as info:
        load_video_dataset(tmp_path, classes=["walk", "sit"])
    assert "walk" in str(info.value)  # the known classes are listed too


def test_an_empty_folder_is_refused_with_the_folder_named(tmp_path) -> None:
    with pytest.raises(ValueError, match="class folders") as info:
        load_video_dataset(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_class_folders_without_videos_say_what_is_expected(tmp_path) -> None:
    (tmp_path / "walk").mkdir()
    touch(tmp_path / "run" / "readme.txt")
    with pytest.raises(ValueError, match="folder per class") as info:
        load_video_dataset(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "folder per class" in message
    assert ".mp4" in message
    assert "CSV" in message


def test_an_empty_folder_message_says_what_layout_is_expected(tmp_path) -> None:
    with pytest.raises(ValueError, match="CSV"):
        load_video_dataset(tmp_path)


def test_a_missing_source_is_a_file_not_found_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        load_video_dataset(tmp_path / "nope")


# ------------------------------------------------------------------------------------- CSV


def test_csv_paths_are_relative_to_the_csv_folder(tmp_path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    touch(lists / "clips" / "one.mp4")
    touch(tmp_path / "two.mp4")
    (lists / "videos.csv").write_text("path,label\nclips/one.mp4,wave\n../two.mp4,clap\n")
    data = load_video_dataset(lists / "videos.csv")
    assert data.classes == ["clap", "wave"]
    assert [r.path.resolve() for r in data.records] == [
        (lists / "clips" / "one.mp4").resolve(),
        (tmp_path / "two.mp4").resolve(),
    ]
    assert [data.classes[r.label] for r in data.records] == ["wave", "clap"]


def test_csv_with_bom_and_classes_argument(tmp_path) -> None:
    (tmp_path / "v.csv").write_text("\ufeffpath,label\na.mp4,wave\n", encoding="utf-8")
    data = load_video_dataset(tmp_path / "v.csv", classes=["clap", "wave"])
    assert data.classes == ["clap", "wave"]
    assert data.records[0].label == 1
    with pytest.raises(ValueError, match="wave"):
        load_video_dataset(tmp_path / "v.csv", classes=["clap", "jump"])


@pytest.mark.parametrize(
    ("text", "message"),
    [("file,class\na.mp4,x\n", "'path' and 'label'"), ("path,label\n", "lists no videos")],
)
def test_bad_csvs_are_refused(tmp_path, text, message) -> None:
    (tmp_path / "v.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_video_dataset(tmp_path / "v.csv")


# ---------------------------------------------------------------------------------- UCF101


def ucf101(tmp_path: Path) -> tuple[Path, Path]:
    """A miniature UCF101: videos under UCF-101/<Class>/, lists in ucfTrainTestlist/ (CRLF)."""
    videos, lists = tmp_path / "UCF-101", tmp_path / "ucfTrainTestlist"
    for cls in ("YoYo", "ApplyLipstick", "Basketball"):
        for g in (1, 2):
            touch(videos / cls / f"v_{cls}_g0{g}_c01.avi")
    lists.mkdir()
    # classInd order is not alphabetical: labels must follow the indices, not the names.
    (lists / "classInd.txt").write_text("2 ApplyLipstick\r\n1 YoYo\r\n3 Basketball\r\n")
    (lists / "trainlist01.txt").write_text(
        "YoYo/v_YoYo_g01_c01.avi 1\r\n"
        "ApplyLipstick/v_ApplyLipstick_g01_c01.avi 2\r\n"
        "Basketball/v_Basketball_g01_c01.avi 3\r\n"
    )
    (lists / "testlist01.txt").write_text(
        "YoYo/v_YoYo_g02_c01.avi\r\nBasketball/v_Basketball_g02_c01.avi\r\n\r\n"
    )
    return videos, lists


def test_ucf101_train_list_uses_class_index_order(tmp_path) -> None:
    videos, lists = ucf101(tmp_path)
    data = load_video_dataset(videos, lists / "trainlist01.txt")
    assert data.classes == ["YoYo", "ApplyLipstick", "Basketball"]
    assert [(r.path, r.label) for r in data.records] == [
        (videos / "YoYo" / "v_YoYo_g01_c01.avi", 0),
        (videos / "ApplyLipstick" / "v_ApplyLipstick_g01_c01.avi", 1),
        (videos / "Basketball" / "v_Basketball_g01_c01.avi", 2),
    ]


def test_ucf101_test_list_without_labels(tmp_path) -> None:
    videos, lists = ucf101(tmp_path)
    train = load_video_dataset(videos, lists / "trainlist01.txt")
    test = load_video_dataset(videos, lists / "testlist01.txt", classes=train.classes)
    assert names(test) == [
        ("v_YoYo_g02_c01.avi", "YoYo"),
        ("v_Basketball_g02_c01.avi", "Basketball"),
    ]


def test_ucf101_list_naming_an_unknown_class_is_refused(tmp_path) -> None:
    videos, lists = ucf101(tmp_path)
    (lists / "bad.txt").write_text("YoYo/v_YoYo_g01_c01.avi\nSurfing/v_Surfing_g01_c01.avi\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2.*Surfing"):
        load_video_dataset(videos, lists / "bad.txt")


def test_a_malformed_class_index_is_refused_with_its_line(tmp_path) -> None:
    videos, lists = ucf101(tmp_path)
    (lists / "classInd.txt").write_text("1 YoYo\nApplyLipstick\n")
    with pytest.raises(ValueError, match=r"classInd\.txt:2"):
        load_video_dataset(videos, lists / "trainlist01.txt")


# ------------------------------------------------------------------------------- ClipFiles


def test_clip_files_give_uint8_clips_and_the_centre_clip_first(tmp_path) -> None:
    path = write_video(tmp_path / "slide.mp4", frames=10)
    item = ClipFiles([path], num_frames=4, size=24, samples=3, seed=7)[0]
    assert item["error"] == ""
    assert item["index"] == 0
    clips = item["image"]
    assert clips.dtype == torch.uint8
    assert clips.shape == (3, 4, 3, 24, 24)
    centre = decode_clip(path, 4, 24, "uniform").frames  # (T, S, S, 3)
    assert torch.equal(clips[0], torch.from_numpy(centre).permute(0, 3, 1, 2))
    assert clips.float().std() > 5  # real pixels, not the zero placeholder
    again = ClipFiles([path], num_frames=4, size=24, samples=3, seed=7)[0]["image"]
    assert torch.equal(again, clips)  # random clips are seeded per video: the cache is stable


def test_a_corrupt_video_gives_an_error_string_not_an_exception(tmp_path) -> None:
    good = write_video(tmp_path / "good.mp4", frames=6)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 5)
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"RIFF\x10\x00\x00\x00AVI LIST" + bytes(range(256)) * 4)
    files = ClipFiles([good, text, junk, tmp_path / "gone.mp4"], num_frames=3, size=16, samples=2)
    items = [files[i] for i in range(len(files))]
    assert items[0]["error"] == ""
    assert "text file" in items[1]["error"]
    assert "could not decode" in items[2]["error"]
    assert "corrupt" in items[2]["error"]
    assert "no such file" in items[3]["error"]
    for item in items[1:]:
        assert item["image"].shape == (2, 3, 3, 16, 16)
        assert item["image"].dtype == torch.uint8
        assert not item["image"].any()


def test_clip_files_apply_the_limits_they_are_given(tmp_path) -> None:
    short = write_video(tmp_path / "short.mp4", frames=6)
    long = write_video(tmp_path / "long.mp4", frames=30)
    # A classifier's limits, as `captioner activity` passes them: at most 20 frames, 2 s.
    limits = VideoLimits(max_frames=20, max_seconds=2.0)
    files = ClipFiles([short, long], num_frames=4, size=16, limits=limits)
    assert files[0]["error"] == ""
    error = files[1]["error"]
    assert "above the 2-second limit" in error or "above the 20-frame limit" in error
    assert files[1]["image"].shape == (1, 4, 3, 16, 16)
    assert not files[1]["image"].any()
    # Without limits of its own, a ClipFiles keeps the defaults.
    assert ClipFiles([long], num_frames=4, size=16)[0]["error"] == ""
