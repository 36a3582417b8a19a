"""The Python inference API: ``captioner.load`` and ``Captioner.caption``."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

import captioner
from captioner import BundleError, CaptionResult, MediaError
from captioner.bundle import MANIFEST
from tests.conftest import make_image, save_image


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    return [make_image(seed) for seed in range(5)]


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_manifest(folder: Path, change) -> None:
    path = folder / MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


# --------------------------------------------------------------------------- inputs


def test_path_bytes_and_pil_give_the_same_caption(tiny_captioner, tmp_path, images) -> None:
    # PNG is lossless, so the file, its bytes and the in-memory image hold identical pixels.
    path = save_image(tmp_path / "pic.png", seed=0, fmt="PNG")
    from_path = tiny_captioner.caption(path)
    from_str = tiny_captioner.caption(str(path))
    from_bytes = tiny_captioner.caption(path.read_bytes())
    from_pil = tiny_captioner.caption(images[0])
    assert from_path.caption != ""
    assert from_str.caption == from_path.caption
    assert from_bytes.caption == from_path.caption
    assert from_pil.caption == from_path.caption
    assert from_bytes.log_prob == pytest.approx(from_path.log_prob, abs=1e-5)


def test_single_input_gives_one_result_and_a_list_gives_a_list_in_order(
    tiny_captioner, images
) -> None:
    one = tiny_captioner.caption(images[0])
    assert isinstance(one, CaptionResult)
    many = tiny_captioner.caption(images[:4])
    assert isinstance(many, list)
    assert len(many) == 4
    singles = [tiny_captioner.caption(img).caption for img in images[:4]]
    assert [r.caption for r in many] == singles
    backwards = tiny_captioner.caption(images[:4][::-1])
    assert [r.caption for r in backwards] == singles[::-1]
    assert tiny_captioner.caption([]) == []


def test_different_images_get_different_captions(tiny_captioner, images) -> None:
    # Guards the fixture itself: a decoder ignoring the image would make the order tests vacuous.
    captions = {r.caption for r in tiny_captioner.caption(images)}
    assert len(captions) >= 3


def test_results_do_not_depend_on_batch_size(tiny_captioner, images) -> None:
    one = tiny_captioner.caption(images, batch_size=1)
    four = tiny_captioner.caption(images, batch_size=4)
    assert [r.caption for r in one] == [r.caption for r in four]
    for a, b in zip(one, four, strict=True):
        assert a.log_prob == pytest.approx(b.log_prob, abs=1e-4)
        assert a.score == pytest.approx(b.score, abs=1e-4)


# --------------------------------------------------------------------------- outputs


def test_n_best_alternatives_are_sorted_and_start_with_the_caption(tiny_captioner, images) -> None:
    for res in tiny_captioner.caption(images[:3], n_best=3):
        assert len(res.alternatives) == 3
        scores = [alt["score"] for alt in res.alternatives]
        assert scores == sorted(scores, reverse=True)
        assert res.alternatives[0]["caption"] == res.caption
        assert res.alternatives[0]["log_prob"] == pytest.approx(res.log_prob)
        assert len({alt["caption"] for alt in res.alternatives}) == 3


def test_n_best_above_beam_size_is_refused(tiny_captioner, images) -> None:
    with pytest.raises(ValueError, match="n_best"):
        tiny_captioner.caption(images[0], beam_size=2, n_best=3)


def test_attention_has_one_row_of_49_per_word(tiny_captioner, images) -> None:
    res = tiny_captioner.caption(images[1], return_attention=True)
    assert res.grid == (7, 7)
    assert res.attention is not None
    assert len(res.attention) == len(res.words) > 0
    for row in res.attention:
        assert len(row) == 49
        assert all(v >= 0 for v in row)
        assert sum(row) == pytest.approx(1.0, abs=1e-3)
    plain = tiny_captioner.caption(images[1])
    assert plain.attention is None
    assert plain.grid is None
    assert plain.caption == res.caption


def test_to_dict_is_json_serialisable(tiny_captioner, images) -> None:
    res = tiny_captioner.caption(images[2], n_best=2, return_attention=True)
    data = json.loads(json.dumps(res.to_dict()))
    assert data["caption"] == res.caption
    assert data["words"] == res.words
    assert len(data["alternatives"]) == 2
    assert data["grid"] == [7, 7]
    assert len(data["attention"]) == len(res.words)


def test_unreadable_input_raises_media_error_naming_the_problem(tiny_captioner) -> None:
    with pytest.raises(MediaError, match=r"not an image.*text"):
        tiny_captioner.caption(b"hello, this is not a picture\n")
    with pytest.raises(MediaError, match="no such file"):
        tiny_captioner.caption(Path("/nonexistent/dir/cat.jpg"))


# --------------------------------------------------------------------------- load


def test_load_refuses_altered_weights(tiny_bundle, tmp_path) -> None:
    folder = copy_bundle(tiny_bundle, tmp_path / "bundle")
    weights = folder / "decoder.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # flip bits in the last tensor's data; the file still parses
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        captioner.load(folder, device="cpu")


def test_load_refuses_vocab_size_mismatch(tiny_bundle, tmp_path) -> None:
    folder = copy_bundle(tiny_bundle, tmp_path / "bundle")
    edit_manifest(folder, lambda m: m["vocabulary"]["tokens"].append("extra"))
    with pytest.raises(BundleError, match="vocab_size 20") as exc:
        captioner.load(folder, device="cpu")
    assert "21" in str(exc.value)


def test_load_refuses_unknown_format_version(tiny_bundle, tmp_path) -> None:
    folder = copy_bundle(tiny_bundle, tmp_path / "bundle")
    edit_manifest(folder, lambda m: m.update(format_version=99))
    with pytest.raises(BundleError, match="version 99"):
        captioner.load(folder, device="cpu")


def test_load_refuses_a_missing_bundle_with_a_hint(tmp_path) -> None:
    with pytest.raises(BundleError, match=r"manifest.json"):
        captioner.load(tmp_path / "nothing-here", device="cpu")
