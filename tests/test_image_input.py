"""load_photo on the sample portraits and on broken, huge and odd files made in tmp_path."""

from __future__ import annotations

import hashlib
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from backend.errors import InputError
from backend.image_input import Photo, load_photo

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
PORTRAIT = MEDIA / "images" / "d8.jpg"

needs_media = pytest.mark.skipif(not PORTRAIT.is_file(), reason=f"sample media not found at {MEDIA}")


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares width x height but whose pixel data is a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))
    return path


def _refused(path: Path, code: str, **kwargs) -> InputError:
    with pytest.raises(InputError) as caught:
        load_photo(path, **kwargs)
    error = caught.value
    assert error.code == code, str(error)
    assert error.path == str(path) and str(path) in str(error), "the message must name the file"
    assert error.hint, "the message must say what to do"
    return error


@needs_media
def test_portrait_loads_as_rgb_uint8_with_hash_of_file_bytes():
    photo = load_photo(PORTRAIT)
    assert isinstance(photo, Photo)
    assert photo.rgb.shape == (720, 720, 3) and photo.rgb.dtype == np.uint8
    assert photo.rgb.flags["C_CONTIGUOUS"]
    assert (photo.width, photo.height) == (720, 720)
    assert photo.sha256 == hashlib.sha256(PORTRAIT.read_bytes()).hexdigest()
    assert photo.path == str(PORTRAIT)


@needs_media
def test_exif_orientation_is_applied(tmp_path):
    wide = Image.open(PORTRAIT).convert("RGB").crop((0, 0, 720, 400))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    rotated_file = tmp_path / "phone.jpg"
    wide.save(rotated_file, quality=95, exif=exif)
    stored = np.asarray(Image.open(rotated_file).convert("RGB"))
    photo = load_photo(rotated_file)
    assert (photo.width, photo.height) == (400, 720)
    np.testing.assert_array_equal(photo.rgb, np.rot90(stored, k=-1))


@needs_media
def test_grey_rgba_cmyk_and_16_bit_become_rgb_uint8(tmp_path):
    original = Image.open(PORTRAIT).convert("RGB")
    grey = np.asarray(original.convert("L"))

    original.convert("L").save(tmp_path / "grey.png")
    photo = load_photo(tmp_path / "grey.png")
    np.testing.assert_array_equal(photo.rgb, np.repeat(grey[:, :, None], 3, axis=2))

    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")  # 16-bit greyscale
    photo = load_photo(tmp_path / "grey16.png")
    assert photo.rgb.dtype == np.uint8
    assert np.abs(photo.rgb[:, :, 0].astype(int) - grey).max() <= 1

    rgba = original.convert("RGBA")
    alpha = np.full((720, 720), 255, np.uint8)
    alpha[:100, :100] = 0
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(tmp_path / "cutout.png")
    photo = load_photo(tmp_path / "cutout.png")
    assert photo.rgb.shape == (720, 720, 3)
    assert (photo.rgb[:100, :100] == 255).all(), "transparent pixels are shown on white"
    np.testing.assert_array_equal(photo.rgb[200:], np.asarray(original)[200:])

    original.convert("CMYK").save(tmp_path / "print.jpg")
    photo = load_photo(tmp_path / "print.jpg")
    assert photo.rgb.shape == (720, 720, 3) and photo.rgb.dtype == np.uint8
    assert np.abs(photo.rgb.astype(int) - np.asarray(original)).mean() < 10


def test_missing_file(tmp_path):
    _refused(tmp_path / "nowhere.jpg", "missing")


def test_directory(tmp_path):
    _refused(tmp_path, "not_a_file")


def test_zero_bytes(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    _refused(empty, "empty")


def test_text_file_named_jpg(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo\n" * 20)
    error = _refused(text, "not_image")
    assert "JPEG or PNG" in error.hint


@needs_media
def test_truncated_jpeg_is_refused_even_if_pil_was_told_to_accept_truncation(tmp_path, monkeypatch):
    data = PORTRAIT.read_bytes()
    truncated = tmp_path / "half_downloaded.jpg"
    truncated.write_bytes(data[: int(len(data) * 0.4)])
    _refused(truncated, "corrupt")
    # Some other library may have switched PIL's global on; our load must stay strict and restore it.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    _refused(truncated, "corrupt")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


def test_header_size_over_max_pixels_is_refused_before_decoding(tmp_path):
    declared = _png_header_only(tmp_path / "big.png", 3000, 3000)
    error = _refused(declared, "too_large", max_pixels=1_000_000)
    assert "3000x3000" in str(error)


def test_decompression_bombs_are_refused_without_changing_warning_filters(tmp_path):
    filters_before = list(warnings.filters)
    # 144 MP: over PIL's warning limit (about 89 MP), under its hard error limit.
    _refused(_png_header_only(tmp_path / "bomb_warning.png", 12000, 12000), "too_large", max_pixels=1_000_000)
    _refused(_png_header_only(tmp_path / "bomb_warning2.png", 12000, 12000), "too_large", max_pixels=500_000_000)
    # 400 MP: over PIL's hard limit, raised inside Image.open.
    _refused(_png_header_only(tmp_path / "bomb_error.png", 20000, 20000), "too_large")
    assert list(warnings.filters) == filters_before


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their mode")
@needs_media
def test_unreadable_file(tmp_path):
    locked = tmp_path / "locked.jpg"
    locked.write_bytes(PORTRAIT.read_bytes())
    locked.chmod(0)
    try:
        _refused(locked, "unreadable")
    finally:
        locked.chmod(0o644)
