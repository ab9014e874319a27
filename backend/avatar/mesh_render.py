"""The evaluation's baseline, "the textured mesh alone": a CPU z-buffer rasteriser, unlit.

Conventions: vertices in camera space with OpenCV axes (x right, y down, z forward), any length
unit; K is an OpenCV pinhole matrix in the project's continuous pixel coordinates (pixel i spans
[i, i + 1], so its centre is at i + 0.5, as in ``texture_bake.project_points``); uvs have v up
and texture row 0 at the top (OBJ and ``backend.texture_layout`` convention), so texel
(x, y) = (u W, (1 - v) H). Colours come out as the texture's values scaled to [0, 1] (sRGB for the
bundle's texture.png): no lighting, since the baked texture already carries the photo's shading.

How: every triangle's bounding box of pixel centres is enumerated at once (numpy repeat), the
centres inside get screen-space barycentrics, and 1/z interpolation gives depth and the
perspective-correct barycentrics; ``np.minimum.at`` keeps the nearest surface per pixel.
Triangles are taken in chunks so memory stays bounded when a few triangles fill the screen.
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass

import numpy as np
from PIL import Image

from backend.bundle.gltf_writer import _EYE_SHELLS, _styles
from backend.bundle.procedural_textures import eye_texture_png
from backend.bundle.texture_bake import sample_bilinear
from backend.fitting.shading import linear_to_srgb
from backend.headmodel.asset import HeadModelAsset
from backend.texture_layout import SKIN_MATERIALS, atlas_uv

# Pixel candidates per chunk (about 40 bytes each across the temporaries): ~160 MB at most.
CHUNK_CANDIDATES = 1 << 22


@dataclass
class TexturedMesh:
    """What to draw. triangles: [T, 3] vertex ids; uvs: [T, 3, 2] per-corner uvs (v up);
    textures: images [h, w, C>=3] (uint8 or float in [0, 1]); tri_texture: [T] index into
    ``textures``, or -1 for a flat ``tri_colour`` [T, 3] float in [0, 1]."""

    triangles: np.ndarray
    uvs: np.ndarray
    textures: list[np.ndarray]
    tri_texture: np.ndarray
    tri_colour: np.ndarray

    @staticmethod
    def single(triangles: np.ndarray, uvs: np.ndarray, texture: np.ndarray) -> TexturedMesh:
        """Every triangle textured by one image."""
        t = len(triangles)
        return TexturedMesh(np.asarray(triangles), np.asarray(uvs, np.float64), [texture], np.zeros(t, np.int64),
                            np.zeros((t, 3), np.float32))


@dataclass
class Raster:
    """Per pixel of an [H, W] image: tri [H, W] int64 (-1 where empty), bary [H, W, 3]
    perspective-correct float64 weights of the triangle's corners, depth [H, W] camera z (inf where empty)."""

    tri: np.ndarray
    bary: np.ndarray
    depth: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        return self.tri >= 0


@dataclass
class MeshRender:
    """image: [H, W, 3] float32 in [0, 1] (black where empty); mask: [H, W] bool; raster: the ids and weights."""

    image: np.ndarray
    mask: np.ndarray
    raster: Raster


def rasterize_mesh(verts_cam: np.ndarray, K: np.ndarray, triangles: np.ndarray, height: int, width: int,
              cull_backfaces: bool = True, near: float = 1e-6) -> Raster:
    """Z-buffer the triangles [T, 3] of vertices [V, 3] (camera space) into an [height, width] image.

    Triangles with a corner at z <= ``near`` are dropped whole (no clipping: the head is always
    in front of the camera). Back faces are those whose normal (v1 - v0) x (v2 - v0) points away
    from the camera, i.e. the outward side of a counter-clockwise mesh like ICT's.
    """
    v = np.asarray(verts_cam, np.float64)
    tris = np.asarray(triangles, np.int64)
    corners = v[tris]  # [T, 3, 3]
    keep = (corners[..., 2] > near).all(1)
    if cull_backfaces:
        normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        keep &= (normal * corners[:, 0]).sum(1) < 0
    ids = np.nonzero(keep)[0]
    corners = corners[ids]
    proj = corners @ np.asarray(K, np.float64).T
    xy = proj[..., :2] / proj[..., 2:3]  # [t, 3, 2]
    z = corners[..., 2]  # [t, 3]
    # Pixel centres c + 0.5 inside each bounding box, clipped to the image.
    x0 = np.clip(np.ceil(xy[..., 0].min(1) - 0.5), 0, width).astype(np.int64)
    x1 = np.clip(np.floor(xy[..., 0].max(1) - 0.5), -1, width - 1).astype(np.int64)
    y0 = np.clip(np.ceil(xy[..., 1].min(1) - 0.5), 0, height).astype(np.int64)
    y1 = np.clip(np.floor(xy[..., 1].max(1) - 0.5), -1, height - 1).astype(np.int64)
    bw, bh = np.maximum(x1 - x0 + 1, 0), np.maximum(y1 - y0 + 1, 0)
    e1, e2 = xy[:, 1] - xy[:, 0], xy[:, 2] - xy[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    count = np.where(np.abs(area) > 1e-12, bw * bh, 0)
    # Screen barycentrics are affine in the pixel position p = (x, y, 1): l_i = A_i . p. Dividing
    # by z_i gives q_i = l_i / z_i, also affine, whose sum is 1/z and whose ratios q_i / sum(q) are
    # the perspective-correct weights; one [3, 3] matrix per triangle does it all per pixel.
    inv_area = 1 / np.where(count > 0, area, 1.0)
    x0v, y0v = xy[:, 0, 0], xy[:, 0, 1]
    a1 = np.stack([e2[:, 1], -e2[:, 0], y0v * e2[:, 0] - x0v * e2[:, 1]], -1) * inv_area[:, None]
    a2 = np.stack([-e1[:, 1], e1[:, 0], x0v * e1[:, 1] - y0v * e1[:, 0]], -1) * inv_area[:, None]
    a0 = np.array([0.0, 0.0, 1.0]) - a1 - a2
    coeff = np.stack([a0, a1, a2], 1) / z[..., None]  # [t, 3, 3]

    depth = np.full(width * height, np.inf)
    tri_buf = np.full(width * height, -1, np.int64)
    bary_buf = np.zeros((width * height, 3))
    starts = np.concatenate([[0], np.cumsum(count)])
    # Chunk boundaries so a chunk holds about CHUNK_CANDIDATES candidates (one big triangle may hold more).
    cuts = np.searchsorted(starts, np.arange(0, starts[-1], CHUNK_CANDIDATES), "right") - 1
    bounds = np.unique(np.concatenate([cuts, [len(count)]]))
    for lo, hi in itertools.pairwise(bounds):
        sel = np.arange(lo, hi)[count[lo:hi] > 0]
        if not len(sel):
            continue
        n = count[sel]
        rep = np.repeat(sel, n)
        local = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)  # index inside each box
        px = x0[rep] + local % bw[rep]
        py = y0[rep] + local // bw[rep]
        c = coeff[rep]
        q = c[..., 0] * (px + 0.5)[:, None] + c[..., 1] * (py + 0.5)[:, None] + c[..., 2]  # [n, 3]
        # z > 0, so q has the sign of the screen barycentric. (Column ops: numpy's reductions
        # over a length-3 axis measured several times slower.)
        inside = (q[:, 0] >= 0) & (q[:, 1] >= 0) & (q[:, 2] >= 0)
        rep, q, pix = rep[inside], q[inside], (py * width + px)[inside]
        inv_z = q[:, 0] + q[:, 1] + q[:, 2]
        zc = 1 / inv_z
        np.minimum.at(depth, pix, zc)
        win = zc <= depth[pix]  # ties (shared edges) resolve to either triangle: the same surface
        tri_buf[pix[win]] = ids[rep[win]]
        bary_buf[pix[win]] = q[win] / inv_z[win, None]
    return Raster(tri_buf.reshape(height, width), bary_buf.reshape(height, width, 3), depth.reshape(height, width))


def render_textured_mesh(verts_cam: np.ndarray, K: np.ndarray, triangles: np.ndarray, uvs: np.ndarray,
                         texture: np.ndarray, height: int, width: int, cull_backfaces: bool = True
                         ) -> tuple[np.ndarray, np.ndarray]:
    """One texture over all triangles: verts_cam [V, 3], K [3, 3], triangles [T, 3], uvs [T, 3, 2] (v up),
    texture [h, w, 3] -> (image [height, width, 3] float32 in [0, 1], mask [height, width] bool)."""
    out = render_mesh(verts_cam, K, TexturedMesh.single(triangles, uvs, texture), height, width, cull_backfaces)
    return out.image, out.mask


def render_mesh(verts_cam: np.ndarray, K: np.ndarray, mesh: TexturedMesh, height: int, width: int,
                cull_backfaces: bool = True) -> MeshRender:
    """Render ``mesh`` posed at ``verts_cam`` [V, 3] (camera space) with intrinsics K [3, 3]."""
    return shade(rasterize_mesh(verts_cam, K, mesh.triangles, height, width, cull_backfaces), mesh)


def shade(raster: Raster, mesh: TexturedMesh) -> MeshRender:
    """Colour a raster: perspective-correct uvs, bilinear texture samples, flat colours where tri_texture < 0."""
    mask = raster.mask
    tri = raster.tri[mask]
    bary = raster.bary[mask]
    image = np.zeros((*mask.shape, 3), np.float32)
    colours = np.asarray(mesh.tri_colour, np.float32)[tri]
    corner_uv = np.asarray(mesh.uvs)[tri]  # [P, 3, 2]
    uv = corner_uv[:, 0] * bary[:, :1] + corner_uv[:, 1] * bary[:, 1:2] + corner_uv[:, 2] * bary[:, 2:]  # [P, 2]
    which = np.asarray(mesh.tri_texture)[tri]
    for index, texture in enumerate(mesh.textures):
        sel = which == index
        if not sel.any():
            continue
        h, w = texture.shape[:2]
        # Continuous texel coordinates (texel i spans [i, i + 1]); sample_bilinear shifts to centres.
        xy = np.stack([uv[sel, 0] * w, (1 - uv[sel, 1]) * h], 1).astype(np.float32)
        rgb = texture[..., :3]
        scale = 1 / 255 if rgb.dtype == np.uint8 else 1.0
        colours[sel] = sample_bilinear(np.ascontiguousarray(rgb), xy)[:, :3] * scale
    image[mask] = colours
    return MeshRender(image, mask, raster)


def ict_textured_mesh(asset: HeadModelAsset, skin_texture: np.ndarray,
                      colours: dict[str, tuple[float, float, float, float]] | None = None) -> TexturedMesh:
    """The ICT head as head.glb shades it (``gltf_writer.build_head_glb``), for this renderer.

    Skin (M_Face, M_BackHead) samples ``skin_texture`` [h, w, 3] (the bundle's texture.png) through
    ``texture_layout.atlas_uv``; the eyeball shells get the same generated eye texture as the glb
    (sclera, iris in the ``colours`` iris colour, pupil); other opaque parts their flat colour.
    The see-through layers (tear film, eye blend, occlusion shells, lash cards) are left out: the
    glb alpha-blends them nearly invisible, and drawn opaque they would hide the eyes.

    Returns a TexturedMesh over the kept triangles only; its triangles still index the full
    [V, 3] vertex array (``asset.vertices(...)`` in any unit, moved to camera space).
    """
    styles = _styles(asset.material_names, colours)
    tri_material = asset.triangle_material()
    keep = ~np.array([s.blend for s in styles])[tri_material]
    material = tri_material[keep]
    uv = asset.uvs[asset.triangle_uvs[keep]].astype(np.float64)  # [t, 3, 2] UDIM uvs
    skin = np.isin(material, [asset.material_names.index(m) for m in SKIN_MATERIALS])
    atlas = np.stack(atlas_uv(uv[..., 0], uv[..., 1]), -1)
    # Non-skin parts use their own unit square (the glb's layout for the eye texture).
    own = np.stack([uv[..., 0] - np.floor(uv[..., 0]), uv[..., 1]], -1)
    uvs = np.where(skin[:, None, None], atlas, own)
    textures = [np.asarray(skin_texture)]
    tri_texture = np.where(skin, 0, -1)
    tri_colour = np.zeros((len(material), 3), np.float32)
    for index, (name, style) in enumerate(zip(asset.material_names, styles)):
        sel = material == index
        if name in _EYE_SHELLS:
            iris = styles[asset.material_names.index(_EYE_SHELLS[name])].colour
            textures.append(np.asarray(Image.open(io.BytesIO(eye_texture_png(style.colour, iris))).convert("RGB")))
            tri_texture[sel] = len(textures) - 1
        elif name not in SKIN_MATERIALS:
            tri_colour[sel] = linear_to_srgb(np.asarray(style.colour[:3]))  # glTF factors are linear
    return TexturedMesh(asset.triangles[keep].astype(np.int64), uvs, textures, tri_texture, tri_colour)
