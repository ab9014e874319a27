"""Loading a user's photo safely: one place that turns any file into an RGB uint8 array or a clear error.

Every failure is an `InputError` that names the file, says what is wrong and what to do, with a
stable `code`: `missing`, `not_a_file`, `unreadable`, `empty`, `not_image`, `corrupt`, `too_large`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import stat
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from backend.errors import InputError

# Formats a phone, camera or image editor writes (JPEG covers MPO, the multi-picture JPEG of some
# cameras). Anything else PIL could open (EPS runs Ghostscript, PSD and ICO carry their own parsers)
# is refused: a user's upload is untrusted input.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", "TIFF", "BMP", "GIF")

_REEXPORT_HINT = "re-export the photo as JPEG or PNG (e.g. open it in an image viewer and 'Save as')"


@dataclass
class Photo:
    """A decoded photo, upright (EXIF orientation applied).

    Attributes:
        path: the file as the user gave it.
        rgb: [H, W, 3] uint8, C-contiguous.
        sha256: hex digest of the file's bytes (identifies the input in caches and reports).
    """

    path: str
    rgb: np.ndarray
    sha256: str
    focal_px: float | None = None  # from the camera's EXIF, when it says; None otherwise

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def load_photo(path: str | os.PathLike, max_pixels: int = 50_000_000) -> Photo:
    """Read, check and decode a photo into upright RGB uint8.

    Args:
        path: an image file (JPEG, PNG, WebP, TIFF, BMP, GIF; the first frame of animations).
        max_pixels: refuse images with more pixels than this, judged from the header before decoding.
            PIL's own decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`, about 89 MP) also applies.

    Returns:
        Photo with rgb: [H, W, 3] uint8.

    Raises:
        InputError: codes missing, not_a_file, unreadable, empty, not_image, corrupt, too_large.
    """
    shown = str(path)
    file_bytes = _read_bytes(Path(path), shown)
    digest = hashlib.sha256(file_bytes).hexdigest()
    image = _decode(file_bytes, shown, max_pixels)
    rgb = _to_rgb_uint8(image, shown)
    return Photo(path=shown, rgb=np.ascontiguousarray(rgb), sha256=digest,
                 focal_px=exif_focal_px(image, rgb.shape[1], rgb.shape[0]))


# A 35 mm film frame's diagonal: "35 mm equivalent" focal lengths are scaled to it.
FULL_FRAME_DIAGONAL_MM = 43.2666


def focal_from_35mm(focal_35mm: float, width: int, height: int) -> float:
    """Focal length in pixels of an image whose lens is ``focal_35mm`` (35 mm equivalent)."""
    return float(focal_35mm) * float(np.hypot(width, height)) / FULL_FRAME_DIAGONAL_MM


def exif_focal_px(image: Image.Image, width: int, height: int) -> float | None:
    """The focal length in pixels from EXIF's FocalLengthIn35mmFilm (tag 0xA405), or from FocalLength
    (0x920A) with the sensor width from FocalPlaneXResolution (0xA20E, unit 0xA210); None when the
    camera did not say or says something implausible (under 10 mm or over 1200 mm equivalent)."""
    try:
        exif = image.getexif().get_ifd(0x8769)
    except Exception:  # a malformed EXIF block must not fail the photo: it only loses the hint
        return None
    f35 = exif.get(0xA405)
    if f35 and 10 <= float(f35) <= 1200:
        return focal_from_35mm(float(f35), width, height)
    focal, xres, unit = exif.get(0x920A), exif.get(0xA20E), exif.get(0xA210, 2)
    mm_per_unit = {2: 25.4, 3: 10.0, 4: 1.0}.get(int(unit or 2))
    if focal and xres and mm_per_unit and float(xres) > 0:
        # The resolution is pixels per unit at the sensor's original width (PixelXDimension when
        # the photo was resized since); the focal length in pixels scales with this image's width.
        original_width = max(int(exif.get(0xA002, 0) or width), 1)
        sensor_mm = original_width / float(xres) * mm_per_unit
        if 10 <= float(focal) / sensor_mm * 36.0 <= 1200:
            return float(focal) / sensor_mm * width
    return None


def _read_bytes(path: Path, shown: str) -> bytes:
    """The whole file, read once, so the hash and the decoded pixels come from the same bytes."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(shown, "file not found", "check the path and the spelling of the file name",
                         code="missing") from None
    except OSError as exc:
        # EACCES on a parent folder, a symlink loop, ...
        raise InputError(shown, f"cannot be reached ({exc.strerror or exc})",
                         "check the folder permissions, or copy the photo somewhere readable",
                         code="unreadable") from None
    if stat.S_ISDIR(mode):
        raise InputError(shown, "is a folder, not an image file",
                         "give the path of one photo inside it (e.g. .../photo.jpg)", code="not_a_file")
    if not stat.S_ISREG(mode):
        raise InputError(shown, "is not a regular file (device, socket or pipe)",
                         "give the path of a saved JPEG or PNG photo", code="not_a_file")
    try:
        file_bytes = path.read_bytes()
    except PermissionError:
        raise InputError(shown, "cannot be read: permission denied",
                         "make the file readable for this user (e.g. chmod a+r) or copy it somewhere readable",
                         code="unreadable") from None
    except OSError as exc:
        # EIO and friends: a failing disk or a network share that went away.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise InputError(shown, f"cannot be read ({reason})", "copy the file to a local disk and try again",
                         code="unreadable") from None
    if not file_bytes:
        raise InputError(shown, "file is empty (0 bytes)",
                         "the copy or download probably failed; copy the photo again", code="empty")
    return file_bytes


@contextlib.contextmanager
def _strict_pil() -> Iterator[None]:
    """PIL refuses truncated files and treats decompression-bomb warnings as errors, only inside this block.

    `ImageFile.LOAD_TRUNCATED_IMAGES` is a PIL module global that other code may have switched on; a
    half-downloaded JPEG would then decode silently with a grey lower half, so it is forced off here
    and restored afterwards.
    """
    truncated_before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated_before


def _available_formats() -> tuple[str, ...]:
    """ACCEPTED_FORMATS that this PIL build can decode (AVIF and WebP depend on how it was built)."""
    Image.init()  # registers every plugin once; later calls return at once
    return tuple(name for name in ACCEPTED_FORMATS if name in Image.OPEN)


def _too_large(shown: str, pixels_text: str, max_pixels: int) -> InputError:
    megapixels = max_pixels / 1e6
    return InputError(shown, f"image is too large ({pixels_text}; the limit is {megapixels:g} megapixels)",
                      f"downscale it to at most {megapixels:g} megapixels (e.g. 4000x3000) and try again",
                      code="too_large")


def _bomb_pixels_text(bomb: Exception) -> str:
    """'144.0 megapixels, over PIL's safety limit' from PIL's message 'Image size (144000000 pixels) exceeds ...'."""
    found = re.search(r"\((\d+) pixels\)", str(bomb))
    declared = f"{int(found.group(1)) / 1e6:.1f} megapixels" if found else "its header declares"
    return f"{declared}, over PIL's decompression-bomb safety limit"


def _decode(file_bytes: bytes, shown: str, max_pixels: int) -> Image.Image:
    """Open, check the header size, then decode fully; returns an upright PIL image."""
    with _strict_pil():
        try:
            image = Image.open(io.BytesIO(file_bytes), formats=_available_formats())
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            # PIL checks the header size inside open(), before our own check can see it.
            raise _too_large(shown, _bomb_pixels_text(exc), max_pixels) from None
        except UnidentifiedImageError:
            raise InputError(shown, "is not an image PIL can read (accepted: JPEG, PNG, WebP, AVIF, TIFF, BMP, GIF)",
                             f"{_REEXPORT_HINT}; iPhone HEIC photos must be exported as JPEG first",
                             code="not_image") from None
        except (OSError, SyntaxError, ValueError, struct.error) as exc:
            # The format was recognised but its header is broken.
            raise InputError(shown, f"image header is damaged ({exc})", _REEXPORT_HINT, code="corrupt") from None

        width, height = image.size
        if width <= 0 or height <= 0:
            raise InputError(shown, f"image has no pixels ({width}x{height})", _REEXPORT_HINT, code="corrupt")
        if width * height > max_pixels:
            raise _too_large(shown, f"{width}x{height} = {width * height / 1e6:.1f} megapixels", max_pixels)

        try:
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_large(shown, _bomb_pixels_text(exc), max_pixels) from None
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, MemoryError) as exc:
            # "image file is truncated", "broken data stream", zlib errors and the like.
            raise InputError(shown, f"image data is truncated or corrupt ({exc})",
                             f"copy or download the photo again; if it opens elsewhere, {_REEXPORT_HINT}",
                             code="corrupt") from None

    try:
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError, struct.error):
        # A malformed EXIF block should not cost the user the photo: viewers show it unrotated too.
        return image


def _to_rgb_uint8(image: Image.Image, shown: str) -> np.ndarray:
    """Any PIL mode to [H, W, 3] uint8: 16-bit and float data rescaled, alpha composited over white."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image).astype(np.float64)
        # "I" also holds 8-bit data promoted to 32 bits; only rescale what really uses 16 bits.
        full_scale = 65535.0 if values.max(initial=0) > 255 else 255.0
        return _grey_to_rgb(np.clip(values / full_scale * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        full_scale = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        return _grey_to_rgb(np.clip(values / full_scale * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8)
    if mode in ("L", "1"):
        return _grey_to_rgb(np.asarray(image.convert("L"), dtype=np.uint8))

    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        # White, not black: cut-out portraits are made to be seen on white, and dark hair stays visible.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8)
    try:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)  # P, CMYK, YCbCr, LAB, HSV
    except (ValueError, OSError) as exc:
        raise InputError(shown, f"image colour mode {mode!r} cannot be converted to RGB ({exc})",
                         _REEXPORT_HINT, code="not_image") from None


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    """[H, W] uint8 -> [H, W, 3] uint8."""
    return np.repeat(grey[:, :, None], 3, axis=2)
