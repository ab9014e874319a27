"""Write the fitted head as a binary glTF (``head.glb``) that Blender imports as one rigged object.

Layout of the file (what Blender's glTF importer turns into one mesh object):

* one mesh "HeadRig head" on one node of the same name, one primitive per ICT material group
  (12 primitives -> 12 material slots, named after the ICT materials: M_Face, M_BackHead, ...);
* vertices are split where a vertex has more than one uv (glTF has one uv per vertex) and at
  material borders (each primitive owns its vertices); every split copy keeps the deltas of the
  vertex it came from, so the shape keys stay watertight across seams;
* positions in metres (the model is in centimetres); the axes are left alone because glTF's
  convention (Y up, +Z forward) is already ICT-FaceKit's;
* 53 ARKit-named morph targets on every primitive, in ``asset.expression_names`` order, named
  in ``mesh.extras["targetNames"]`` (which Blender reads for shape-key names), weights zero;
* skin (M_Face, M_BackHead) samples the embedded ``texture.png`` through the atlas of
  ``backend.texture_layout``; the other parts get flat colours; the three eye shells
  (tear film, eye blend, eye occlusion) are nearly transparent so they do not hide the eyes.
* ICT's eyeball is two layers: an outer shell (M_Sclera*) and, under its cornea bulge, an iris
  disc (M_Iris*) meant to be seen through a transparent cornea. A flat white shell would hide
  the iris, so the shell gets a small generated texture instead (sclera, iris in the iris colour,
  pupil) painted where the disc lies under it; this needs no transparency sorting anywhere.
  ICT's lashes are cards meant for a strand texture; flat, they read as black bands, so they
  get a generated one (alpha-blended strands). Both textures come from ``procedural_textures``.

Morph targets are written as sparse accessors by default: a target moves under a third of a
primitive's vertices, so storing (index, delta) pairs makes the file 2.6x smaller than dense
arrays (7.7 MB instead of 19.9 MB before the skin texture) for about 60 ms more import time in
Blender 4.5 (0.33 s instead of 0.27 s). Sparse accessors are core glTF 2.0; Blender's importer
reads them (tests/test_gltf_blender.py checks the shape keys it builds).

The Khronos glTF-Validator passes every head.glb with no errors or warnings
(tests/test_conformance.py). Its one kind of info is deliberate: the flat-coloured parts (teeth,
gums, irises, eye shells) keep TEXCOORD_0 although no texture reads it ("may be unused"), so
artists who paint them in Blender or a game engine start from ICT's uv layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pygltflib as gl

from backend import __version__
from backend.bundle.procedural_textures import (  # noqa: F401  (re-exported: importable from here too)
    EYE_TEXTURE_SIZE, IRIS_UV_RADIUS, LASH_BANDS, PUPIL_UV_RADIUS, eye_texture_png, lash_texture_png,
)
from backend.bundle.gltf_animation import NodeAnimation, add_node_animation
from backend.headmodel.asset import HeadModelAsset
from backend.texture_layout import SKIN_MATERIALS, atlas_uv

MESH_NAME = "HeadRig head"
CM_TO_M = 0.01
# Deltas shorter than a micrometre are left out of sparse targets: invisible at any render size,
# and dropping them cuts the stored count by a third (the ICT bases carry a floor of tiny noise).
SPARSE_EPSILON_M = 1e-6
GENERATOR = f"HeadRig {__version__} (pygltflib)"
COPYRIGHT = "Head model: ICT-FaceKit, USC Institute for Creative Technologies (MIT License)"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EYE_SHELLS = {"M_ScleraLeft": "M_IrisLeft", "M_ScleraRight": "M_IrisRight"}


@dataclass(frozen=True)
class MaterialStyle:
    """How one ICT material group is shaded. ``colour`` is linear RGBA (glTF baseColorFactor)."""

    colour: tuple[float, float, float, float]
    roughness: float
    blend: bool = False  # alphaMode BLEND: the eye shells sit over the eyeballs
    double_sided: bool = False  # lashes and shells are thin sheets seen from both sides


DEFAULT_STYLES: dict[str, MaterialStyle] = {
    # Skin: the colour multiplies the texture, so white keeps the texture as it is.
    "M_Face": MaterialStyle((1.0, 1.0, 1.0, 1.0), 0.6),
    "M_BackHead": MaterialStyle((1.0, 1.0, 1.0, 1.0), 0.6),
    "M_GumsTongue": MaterialStyle((0.45, 0.10, 0.10, 1.0), 0.4),
    "M_Teeth": MaterialStyle((0.80, 0.76, 0.66, 1.0), 0.3),
    "M_ScleraLeft": MaterialStyle((0.80, 0.77, 0.74, 1.0), 0.25),
    "M_ScleraRight": MaterialStyle((0.80, 0.77, 0.74, 1.0), 0.25),
    "M_IrisLeft": MaterialStyle((0.10, 0.05, 0.025, 1.0), 0.2),
    "M_IrisRight": MaterialStyle((0.10, 0.05, 0.025, 1.0), 0.2),
    # The shells overlap the eyeballs by a fraction of a millimetre; faint enough to see through.
    "M_LacrimalFluid": MaterialStyle((1.0, 1.0, 1.0, 0.05), 0.05, blend=True, double_sided=True),
    "M_EyeBlend": MaterialStyle((0.55, 0.35, 0.30, 0.10), 0.5, blend=True, double_sided=True),
    "M_EyeOcclusion": MaterialStyle((0.0, 0.0, 0.0, 0.15), 1.0, blend=True, double_sided=True),
    # Lashes: strand texture (see lash_texture_png); BLEND rather than MASK so thin strands fade
    # instead of vanishing when seen small or at a grazing angle.
    "M_EyeLashes": MaterialStyle((0.02, 0.015, 0.01, 1.0), 0.6, blend=True, double_sided=True),
}
_FALLBACK_STYLE = MaterialStyle((0.5, 0.5, 0.5, 1.0), 0.5)


@dataclass
class SplitGroup:
    """One ICT material group with its vertices split so that each carries a single uv.

    Shapes (n split vertices, t triangles):
        source_vertex: [n] int64, the model vertex each split vertex copies (positions, normals, deltas).
        uv: [n, 2] float32, glTF uvs (v down, atlas-mapped for skin).
        indices: [t, 3] int64, triangles into the split vertices.
    """

    material: int
    name: str
    source_vertex: np.ndarray
    uv: np.ndarray
    indices: np.ndarray


def split_groups(asset: HeadModelAsset) -> list[SplitGroup]:
    """The asset's triangles grouped by material, vertices split where uvs differ (empty groups left out)."""
    tri_material = asset.triangle_material()
    n_uv = asset.uvs.shape[0]
    groups = []
    for material, name in enumerate(asset.material_names):
        mask = tri_material == material
        if not mask.any():
            continue
        # One glTF vertex per distinct (model vertex, uv) pair used by this group's corners.
        keys = asset.triangles[mask].astype(np.int64) * n_uv + asset.triangle_uvs[mask]
        unique, inverse = np.unique(keys.ravel(), return_inverse=True)
        uv = asset.uvs[unique % n_uv].astype(np.float64)
        if name in SKIN_MATERIALS:
            u, v = atlas_uv(uv[:, 0], uv[:, 1])
        else:
            # Flat-coloured parts keep their layout inside their own unit square, for artists.
            u, v = uv[:, 0] - np.floor(uv[:, 0]), uv[:, 1]
        gltf_uv = np.stack([u, 1.0 - v], axis=1).astype(np.float32)  # glTF's v points down
        groups.append(SplitGroup(material, name, unique // n_uv, gltf_uv, inverse.reshape(-1, 3)))
    return groups


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """[V, 3] float32 unit normals, area-weighted over the triangles [T, 3] around each vertex.

    Computed on the unsplit model, so copies along uv seams and material borders share a normal
    and shade smoothly; vertices no triangle uses get +Z.
    """
    v = vertices.astype(np.float64)
    face_n = np.cross(v[triangles[:, 1]] - v[triangles[:, 0]], v[triangles[:, 2]] - v[triangles[:, 0]])
    normals = np.zeros_like(v)
    for corner in range(3):
        for axis in range(3):
            normals[:, axis] += np.bincount(triangles[:, corner], face_n[:, axis], minlength=len(v))
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(length > 0, normals / np.maximum(length, 1e-30), [0.0, 0.0, 1.0])
    return normals.astype(np.float32)


class _Binary:
    """Collects the binary chunk and creates bufferViews and accessors on ``gltf`` as it goes."""

    def __init__(self, gltf: gl.GLTF2):
        self.gltf = gltf
        self.chunks: list[bytes] = []
        self.size = 0

    def view(self, data: bytes, target: int | None = None, stride: int | None = None) -> int:
        self.chunks.append(data)
        pad = -len(data) % 4  # every view starts 4-byte aligned, as accessors require
        if pad:
            self.chunks.append(b"\0" * pad)
        self.gltf.bufferViews.append(
            gl.BufferView(buffer=0, byteOffset=self.size, byteLength=len(data), byteStride=stride, target=target)
        )
        self.size += len(data) + pad
        return len(self.gltf.bufferViews) - 1

    def accessor(self, view: int | None, offset: int, component: int, count: int, kind: str,
                 bounds: tuple[list, list] | None = None, sparse: gl.Sparse | None = None) -> int:
        acc = gl.Accessor(bufferView=view, byteOffset=offset if view is not None else None,
                          componentType=component, count=count, type=kind, sparse=sparse)
        if bounds is not None:
            acc.min, acc.max = bounds
        self.gltf.accessors.append(acc)
        return len(self.gltf.accessors) - 1

    def array(self, data: np.ndarray, kind: str, target: int | None, minmax: bool = False) -> int:
        component = {np.float32: gl.FLOAT, np.uint16: gl.UNSIGNED_SHORT, np.uint32: gl.UNSIGNED_INT}[data.dtype.type]
        count = data.shape[0] if kind != "SCALAR" else data.size
        view = self.view(np.ascontiguousarray(data).tobytes(), target)
        flat = data.reshape(count, -1)
        bounds = (flat.min(axis=0).tolist(), flat.max(axis=0).tolist()) if minmax else None
        return self.accessor(view, 0, component, count, kind, bounds)

    def blob(self) -> bytes:
        return b"".join(self.chunks)


def _index_dtype(n: int) -> type:
    # 65535 is the primitive-restart value for uint16 indices, so it may not be used as an index.
    return np.uint16 if n <= 65535 else np.uint32


def _dense_targets(binary: _Binary, deltas: np.ndarray) -> list[int]:
    """Accessors for deltas [E, n, 3] float32: one strided view holding all E targets."""
    n_targets, n = deltas.shape[:2]
    view = binary.view(deltas.tobytes(), gl.ARRAY_BUFFER, stride=12)
    lo, hi = deltas.min(axis=1).tolist(), deltas.max(axis=1).tolist()
    return [binary.accessor(view, k * n * 12, gl.FLOAT, n, "VEC3", (lo[k], hi[k])) for k in range(n_targets)]


def _sparse_targets(binary: _Binary, deltas: np.ndarray) -> list[int]:
    """Sparse accessors for deltas [E, n, 3]: zeros plus (index, delta) pairs for moving vertices.

    All targets of a primitive share one index view and one value view; a target that moves
    nothing is an accessor without data, which glTF defines as all zeros. A primitive none of
    whose targets moves anything (the eyeballs: no ARKit key moves them) gets no views at all,
    since glTF forbids a bufferView of byteLength 0 (the Khronos validator's VALUE_NOT_IN_RANGE).
    """
    n = deltas.shape[1]
    keep = np.linalg.norm(deltas, axis=2) > SPARSE_EPSILON_M  # [E, n]
    index_type = _index_dtype(n)
    target_idx, vertex_idx = np.nonzero(keep)  # row-major: grouped by target, vertices ascending
    counts = keep.sum(axis=1)
    index_view = value_view = None
    if counts.any():
        index_view = binary.view(vertex_idx.astype(index_type).tobytes())
        value_view = binary.view(deltas[target_idx, vertex_idx].astype(np.float32).tobytes())
    component = gl.UNSIGNED_SHORT if index_type is np.uint16 else gl.UNSIGNED_INT
    index_size = np.dtype(index_type).itemsize
    stored = np.where(keep[..., None], deltas, np.float32(0.0))  # what a reader reconstructs
    lo, hi = stored.min(axis=1).tolist(), stored.max(axis=1).tolist()
    accessors, start = [], 0
    for k, count in enumerate(counts.tolist()):
        sparse = None
        if count:
            sparse = gl.Sparse(
                count=count,
                indices=gl.AccessorSparseIndices(bufferView=index_view, byteOffset=start * index_size,
                                                 componentType=component),
                values=gl.AccessorSparseValues(bufferView=value_view, byteOffset=start * 12),
            )
        accessors.append(binary.accessor(None, 0, gl.FLOAT, n, "VEC3", (lo[k], hi[k]), sparse))
        start += count
    return accessors


def _material(name: str, style: MaterialStyle, texture: int | None) -> gl.Material:
    pbr = gl.PbrMetallicRoughness(baseColorFactor=list(style.colour), metallicFactor=0.0,
                                  roughnessFactor=style.roughness)
    if texture is not None:
        pbr.baseColorTexture = gl.TextureInfo(index=texture)
    return gl.Material(name=name, pbrMetallicRoughness=pbr, alphaMode=gl.BLEND if style.blend else gl.OPAQUE,
                       doubleSided=style.double_sided)


def _styles(material_names: list[str], colours: dict | None) -> list[MaterialStyle]:
    colours = dict(colours or {})
    unknown = sorted(set(colours) - set(material_names))
    if unknown:
        raise ValueError(f"colours for unknown materials {unknown}; the materials are {material_names}")
    styles = []
    for name in material_names:
        style = DEFAULT_STYLES.get(name, _FALLBACK_STYLE)
        if name in colours:
            rgba = tuple(float(c) for c in colours[name])
            if len(rgba) != 4 or not all(0.0 <= c <= 1.0 for c in rgba):
                raise ValueError(f"colour of {name} must be 4 floats in [0, 1] (linear RGBA), got {colours[name]}")
            style = MaterialStyle(rgba, style.roughness, style.blend, style.double_sided)
        styles.append(style)
    return styles


def build_head_glb(
    asset: HeadModelAsset,
    vertices_cm: np.ndarray,
    texture_png: bytes,
    colours: dict[str, tuple[float, float, float, float]] | None = None,
    *,
    sparse_targets: bool = True,
    animation: NodeAnimation | None = None,
) -> bytes:
    """The head as GLB bytes.

    Args:
        asset: the head model (topology, uvs, materials, expression bases).
        vertices_cm: [V, 3] neutral vertices in centimetres with the identity applied
            (``asset.vertices(identity)``); the expression bases are added as morph targets.
        texture_png: the skin atlas (PNG bytes), embedded in the file.
        colours: optional linear RGBA per ICT material name (e.g. ``{"M_IrisLeft": (...)}``)
            over ``DEFAULT_STYLES``; for skin it multiplies the texture, the sclera and iris
            colours are painted into the eyeball texture, the lash colour into the strands.
        sparse_targets: write morph targets as sparse accessors (smaller; see the module notes).
        animation: optional clip of morph weights and head motion on the head node.
    """
    vertices_cm = np.asarray(vertices_cm)
    if vertices_cm.shape != (asset.n_vertices, 3) or not np.isfinite(vertices_cm).all():
        raise ValueError(f"vertices_cm must be finite [{asset.n_vertices}, 3], got {vertices_cm.shape}")
    if not bytes(texture_png[:8]) == _PNG_SIGNATURE:
        raise ValueError("texture_png is not a PNG file")
    styles = _styles(asset.material_names, colours)

    positions = (vertices_cm.astype(np.float64) * CM_TO_M).astype(np.float32)
    normals = vertex_normals(vertices_cm, asset.triangles)
    deltas_m = asset.expression_basis.astype(np.float32) * np.float32(CM_TO_M)  # [E, V, 3]

    gltf = gl.GLTF2(asset=gl.Asset(generator=GENERATOR, copyright=COPYRIGHT), scene=0)
    binary = _Binary(gltf)

    # Clamp: the atlas halves end at the image border, and repeating would bleed across it.
    gltf.samplers.append(gl.Sampler(magFilter=gl.LINEAR, minFilter=gl.LINEAR_MIPMAP_LINEAR,
                                    wrapS=gl.CLAMP_TO_EDGE, wrapT=gl.CLAMP_TO_EDGE))
    textures: dict = {}

    def texture(key, make_png, name: str) -> int:  # one image per distinct picture
        if key not in textures:
            view = binary.view(make_png())
            gltf.images.append(gl.Image(bufferView=view, mimeType="image/png", name=name))
            gltf.textures.append(gl.Texture(sampler=0, source=len(gltf.images) - 1, name=name))
            textures[key] = len(gltf.textures) - 1
        return textures[key]

    texture("skin", lambda: bytes(texture_png), "texture")  # image 0: the skin atlas
    by_name = dict(zip(asset.material_names, styles))

    primitives = []
    for group in split_groups(asset):
        name, style, tex = group.name, styles[group.material], None
        if name in SKIN_MATERIALS:
            tex = texture("skin", None, "texture")
        elif name in _EYE_SHELLS:
            iris = by_name.get(_EYE_SHELLS[name], DEFAULT_STYLES[_EYE_SHELLS[name]]).colour
            tex = texture(("eye", style.colour, iris), lambda: eye_texture_png(style.colour, iris), "eye")
            style = MaterialStyle((1.0, 1.0, 1.0, 1.0), style.roughness)  # the texture holds the colours
        elif name == "M_EyeLashes":
            tex = texture("lashes", lambda: lash_texture_png(style.colour), "lashes")
        gltf.materials.append(_material(name, style, tex))
        src = group.source_vertex
        attributes = gl.Attributes(
            POSITION=binary.array(positions[src], "VEC3", gl.ARRAY_BUFFER, minmax=True),
            NORMAL=binary.array(normals[src], "VEC3", gl.ARRAY_BUFFER),
            TEXCOORD_0=binary.array(group.uv, "VEC2", gl.ARRAY_BUFFER),
        )
        indices = binary.array(group.indices.astype(_index_dtype(len(src))).ravel(), "SCALAR",
                               gl.ELEMENT_ARRAY_BUFFER)
        group_deltas = deltas_m[:, src]  # [E, n, 3], a fresh contiguous copy
        target_accessors = (_sparse_targets if sparse_targets else _dense_targets)(binary, group_deltas)
        primitives.append(gl.Primitive(
            attributes=attributes, indices=indices, material=len(gltf.materials) - 1, mode=gl.TRIANGLES,
            targets=[gl.Attributes(POSITION=a) for a in target_accessors],
        ))

    names = list(asset.expression_names)
    gltf.meshes.append(gl.Mesh(name=MESH_NAME, primitives=primitives, weights=[0.0] * len(names),
                               extras={"targetNames": names}))
    gltf.nodes.append(gl.Node(name=MESH_NAME, mesh=0))
    gltf.scenes.append(gl.Scene(name="HeadRig", nodes=[0]))
    if animation is not None:
        add_node_animation(gltf, binary, 0, animation)
    blob = binary.blob()
    gltf.buffers.append(gl.Buffer(byteLength=len(blob)))
    gltf.set_binary_blob(blob)
    return b"".join(gltf.save_to_bytes())
