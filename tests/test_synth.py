"""The shared synthetic helpers and the layout of the generator modules after the split."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from captioner.data import motion, scenes
from captioner.data.synth import check_count, object_size, seeded_rng, write_json

DATA = Path(__file__).resolve().parents[1] / "captioner" / "data"
GENERATOR_MODULES = (
    "synth",
    "scene_grammar",
    "scene_render",
    "scenes",
    "motion_tracks",
    "motion_render",
    "motion",
)


def test_seeded_rng_draws_are_pinned() -> None:
    # Every shipped dataset was drawn from these streams: a change here changes every file.
    assert seeded_rng(3, "train", 0).integers(1_000_000, size=3).tolist() == [
        934663,
        820282,
        841021,
    ]
    assert seeded_rng(3, "test", "static", 2).integers(1_000_000, size=3).tolist() == [
        327941,
        655487,
        969504,
    ]
    assert motion.clip_rng(3, "test", "static", 2).integers(1_000_000) == 327941


@pytest.mark.parametrize("value", [-1, 1.5, True, "3", None])
def test_check_count_refuses_what_is_not_a_count(value: object) -> None:
    with pytest.raises(ValueError, match="n must be a non-negative integer"):
        check_count("n", value)


def test_check_count_accepts_numpy_integers() -> None:
    assert check_count("n", np.int64(4)) == 4


def test_write_json_leaves_only_the_final_file(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    write_json(path, {"a": [1, 2]})
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_object_size_keeps_photo_aspect_and_squares_shapes() -> None:
    assert object_size({"family": "shape", "kind": "star"}, 40) == (40, 40)
    w, h = object_size({"family": "photo", "kind": "cameraman"}, 40)  # taller than wide
    assert h == 40
    assert 20 < w < 40


def test_old_import_paths_still_work() -> None:
    for name in scenes.__all__:
        assert getattr(scenes, name) is not None
    for name in motion.__all__:
        assert getattr(motion, name) is not None
    assert motion._clip_rng is motion.clip_rng


def test_generator_modules_import_no_private_names() -> None:
    for module in GENERATOR_MODULES:
        tree = ast.parse((DATA / f"{module}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("captioner"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{module}.py imports private {private} from {node.module}"
