"""Generated textures for the head's glTF: the eyeball shell (sclera, iris, pupil) and the lash strands.

ICT's eyeball is two layers: an outer shell (M_Sclera*) and, under its cornea bulge, an iris disc
(M_Iris*) meant to be seen through a transparent cornea. A flat white shell would hide the iris,
so the shell gets a small generated texture instead, painted where the disc lies under it. ICT's
lashes are cards meant for a strand texture; flat, they read as black bands, so they get a
generated one (alpha-blended strands). Both are PNG bytes, sRGB as glTF expects.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from backend.fitting.shading import linear_to_srgb

# The shell's uvs are polar around (0.5, 0.5). Measured on ICT's mesh: the iris disc's rim lies
# 25.4 deg off the gaze axis, under shell uv radius 0.139; a pupil a third of the iris wide.
IRIS_UV_RADIUS = 0.139
PUPIL_UV_RADIUS = 0.048
EYE_TEXTURE_SIZE = 256
LASH_BANDS = 6


def eye_texture_png(sclera: tuple, iris: tuple, size: int = EYE_TEXTURE_SIZE) -> bytes:
    """PNG bytes of an eyeball-shell texture: sclera, iris ring and pupil around uv (0.5, 0.5).

    ``sclera`` and ``iris`` are linear RGB(A) (alpha ignored); the PNG is sRGB as glTF expects.
    """
    px = (np.arange(size) + 0.5) / size
    r = np.hypot(px[None, :] - 0.5, px[:, None] - 0.5)  # radially symmetric, so v's flip is moot
    angle = np.arctan2(px[:, None] - 0.5, px[None, :] - 0.5)
    step = 1.0 / size  # soft edges one texel wide, so the rims do not alias

    def inside(radius):  # 1 inside radius, 0 outside, smooth across one texel
        return np.clip((radius - r) / step + 0.5, 0.0, 1.0)[..., None]

    t = np.clip((r - PUPIL_UV_RADIUS) / (IRIS_UV_RADIUS - PUPIL_UV_RADIUS), 0.0, 1.0)[..., None]
    # Iris: fibres (angular streaks), darker toward the limbal ring, a little lighter near the pupil.
    fibres = 1.0 + 0.12 * np.sin(angle * 48.0)[..., None] * np.sin(angle * 17.0 + 1.3)[..., None]
    iris_rgb = np.asarray(iris[:3], np.float64) * fibres * (1.15 - 0.55 * t**3)
    sclera_rgb = np.asarray(sclera[:3], np.float64)
    rgb = sclera_rgb + inside(IRIS_UV_RADIUS) * (iris_rgb - sclera_rgb)
    rgb = rgb * (1.0 - inside(PUPIL_UV_RADIUS) * 0.985)
    image = Image.fromarray((linear_to_srgb(rgb) * 255.0 + 0.5).astype(np.uint8), "RGB")
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=6)
    return out.getvalue()


def lash_texture_png(colour: tuple, width: int = 1024, height: int = 192) -> bytes:
    """PNG of hair strands for ICT's lash cards (RGBA, sRGB; alpha is the strand coverage).

    The lash uvs (measured): u runs along the lid across both eyes; v holds six cards stacked in
    bands of 1/6 (three lower-lid layers, then three upper), each with its root at the top of its
    band in OBJ v, i.e. at the top of its band in the image too after glTF's flip. Each layer gets
    a third of the strands, each strand tapering and curling a little toward its tip; the lower
    lid's (the image's lower three bands) are shorter, as on real lids.
    """
    rng = np.random.default_rng(7)  # fixed: the same head always gets the same file
    band = height // LASH_BANDS
    # Strand roots: about one every 8 texels (0.8 mm) per layer, 0.27 mm over the three layers.
    x0 = np.cumsum(rng.uniform(5.0, 11.0, size=(LASH_BANDS, width // 5)), axis=1)  # [B, S]
    lower = np.arange(LASH_BANDS)[:, None] >= LASH_BANDS // 2
    length = np.where(lower, 0.55, 1.0) * rng.uniform(0.55, 1.0, x0.shape)
    length, half_width, curl = (a.astype(np.float32)[..., None, None] for a in (
        length, rng.uniform(0.7, 1.1, x0.shape), rng.uniform(-6.0, 6.0, x0.shape)))
    f = ((np.arange(band, dtype=np.float32) + 0.5) / band)[None, None, :, None]  # 0 root, 1 tip
    dx = np.arange(-8, 9)[None, None, None, :]  # curl and width stay inside +-8 texels
    cols = np.floor(x0).astype(np.int64)[..., None, None] + dx  # [B, S, 1, W]
    centre = x0.astype(np.float32)[..., None, None] + curl * f**2  # [B, S, band, 1]
    taper = half_width * np.sqrt(np.clip(1.0 - f / length, 0.0, 1.0))
    cover = np.clip(taper + 0.5 - np.abs(cols - centre), 0.0, 1.0)  # [B, S, band, W]
    rows = (np.arange(LASH_BANDS)[:, None, None, None] * band + np.arange(band)[None, None, :, None])
    rows, cols = np.broadcast_arrays(rows, cols, cover)[:2]
    inside = (cols >= 0) & (cols < width) & (cover > 0)
    alpha = np.bincount((rows * width + cols)[inside], cover[inside], minlength=height * width)
    rgba = np.empty((height, width, 4))
    rgba[..., :3] = linear_to_srgb(np.asarray(colour[:3], np.float64))
    rgba[..., 3] = np.clip(alpha.reshape(height, width), 0.0, 1.0)
    image = Image.fromarray((rgba * 255.0 + 0.5).astype(np.uint8), "RGBA")
    # Stretched to a power-of-two height (the bands keep their 1/6 of v): WebGL 1 and older
    # engines cannot mipmap a non-power-of-two texture (the glTF validator notes it).
    pot = 1 << (height - 1).bit_length()
    if pot != height:
        image = image.resize((width, pot), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()
