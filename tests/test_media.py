"""Tests for captioner.media: decoding, conversion to RGB and every refusal."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from captioner.media import (
    IMAGE_SUFFIXES,
    ImageLimits,
    MediaError,
    decode_image,
    sniff_image_format,
)

RED = (200, 20, 20)


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def close(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 8) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny real PNG whose IHDR says it is width x height (CRC fixed up)."""
    data = bytearray(encode(Image.new("RGB", (2, 2), RED), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def noisy_jpeg(width: int, height: int, **kwargs: object) -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "JPEG", **kwargs)


# --- formats that must work -------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"])
def test_allowed_formats_round_trip_to_rgb(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / f"picture.{fmt.lower()}"
    path.write_bytes(encode(Image.new("RGB", (40, 30), RED), fmt))
    img = decode_image(path)
    assert img.mode == "RGB"
    assert img.size == (40, 30)
    assert close(img.getpixel((20, 15)), RED, tol=12)


def test_mpo_gives_first_picture() -> None:
    first, second = Image.new("RGB", (40, 30), RED), Image.new("RGB", (40, 30), (0, 0, 255))
    data = encode(first, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    img = decode_image(data)
    assert img.size == (40, 30)
    assert close(img.getpixel((5, 5)), RED)


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (20, 20), c) for c in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(data).getpixel((1, 1)) == (255, 0, 0)


def test_format_is_decided_by_content_not_name(tmp_path: Path) -> None:
    path = tmp_path / "actually_a_jpeg.png"
    path.write_bytes(encode(Image.new("RGB", (16, 16), RED), "JPEG"))
    assert decode_image(path).size == (16, 16)
    with pytest.raises(MediaError, match="JPEG is not allowed"):
        decode_image(path, ImageLimits(formats=frozenset({"PNG"})))


def test_stream_and_bytearray_sources() -> None:
    data = encode(Image.new("RGB", (8, 6), RED), "PNG")
    assert decode_image(io.BytesIO(data)).size == (8, 6)
    assert decode_image(bytearray(data)).size == (8, 6)


# --- colour modes -----------------------------------------------------------------------


def test_rgba_transparency_is_composited_on_white() -> None:
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    img.putpixel((0, 0), (10, 20, 30, 255))
    out = decode_image(encode(img, "PNG"))
    assert out.mode == "RGB"
    assert out.getpixel((3, 3)) == (255, 255, 255)  # black but transparent -> white, not black
    assert out.getpixel((0, 0)) == (10, 20, 30)


def test_palette_with_transparency_and_la_become_rgb() -> None:
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.putpixel((1, 1), 1)
    out = decode_image(encode(pal, "PNG", transparency=0))
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 1)) == (255, 0, 0)

    la = Image.new("LA", (3, 3), (0, 0))
    assert decode_image(encode(la, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_grey_and_cmyk_become_rgb() -> None:
    grey = decode_image(encode(Image.new("L", (5, 5), 90), "PNG"))
    assert grey.mode == "RGB"
    assert grey.getpixel((2, 2)) == (90, 90, 90)

    cyan = Image.new("CMYK", (16, 16), (255, 0, 0, 0))
    for fmt in ("JPEG", "TIFF"):
        out = decode_image(encode(cyan, fmt))
        assert out.mode == "RGB"
        assert close(out.getpixel((8, 8)), (0, 255, 255), tol=10), fmt


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    values = np.array([[0, 32896], [65535, 257 * 10]], dtype=np.uint16)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    out = decode_image(encode(img, "PNG"))
    assert out.mode == "RGB"
    # Pillow's plain convert() would give 255 for every non-zero value here.
    assert [out.getpixel(p)[0] for p in [(0, 0), (1, 0), (0, 1), (1, 1)]] == [0, 128, 255, 10]


def test_exif_orientation_6_rotates() -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste(RED, (0, 0, 10, 20))  # left edge red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = decode_image(encode(img, "JPEG", exif=exif, quality=95))
    assert out.size == (20, 40)
    assert close(out.getpixel((10, 2)), RED, tol=30)  # left edge is now the top edge
    assert close(out.getpixel((10, 37)), (0, 0, 255), tol=30)


# --- draft and PIL inputs ---------------------------------------------------------------


def test_draft_decodes_big_jpeg_smaller_but_not_below_target() -> None:
    data = noisy_jpeg(2000, 1500)
    full = decode_image(data)
    small = decode_image(data, draft=(500, 300))
    assert full.size == (2000, 1500)
    assert small.size[0] < 2000
    assert small.size[0] >= 500
    assert small.size[1] >= 300


def test_draft_accounts_for_exif_rotation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decode_image(noisy_jpeg(2000, 1000, exif=exif), draft=(400, 700))
    assert out.size[0] < out.size[1]  # rotated to portrait
    assert out.size[0] >= 400
    assert out.size[1] >= 700


def test_pil_image_is_validated_and_converted_without_touching_the_original() -> None:
    original = Image.new("RGBA", (10, 12), (0, 0, 0, 0))
    out = decode_image(original)
    assert out is not original
    assert out.mode == "RGB"
    assert out.size == (10, 12)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert original.mode == "RGBA"
    with pytest.raises(MediaError, match="pixel limit"):
        decode_image(original, ImageLimits(max_pixels=100))


# --- refusals ---------------------------------------------------------------------------


def test_empty_input() -> None:
    with pytest.raises(MediaError, match="empty"):
        decode_image(b"")


def test_text_named_jpg_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_text("these are my holiday notes, not a photo\n")
    with pytest.raises(MediaError, match="not an image") as info:
        decode_image(path)
    assert "got text" in str(info.value)
    assert "JPEG" in str(info.value)
    assert "PNG" in str(info.value)


def test_truncated_jpeg_fails_at_decode_time() -> None:
    data = noisy_jpeg(300, 200)
    with pytest.raises(MediaError, match="truncated JPEG"):
        decode_image(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_png_header_claiming_huge_size_is_refused_before_decoding() -> None:
    with pytest.raises(MediaError, match="pixel limit") as info:
        decode_image(png_claiming(30000, 30000))
    assert "resize" in str(info.value)


def test_pillow_bomb_warning_becomes_an_error_and_is_not_emitted() -> None:
    # Between Pillow's warning threshold and its 2x error threshold.
    data = png_claiming(10000, 9000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(MediaError, match="decompression bomb"):
            decode_image(data)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # global Pillow state left alone


def test_side_limit() -> None:
    with pytest.raises(MediaError, match="side above the 100-pixel limit"):
        decode_image(encode(Image.new("RGB", (101, 2)), "PNG"), ImageLimits(max_side=100))


def test_file_above_max_bytes(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(noisy_jpeg(64, 64))
    limits = ImageLimits(max_bytes=1000)
    with pytest.raises(MediaError, match="1000-byte limit"):
        decode_image(path, limits)
    with pytest.raises(MediaError, match="1000-byte limit"):
        decode_image(io.BytesIO(path.read_bytes()), limits)


@pytest.mark.parametrize("fmt", ["ICO", "PPM"])
def test_format_not_in_the_list(fmt: str) -> None:
    with pytest.raises(MediaError, match=f"{fmt} is not allowed") as info:
        decode_image(encode(Image.new("RGB", (16, 16), RED), fmt))
    assert "convert" in str(info.value)


def test_missing_path_and_urls(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="no such file"):
        decode_image(tmp_path / "nowhere.jpg")
    with pytest.raises(MediaError, match="never fetched"):
        decode_image("https://example.com/cat.jpg")
    with pytest.raises(MediaError, match="directory"):
        decode_image(tmp_path)


def test_text_mode_stream_and_wrong_type() -> None:
    with pytest.raises(MediaError, match="'rb'"):
        decode_image(io.StringIO("hello"))
    with pytest.raises(TypeError, match="bytes, a file path"):
        decode_image(12345)  # type: ignore[arg-type]


# --- helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "ICO", "PPM"])
def test_sniff_image_format(fmt: str) -> None:
    assert sniff_image_format(encode(Image.new("RGB", (8, 8)), fmt)[:32]) == fmt


def test_sniff_unknown_is_none() -> None:
    assert sniff_image_format(b"hello") is None
    assert sniff_image_format(b"") is None


def test_image_limits_validation() -> None:
    assert ImageLimits(formats=frozenset({"png", "jpeg"})).formats == {"PNG", "JPEG"}
    with pytest.raises(ValueError, match="positive"):
        ImageLimits(max_bytes=0)
    with pytest.raises(ValueError, match="cannot open"):
        ImageLimits(formats=frozenset({"PNG", "NOTAFORMAT"}))
    with pytest.raises(ValueError, match="empty"):
        ImageLimits(formats=frozenset())


def test_image_suffixes() -> None:
    assert {".jpg", ".jpeg", ".png", ".webp", ".tif"} <= IMAGE_SUFFIXES
    assert all(s.startswith(".") and s == s.lower() for s in IMAGE_SUFFIXES)
