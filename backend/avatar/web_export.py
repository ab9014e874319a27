"""``headrig export-web BUNDLE -o page.html``: one self-contained web page showing the Gaussian avatar.

The page is PlayCanvas' SuperSplat viewer as ``splat-transform`` writes it (``backend.web_tools``):
the Gaussians compressed to SOG and embedded, the viewer's script and style inline; nothing is
fetched from the network. Any browser with WebGPU or WebGL 2 shows it when served over http
(``python -m http.server``; browsers refuse module scripts from ``file://``).

What HeadRig adds is the framing: the viewer's stock camera sits at (2, 2, -2) looking at the
origin, fine for a room-sized capture and far too far for a 25 cm head. The camera here faces the
face from the distance at which the head fills ``fill`` of the view's height.

Axes: ``gaussians.ply`` is stored in OpenCV axes (``shared.splat_axes``) and the viewer turns
every PLY 180 degrees about z, so in the viewer's world a glTF point (x, y, z) sits at (-x, y, -z):
upright, the face looking down -z.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.errors import InputError
from shared.splat_axes import GLTF_FROM_PLY, OPENCV

# The viewer's settings schema (version 2), as splat-transform's defaults, with our camera.
_SETTINGS = {
    "version": 2,
    "tonemapping": "none",
    "highPrecisionRendering": False,
    "postEffectSettings": {
        "sharpness": {"enabled": False, "amount": 0},
        "bloom": {"enabled": False, "intensity": 1, "blurLevel": 2},
        "grading": {"enabled": False, "brightness": 0, "contrast": 1, "saturation": 1, "tint": [1, 1, 1]},
        "vignette": {"enabled": False, "intensity": 0.5, "inner": 0.3, "outer": 0.75, "curvature": 1},
        "fringing": {"enabled": False, "intensity": 0.5},
    },
    "animTracks": [],
    "annotations": [],
    "startMode": "default",
}


@dataclass
class WebViewOptions:
    fov_deg: float = 30.0         # vertical field of view
    fill: float = 0.7             # share of the view's height the head (and neck) covers
    elevation_deg: float = 5.0    # camera a little above the eyes' level, looking slightly down
    background: tuple[float, float, float] = (0.16, 0.16, 0.18)
    min_opacity: float = 0.3      # Gaussians fainter than this do not count for the framing


# splat-transform's viewer turns every PLY 180 degrees about z (y-down captures stand upright).
VIEWER_FROM_PLY = np.diag([-1.0, -1.0, 1.0])


def viewer_from_gltf(points: np.ndarray) -> np.ndarray:
    """[N, 3] glTF-frame points -> the viewer's world: into the PLY's axes, then the viewer's turn."""
    ply_from_gltf = np.asarray(GLTF_FROM_PLY[OPENCV]).T  # orthogonal: the inverse is the transpose
    return np.asarray(points, np.float64) @ (VIEWER_FROM_PLY @ ply_from_gltf).T


def framing(means_gltf: np.ndarray, opacities: np.ndarray, options: WebViewOptions | None = None) -> dict:
    """The viewer camera ({position, target, fov}, viewer world) that frames the Gaussians' head.

    The head's box comes from the 1st to 99th percentiles of the opaque Gaussians' means, so a few
    stray Gaussians do not shrink the head on screen."""
    opts = options or WebViewOptions()
    means = np.asarray(means_gltf, np.float64)
    solid = means[np.asarray(opacities) >= opts.min_opacity]
    if len(solid) < 10:
        solid = means
    lo, hi = np.percentile(solid, 1, axis=0), np.percentile(solid, 99, axis=0)
    centre = (lo + hi) / 2
    height = hi[1] - lo[1]
    half = math.radians(opts.fov_deg) / 2
    distance = (height / 2) / (math.tan(half) * opts.fill) + (hi[2] - lo[2]) / 2
    elevation = math.radians(opts.elevation_deg)
    eye = centre + distance * np.array([0.0, math.sin(elevation), math.cos(elevation)])  # in front: +z in glTF
    position, target = viewer_from_gltf(np.stack([eye, centre]))
    return {"position": position.round(5).tolist(), "target": target.round(5).tolist(), "fov": opts.fov_deg}


def viewer_settings(camera: dict, options: WebViewOptions | None = None) -> dict:
    opts = options or WebViewOptions()
    return {**_SETTINGS, "background": {"color": list(opts.background)}, "cameras": [{"initial": camera}]}


def export_web(source: str | Path, out_html: str | Path, options: WebViewOptions | None = None) -> Path:
    """Write the web viewer page of ``source`` (a bundle folder with gaussians.ply, or a PLY); returns its path."""
    from backend.avatar.ply import PlyFormatError, read_gaussians_ply
    from backend.web_tools import splat_transform

    source = Path(source)
    ply = source / "gaussians.ply" if source.is_dir() else source
    if not ply.is_file():
        raise InputError(str(source), "has no gaussians.ply",
                         "build the head with 'headrig reconstruct VIDEO --avatar fast' first", code="no_gaussians")
    try:
        cloud = read_gaussians_ply(ply)
    except PlyFormatError as exc:
        raise InputError(str(ply), str(exc), "pass a bundle's gaussians.ply", code="bad_ply") from None
    settings = viewer_settings(framing(cloud.means, cloud.opacities, options), options)
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-web-") as tmp:
        settings_path = Path(tmp) / "settings.json"
        settings_path.write_text(json.dumps(settings, indent=1))
        page = Path(tmp) / "page.html"
        # -q: splat-transform's progress bars are for terminals; errors still reach stderr.
        splat_transform(["-q", "-E", str(settings_path), str(ply), str(page)])
        os.replace(page, out)  # a reader sees the old page or the whole new one
    return out
