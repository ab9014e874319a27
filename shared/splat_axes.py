"""The axes of ``gaussians.ply``: how its ``x y z`` relate to head.glb's frame (one home for that fact).

Pure standard-library Python: vendored into the Blender add-on, which reads the PLY's means.

``gaussians.ply`` is stored in the axes of the 3D Gaussian Splatting ecosystem, OpenCV/COLMAP
camera axes: x right, y down, z forward (away from a camera in front of the face, so the face looks
down -z), in metres. That is head.glb's glTF frame (x right, y up, the face looking down +z) turned
180 degrees about x: ``(x, y, z)_ply = (x, -y, -z)_glTF``, a proper rotation (no mirroring), so a
Gaussian's scales are unchanged and its rotation is pre-multiplied by that turn.

Why: 3DGS training writes its PLYs in COLMAP's world, which for captures like ours is y down, and
the tools built around it assume so: SuperSplat and PlayCanvas' splat-transform HTML viewer turn a
PLY 180 degrees about z on load to stand a y-down scene upright. A y-up file shows upside down there.

Files written before this convention say ``units metres, Y up (glTF axes)`` in their header and are
read as glTF axes; so are PLYs that say nothing (plain 3DGS files from elsewhere are read as stored).
"""

from __future__ import annotations

OPENCV = "opencv"
GLTF = "gltf"
AXES_COMMENT = "axes opencv (x right, y down, z forward), metres; glTF = (x, -y, -z)"
LEGACY_COMMENT = "units metres, Y up (glTF axes)"

# Row-major 3x3: p_gltf = M @ p_ply. Both are their own inverse (and transpose).
GLTF_FROM_PLY = {
    OPENCV: ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0)),
    GLTF: ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
}


def ply_axes(comments: list[str]) -> str:
    """OPENCV or GLTF, from a PLY header's comment lines (without the ``comment`` keyword)."""
    for comment in comments:
        if comment.strip().startswith("axes opencv"):
            return OPENCV
    return GLTF


def gltf_from_ply(comments: list[str]) -> tuple[tuple[float, float, float], ...]:
    """The 3x3 matrix that takes this PLY's means to head.glb's glTF frame (p_gltf = M @ p_ply)."""
    return GLTF_FROM_PLY[ply_axes(comments)]
