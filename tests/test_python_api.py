"""The Python API's conventions: per-item errors, NumPy images, models by name, list_models,
callable models, and the one record shape of a caption result."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import captioner
from captioner import BundleError, CaptionResult, ErrorResult, MediaError
from captioner.bundle import read_spec, shipped_bundle_dir
from captioner.inference import bundle_path
from tests.conftest import make_image, save_image

# --------------------------------------------------------------------------- errors=


def test_errors_return_gives_an_error_result_in_place_and_captions_the_rest(
    tiny_captioner, tmp_path
) -> None:
    good = save_image(tmp_path / "good.png", seed=1, fmt="PNG")
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture\n")
    missing = tmp_path / "missing.jpg"
    results = tiny_captioner.caption([good, text, missing, b"\x00\x01"], errors="return")
    assert [type(r) for r in results] == [CaptionResult, ErrorResult, ErrorResult, ErrorResult]
    assert results[0].caption == tiny_captioner.caption(good).caption
    assert results[1].to_record() == {"path": str(text), "error": results[1].error}
    assert "text" in results[1].error
    assert isinstance(results[1].exception, MediaError)
    assert results[2].path == str(missing)
    assert results[3].path is None


def test_errors_raise_is_the_default_and_other_values_are_refused(tiny_captioner, tmp_path):
    good = save_image(tmp_path / "good.png", seed=1, fmt="PNG")
    with pytest.raises(MediaError):
        tiny_captioner.caption([good, tmp_path / "missing.jpg"])
    with pytest.raises(ValueError, match="errors must be 'raise' or 'return'"):
        tiny_captioner.caption(good, errors="ignore")


def test_a_single_bad_image_with_errors_return_gives_one_error_result(tiny_captioner, tmp_path):
    result = tiny_captioner.caption(tmp_path / "missing.jpg", errors="return")
    assert isinstance(result, ErrorResult)
    assert "missing.jpg" in result.path


# --------------------------------------------------------------------------- NumPy images


def test_a_uint8_rgb_array_captions_like_the_same_pil_image(tiny_captioner) -> None:
    image = make_image(3)
    array = np.asarray(image)
    from_array = tiny_captioner.caption(array)
    assert from_array.caption == tiny_captioner.caption(image).caption
    assert from_array.log_prob == pytest.approx(tiny_captioner.caption(image).log_prob, abs=1e-5)


def test_grey_and_rgba_arrays_are_read_as_pillow_reads_them(tiny_captioner) -> None:
    image = make_image(4)
    grey = np.asarray(image.convert("L"))
    assert (
        tiny_captioner.caption(grey).caption == tiny_captioner.caption(image.convert("L")).caption
    )
    rgba = np.dstack([np.asarray(image), np.full(grey.shape, 255, np.uint8)])
    assert tiny_captioner.caption(rgba).caption == tiny_captioner.caption(image).caption


def test_a_4d_array_is_a_list_of_images(tiny_captioner) -> None:
    batch = np.stack([np.asarray(make_image(s)) for s in (5, 6)])
    results = tiny_captioner.caption(batch)
    assert [r.caption for r in results] == [
        tiny_captioner.caption(make_image(s)).caption for s in (5, 6)
    ]


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((32, 32, 3), np.float32), "HxWx3 uint8.*float32.*astype"),
        (np.zeros((3, 32, 32), np.uint8), r"HxWx3 uint8.*\(3, 32, 32\).*transpose"),
        (np.zeros((32, 32, 2), np.uint8), r"shape \(32, 32, 2\)"),
        (np.zeros((0, 32, 3), np.uint8), r"shape \(0, 32, 3\)"),
    ],
)
def test_other_arrays_are_refused_naming_the_expected_shape_and_dtype(
    tiny_captioner, array, message
) -> None:
    with pytest.raises(MediaError, match=message):
        tiny_captioner.caption(array)


# --------------------------------------------------------------------------- by name


def test_load_by_task_name_uses_that_tasks_default_bundle(tiny_bundle, monkeypatch) -> None:
    monkeypatch.setenv("CAPTIONER_CAPTION_BUNDLE", str(tiny_bundle))
    model = captioner.load("caption", device="cpu")
    assert isinstance(model, captioner.Captioner)
    assert model.name == "tiny-test"


def test_shipped_bundle_names_resolve_to_the_shipped_folders(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    for task in ("caption", "activity"):
        assert bundle_path(f"{task}-default") == shipped_bundle_dir(task)
        monkeypatch.delenv(f"CAPTIONER_{task.upper()}_BUNDLE", raising=False)
        assert bundle_path(task) == shipped_bundle_dir(task)


def test_an_existing_folder_wins_over_a_model_name(tiny_bundle, monkeypatch, tmp_path) -> None:
    shutil.copytree(tiny_bundle, tmp_path / "activity")
    monkeypatch.chdir(tmp_path)
    assert captioner.load("activity", device="cpu").name == "tiny-test"


def test_an_unknown_name_lists_the_names_there_are(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BundleError, match="caption, activity, caption-default, activity-default"):
        captioner.load("captioner-large")
    with pytest.raises(BundleError, match="no bundle at"):  # a path is still a path
        captioner.load(tmp_path / "not-here")


def test_list_models_describes_the_shipped_bundles_from_their_manifests() -> None:
    models = {m.name: m for m in captioner.list_models()}
    assert set(models) == {"caption-default", "activity-default"}
    for name, info in models.items():
        spec = read_spec(info.path)
        assert info.task == spec.task == name.removesuffix("-default")
        assert info.aliases == (info.task,)
        assert (info.model_name, info.encoder) == (spec.name, spec.encoder.name)
    assert models["activity-default"].labels == len(
        read_spec(models["activity-default"].path).classes
    )


def test_the_new_public_names_keep_import_captioner_free_of_torch() -> None:
    code = (
        "import sys, captioner; "
        "listed = {'ErrorResult', 'ModelInfo', 'list_models'} <= set(dir(captioner)); "
        "print('torch' in sys.modules, listed)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


# --------------------------------------------------------------------------- callable, records


def test_the_model_is_callable_like_caption(tiny_captioner) -> None:
    image = make_image(7)
    assert tiny_captioner(image, n_best=2) == tiny_captioner.caption(image, n_best=2)


def test_records_round_every_log_prob_and_score_alike(tiny_captioner) -> None:
    res = tiny_captioner.caption(make_image(8), n_best=3, return_attention=True)
    record = res.to_record()
    assert record["log_prob"] == round(res.log_prob, 4)
    assert [a["log_prob"] for a in record["alternatives"]] == [
        round(a["log_prob"], 4) for a in res.alternatives
    ]
    assert "score" not in record
    assert "attention" not in record
    assert "words" not in record
    full = res.to_record(details=True)
    assert full["score"] == round(res.score, 4)
    assert full["words"] == res.words
    assert full["attention"] == res.attention
    assert full["grid"] == list(res.grid)
    assert "finished" not in full
    one = tiny_captioner.caption(make_image(8)).to_record()
    assert "alternatives" not in one  # one caption: no n-best list unless asked
    assert json.loads(json.dumps(full)) == full


def test_a_result_to_record_matches_the_cli_row(tiny_bundle, tiny_captioner, tmp_path) -> None:
    from captioner.cli import main

    path = save_image(tmp_path / "in" / "a.png", seed=9, fmt="PNG")
    out = tmp_path / "rows.jsonl"
    assert main(["caption", str(path), "--bundle", str(tiny_bundle), "--n-best", "2",
                 "--workers", "0", "--device", "cpu", "--out", str(out)]) == 0  # fmt: skip
    row = json.loads(out.read_text())
    expected = tiny_captioner.caption(Image.open(path), n_best=2).to_record(alternatives=True)
    assert row == {"path": str(path), **expected}
