"""Synthetic ground-truth dataset: random ICT heads rendered by Blender's Cycles.

Every sample is an ICT-FaceKit head with a random identity, a sparse random expression and a
random head pose, seen by a pinhole camera with a random focal length, textured with a skin
texture in the bundle's atlas layout (``backend.texture_layout``) and lit by a random area key
light, a fill light and a coloured ambient world, over a plain or gradient background.

    python -m bench.synthetic --out bench/results/synthetic --count 24 --sizes 512 1024 --seed 0
    python -m bench.synthetic --out DIR --count 24 --textures out/*/texture.png   # baked textures
    python -m bench.synthetic --out DIR --verify-only                             # MediaPipe check

Per sample ``NNNN`` and image size ``S`` the folder holds ``NNNN_S.png`` (RGB) and one
``NNNN.json`` with the ground truth (see ``sample_record``):

* ``identity`` [100], ``expression`` {name: weight} for all 53 ICT expressions;
* ``rotation_matrix`` [3, 3], ``rotation`` [3] (axis-angle, radians) and ``translation`` [3] (cm):
  model -> camera, ``x_cam = R @ x_model + t``, OpenCV camera axes (x right, y down, z forward).
  Model space is the asset's: centimetres, Y up, the face looks down +Z;
* ``intrinsics`` {"S": {fx, fy, cx, cy, width, height}} in pixels. Pixel coordinates are
  continuous with the image spanning [0, W] x [0, H], so the centre of pixel (i, j) is
  (i + 0.5, j + 0.5) -- the convention of MediaPipe's normalised landmarks times the image size.
  ``u = fx * x / z + cx``, ``v = fy * y / z + cy``.

Samples are independent (sample i's randomness comes from ``(seed, i)``), so a dataset can be
generated in pieces and existing samples are skipped unless ``--force``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from backend.headmodel.asset import HeadModelAsset
from backend.texture_layout import ATLAS_SIZE, ATLAS_TILES, SKIN_MATERIALS

SENSOR_WIDTH_MM = 36.0  # full-frame: "35 mm equivalent" focal lengths
HIDDEN_MATERIALS = ("M_LacrimalFluid", "M_EyeBlend", "M_EyeOcclusion", "M_EyeLashes")
# OpenCV camera <- model rotation of a head looking straight into the camera (180 deg about x).
FACING = np.diag([1.0, -1.0, -1.0])
# UV radius (from the tile centre) of the eye parts, measured on ICT's eyeball UVs: the iris
# shell's pupil cap ends near 0.10 and its iris ring near 0.36; the outer (sclera) shell is clear
# cornea out to about 0.105 (the same 21 degrees from the eye axis).
PUPIL_UV_RADIUS = 0.10
IRIS_UV_RADIUS = 0.36
CORNEA_UV_RADIUS = 0.106
# MediaPipe face-mesh index <- iBUG-68 index, for the automatic convention check.
MEDIAPIPE_CHECK = {"nose_tip": (1, None), "right_eye_outer": (33, 36), "right_eye_inner": (133, 39),
                   "left_eye_inner": (362, 42), "left_eye_outer": (263, 45)}

SKIN_TONES = np.array([  # sRGB albedo-ish base colours, light to dark
    [232, 196, 172], [224, 180, 150], [214, 168, 134], [198, 150, 114], [186, 134, 100],
    [166, 114, 82], [140, 94, 66], [116, 76, 52], [92, 60, 42], [236, 200, 182],
], float) / 255.0
HAIR_COLOURS = np.array([
    [30, 22, 18], [52, 36, 26], [80, 56, 38], [112, 80, 52], [150, 112, 70], [182, 150, 104],
    [120, 60, 34], [140, 136, 130], [20, 18, 18],
], float) / 255.0
IRIS_COLOURS = np.array([
    [70, 42, 24], [96, 60, 30], [48, 30, 20], [110, 88, 50], [72, 96, 70], [70, 100, 140],
    [100, 120, 140], [60, 70, 90],
], float) / 255.0


# ----------------------------------------------------------------------------- ground truth


def nose_tip_vertex(asset: HeadModelAsset) -> int:
    """The ICT nose-tip vertex: the face vertex of the neutral mean mesh with the largest z."""
    first, last = asset.parts["face"]
    return int(first + np.argmax(asset.neutral[first : last + 1, 2]))


def euler_to_matrix(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Head rotation in model space (Y up, face along +Z): Ry(yaw) @ Rx(pitch) @ Rz(roll).

    Positive yaw turns the face towards model +X (the subject's left), positive pitch tilts the
    face down (towards -Y), positive roll tilts the head towards the subject's left shoulder.
    """
    y, p, r = np.radians([yaw_deg, pitch_deg, roll_deg])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


def rotation_to_axis_angle(matrix: np.ndarray) -> np.ndarray:
    """[3, 3] rotation -> [3] axis-angle (radians), robust for every angle."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(np.asarray(matrix, float)).as_rotvec()


def intrinsics(lens_mm: float, width: int, height: int) -> dict:
    """Pinhole intrinsics of a centred camera with a 36 mm wide sensor (horizontal fit)."""
    fx = lens_mm / SENSOR_WIDTH_MM * width
    return {"fx": fx, "fy": fx, "cx": width / 2.0, "cy": height / 2.0, "width": int(width), "height": int(height)}


def project_points(points_model: np.ndarray, rotation: np.ndarray, translation: np.ndarray, intr: dict) -> np.ndarray:
    """[N, 3] model-space points (cm) -> [N, 2] pixel coordinates (see the module doc)."""
    cam = np.asarray(points_model, float) @ np.asarray(rotation, float).T + np.asarray(translation, float)
    z = cam[:, 2:3]
    return np.c_[intr["fx"] * cam[:, 0:1] / z + intr["cx"], intr["fy"] * cam[:, 1:2] / z + intr["cy"]]


ACTIVE_POOL = {  # expression families, (keys, probability weight); _L/_R pairs may fire together
    "blink": (["eyeBlink_L", "eyeBlink_R"], 3.0),
    "jaw": (["jawOpen", "jawLeft", "jawRight", "jawForward"], 3.0),
    "smile": (["mouthSmile_L", "mouthSmile_R"], 2.5),
    "mouth": (["mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight", "mouthRollLower", "mouthRollUpper",
               "mouthShrugLower", "mouthShrugUpper", "mouthClose", "mouthFrown_L", "mouthFrown_R",
               "mouthDimple_L", "mouthDimple_R", "mouthPress_L", "mouthPress_R", "mouthStretch_L",
               "mouthStretch_R", "mouthLowerDown_L", "mouthLowerDown_R", "mouthUpperUp_L", "mouthUpperUp_R"], 3.0),
    "brow": (["browDown_L", "browDown_R", "browInnerUp_L", "browInnerUp_R", "browOuterUp_L", "browOuterUp_R"], 2.0),
    "eye": (["eyeSquint_L", "eyeSquint_R", "eyeWide_L", "eyeWide_R", "eyeLookDown_L", "eyeLookDown_R",
             "eyeLookIn_L", "eyeLookIn_R", "eyeLookOut_L", "eyeLookOut_R", "eyeLookUp_L", "eyeLookUp_R"], 1.5),
    "cheek": (["cheekPuff_L", "cheekPuff_R", "cheekSquint_L", "cheekSquint_R", "noseSneer_L", "noseSneer_R"], 1.0),
}
EXCLUSIVE = [("jawLeft", "jawRight"), ("mouthLeft", "mouthRight")]


def sample_expression(names: list[str], rng: np.random.Generator, neutral_probability: float = 0.2) -> np.ndarray:
    """Sparse expression weights [E] in [0, 1]: neutral, or 1-4 keys (a family's _L/_R often together)."""
    weights = np.zeros(len(names))
    if rng.random() < neutral_probability:
        return weights
    families = list(ACTIVE_POOL)
    p = np.array([ACTIVE_POOL[f][1] for f in families])
    n_keys = int(rng.integers(1, 5))
    chosen: dict[str, float] = {}
    for _ in range(20):
        if len(chosen) >= n_keys:
            break
        keys = [k for k in ACTIVE_POOL[families[rng.choice(len(families), p=p / p.sum())]][0] if k in names]
        if not keys:
            continue
        key = keys[int(rng.integers(len(keys)))]
        w = float(rng.uniform(0.15, 1.0))
        if any(key in pair and (pair[0] in chosen or pair[1] in chosen) for pair in EXCLUSIVE):
            continue
        chosen[key] = w
        twin = key[:-1] + ("R" if key.endswith("L") else "L") if key[-2:] in ("_L", "_R") else None
        if twin and twin in names and len(chosen) < n_keys and rng.random() < 0.6:
            chosen[twin] = float(np.clip(w + rng.normal(0, 0.1), 0.05, 1.0))
    if "mouthClose" in chosen:  # closes the lips of an open jaw; alone it pushes the lips into the teeth
        chosen["jawOpen"] = max(chosen.get("jawOpen", 0.0), chosen["mouthClose"] + 0.1, 0.3)
        chosen["jawOpen"] = min(chosen["jawOpen"], 1.0)
    for key, w in chosen.items():
        weights[names.index(key)] = w
    return weights


@dataclass
class SampleSpec:
    """Everything random about one sample (geometry, camera, appearance)."""

    index: int
    identity: np.ndarray
    expression: np.ndarray
    yaw: float
    pitch: float
    roll: float
    lens_mm: float
    rotation: np.ndarray  # [3, 3] model -> OpenCV camera
    translation: np.ndarray  # [3] cm
    texture: str
    look: dict  # lighting, background, materials


def sample_spec(asset: HeadModelAsset, seed: int, index: int, textures: list[str]) -> SampleSpec:
    rng = np.random.default_rng([seed, index])
    identity = rng.standard_normal(asset.n_identity) * rng.uniform(0.8, 1.0)
    expression = sample_expression(asset.expression_names, rng)
    yaw, pitch, roll = rng.uniform(-35, 35), rng.uniform(-15, 15), rng.uniform(-10, 10)
    lens = float(np.exp(rng.uniform(np.log(35.0), np.log(85.0))))
    rotation = FACING @ euler_to_matrix(yaw, pitch, roll)

    verts = asset.vertices(identity, expression).astype(float)
    narrow = verts[slice(asset.parts["narrow_face"][0], asset.parts["narrow_face"][1] + 1)]
    face = verts[slice(asset.parts["face"][0], asset.parts["face"][1] + 1)]
    centre = 0.5 * (narrow.min(0) + narrow.max(0))
    face_width = float(np.ptp(narrow[:, 0]))
    intr = intrinsics(lens, 1000, 1000)  # framing is resolution-independent
    for _ in range(50):
        fraction = rng.uniform(0.28, 0.55)  # face width / image width
        depth = intr["fx"] * face_width / (fraction * intr["width"])
        offset = rng.uniform(-0.1, 0.1, 2) * 1000
        target = np.array([offset[0] / intr["fx"] * depth, offset[1] / intr["fy"] * depth, depth])
        translation = target - rotation @ centre
        uv = project_points(face, rotation, translation, intr)
        if uv.min() > 20 and uv.max() < 980:  # the whole face part inside the frame
            break
    texture = textures[int(rng.integers(len(textures)))] if textures else ""
    return SampleSpec(index, identity, expression, float(yaw), float(pitch), float(roll), lens, rotation,
                      translation, texture, _sample_look(rng))


def _sample_look(rng: np.random.Generator) -> dict:
    key_azimuth = rng.uniform(-75, 75)
    warm = rng.uniform(-1, 1)
    tint = np.array([1 + 0.12 * warm, 1.0, 1 - 0.12 * warm])
    bg_a = _muted_colour(rng)
    bg_b = np.clip(bg_a * rng.uniform(0.5, 1.5) + rng.normal(0, 0.08, 3), 0, 1)
    return {
        "key": {"azimuth_deg": float(key_azimuth), "elevation_deg": float(rng.uniform(-10, 60)),
                "distance_m": float(rng.uniform(0.8, 2.0)), "size_m": float(rng.uniform(0.2, 1.2)),
                "strength": float(np.exp(rng.uniform(np.log(0.6), np.log(1.6)))), "colour": (tint / tint.max()).tolist()},
        "fill": {"azimuth_deg": float(-np.sign(key_azimuth) * rng.uniform(20, 80)), "elevation_deg": float(rng.uniform(-15, 30)),
                 "distance_m": float(rng.uniform(1.0, 2.5)), "size_m": float(rng.uniform(0.5, 2.0)),
                 "ratio": float(rng.uniform(0.08, 0.45))},
        "world": {"colour": np.clip(rng.normal(0.5, 0.08, 3), 0.2, 0.8).tolist(), "strength": float(rng.uniform(0.15, 0.6))},
        "background": {"kind": str(rng.choice(["plain", "gradient"], p=[0.4, 0.6])), "a": bg_a.tolist(), "b": bg_b.tolist(),
                       "angle_deg": float(rng.uniform(0, 360))},
        "exposure_target": float(rng.uniform(0.40, 0.62)),  # sRGB median of the face pixels
        "skin": {"roughness": float(rng.uniform(0.45, 0.65)), "specular": float(rng.uniform(0.2, 0.45)),
                 "subsurface": float(rng.uniform(0.0, 0.15))},
        "iris": {"colour": IRIS_COLOURS[int(rng.integers(len(IRIS_COLOURS)))].tolist(),
                 "pupil": float(rng.uniform(0.075, 0.11))},
    }


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A wall-like background colour: any hue, low saturation, dark to bright."""
    import colorsys

    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.4), rng.uniform(0.12, 0.95)))


def sample_record(asset: HeadModelAsset, spec: SampleSpec, sizes: list[int]) -> dict:
    """The JSON ground truth of a sample."""
    verts = asset.vertices(spec.identity, spec.expression)
    intr = {str(s): intrinsics(spec.lens_mm, s, s) for s in sizes}
    nose = nose_tip_vertex(asset)
    lm_index = [int(i) for i in asset.landmarks68]
    return {
        "index": spec.index,
        "model": {"name": asset.name, "units": "cm", "axes": "Y up, face towards +Z", "n_vertices": asset.n_vertices},
        "identity": spec.identity.tolist(),
        "expression": {name: float(w) for name, w in zip(asset.expression_names, spec.expression)},
        "active_expressions": [n for n, w in zip(asset.expression_names, spec.expression) if w > 0],
        "rotation_matrix": spec.rotation.tolist(),
        "rotation": rotation_to_axis_angle(spec.rotation).tolist(),
        "translation": spec.translation.tolist(),
        "camera_convention": "OpenCV: x_cam = R @ x_model + t (cm); x right, y down, z forward; "
                             "u = fx*x/z + cx, v = fy*y/z + cy, image spans [0, W] x [0, H]",
        "head_pose_deg": {"yaw": spec.yaw, "pitch": spec.pitch, "roll": spec.roll,
                          "definition": "R = diag(1,-1,-1) @ Ry(yaw) @ Rx(pitch) @ Rz(roll) in model axes"},
        "focal_mm_equivalent": spec.lens_mm,
        "intrinsics": intr,
        "images": {str(s): f"{spec.index:04d}_{s}.png" for s in sizes},
        "nose_tip_vertex": nose,
        "landmarks68_2d": {str(s): project_points(verts[lm_index], spec.rotation, spec.translation, intr[str(s)]).round(3).tolist()
                           for s in sizes},
        "nose_tip_2d": {str(s): project_points(verts[[nose]], spec.rotation, spec.translation, intr[str(s)])[0].round(3).tolist()
                        for s in sizes},
        "texture": spec.texture,
        "look": spec.look,
    }


# ----------------------------------------------------------------------------- textures


def rasterize_uv_positions(asset: HeadModelAsset, material: str, size: int, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """Rest position (neutral mean mesh, cm) under every texel of one UDIM tile.

    Returns:
        positions [size, size, 3] float32 (image rows top = v 1) and covered [size, size] bool.
    """
    tri_mask = asset.triangle_material() == asset.material_names.index(material)
    tris = asset.triangles[tri_mask]
    uv = asset.uvs[asset.triangle_uvs[tri_mask]].astype(np.float64)  # [T, 3, 2]
    px = np.stack([(uv[..., 0] - tile) * size - 0.5, (1.0 - uv[..., 1]) * size - 0.5], -1)  # texel-centre coords
    pos3 = asset.neutral[tris].astype(np.float64)  # [T, 3, 3]
    positions = np.zeros((size, size, 3), np.float32)
    covered = np.zeros((size, size), bool)
    lo = np.floor(px.min(1)).astype(int)
    hi = np.ceil(px.max(1)).astype(int)
    extent = np.maximum(hi - lo + 1, 1).max(1)
    order = np.argsort(extent)
    for chunk in np.array_split(order, max(1, len(order) // 1024)):
        n = int(extent[chunk].max())
        grid = np.arange(n)
        gx = lo[chunk, 0, None, None] + grid[None, None, :]  # [C, 1, n]
        gy = lo[chunk, 1, None, None] + grid[None, :, None]  # [C, n, 1]
        a, b, c = px[chunk, 0], px[chunk, 1], px[chunk, 2]
        det = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
        det = np.where(np.abs(det) < 1e-12, 1e-12, det)[:, None, None]
        w0 = ((b[:, 1, None, None] - c[:, 1, None, None]) * (gx - c[:, 0, None, None])
              + (c[:, 0, None, None] - b[:, 0, None, None]) * (gy - c[:, 1, None, None])) / det
        w1 = ((c[:, 1, None, None] - a[:, 1, None, None]) * (gx - c[:, 0, None, None])
              + (a[:, 0, None, None] - c[:, 0, None, None]) * (gy - c[:, 1, None, None])) / det
        w2 = 1.0 - w0 - w1
        inside = (w0 >= -1e-6) & (w1 >= -1e-6) & (w2 >= -1e-6)
        inside &= (gx >= 0) & (gx < size) & (gy >= 0) & (gy < size)
        ci, yi, xi = np.nonzero(inside)
        bary = np.stack([w0[ci, yi, xi], w1[ci, yi, xi], w2[ci, yi, xi]], -1)
        p = np.einsum("nk,nkd->nd", bary, pos3[chunk][ci])
        ty, tx = gy[ci, yi, 0], gx[ci, 0, xi]
        positions[ty, tx] = p
        covered[ty, tx] = True
    return positions, covered


def _hash01(ix, iy, iz, seed):
    h = (ix.astype(np.uint64) * np.uint64(0x9E3779B185EBCA87) ^ iy.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
         ^ iz.astype(np.uint64) * np.uint64(0x165667B19E3779F9) ^ np.uint64(seed * 0x27D4EB2F165667C5 & 0xFFFFFFFFFFFFFFFF))
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xD6E8FEB86659FD93)
    h ^= h >> np.uint64(32)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def value_noise(points: np.ndarray, frequency, seed: int) -> np.ndarray:
    """Smooth 3D value noise in [0, 1] at [N, 3] points; frequency is a scalar or per axis."""
    q = np.asarray(points, np.float64) * np.asarray(frequency, np.float64)
    i0 = np.floor(q).astype(np.int64)
    f = q - i0
    f = f * f * (3 - 2 * f)
    with np.errstate(over="ignore"):
        out = np.zeros(len(q))
        for dx in (0, 1):
            for dy in (0, 1):
                for dz in (0, 1):
                    w = (f[:, 0] if dx else 1 - f[:, 0]) * (f[:, 1] if dy else 1 - f[:, 1]) * (f[:, 2] if dz else 1 - f[:, 2])
                    out += w * _hash01(i0[:, 0] + dx, i0[:, 1] + dy, i0[:, 2] + dz, seed)
    return out


def fbm(points: np.ndarray, frequency: float, seed: int, octaves: int = 4, anisotropy=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Fractal value noise, roughly zero-mean, amplitude about +-0.5."""
    total, amp, norm = np.zeros(len(points)), 1.0, 0.0
    for o in range(octaves):
        total += amp * (value_noise(points, np.asarray(anisotropy) * frequency * 2**o, seed + 101 * o) - 0.5)
        norm += amp
        amp *= 0.5
    return total / norm


def _smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0, 1)
    return t * t * (3 - 2 * t)


def _polyline_distance(p2: np.ndarray, line: np.ndarray, closed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Distance of [N, 2] points to a polyline [K, 2], and the arc-length parameter in [0, 1] of the closest point."""
    pts = np.vstack([line, line[:1]]) if closed else line
    seg_a, seg_b = pts[:-1], pts[1:]
    lengths = np.linalg.norm(seg_b - seg_a, axis=1)
    cum = np.r_[0, np.cumsum(lengths)]
    best = np.full(len(p2), np.inf)
    param = np.zeros(len(p2))
    for k, (a, b) in enumerate(zip(seg_a, seg_b)):
        ab = b - a
        t = np.clip(((p2 - a) @ ab) / max(ab @ ab, 1e-12), 0, 1)
        d = np.linalg.norm(p2 - (a + t[:, None] * ab), axis=1)
        better = d < best
        best[better] = d[better]
        param[better] = (cum[k] + t[better] * lengths[k]) / cum[-1]
    return best, param


def _inside_polygon(p2: np.ndarray, poly: np.ndarray) -> np.ndarray:
    inside = np.zeros(len(p2), bool)
    x, y = p2[:, 0], p2[:, 1]
    for (x0, y0), (x1, y1) in zip(poly, np.roll(poly, -1, axis=0)):
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xi = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < xi)
    return inside


def _lid_margin_points(asset: HeadModelAsset) -> np.ndarray:
    """Rest positions of the eyelid margins: M_Face boundary vertices around the eye openings."""
    face_mat = asset.material_names.index("M_Face")
    sizes = asset.face_sizes
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    edges = []
    for f in np.nonzero(asset.face_material == face_mat)[0]:
        corners = asset.face_vertices[starts[f] : starts[f] + sizes[f]]
        edges += [tuple(sorted((int(a), int(b)))) for a, b in zip(corners, np.roll(corners, -1))]
    uniq, counts = np.unique(np.array(edges), axis=0, return_counts=True)
    boundary = np.unique(uniq[counts == 1].ravel())
    lm = asset.neutral[asset.landmarks68]
    eyes = [lm[36:42].mean(0), lm[42:48].mean(0)]
    pts = asset.neutral[boundary]
    near = np.zeros(len(pts), bool)
    for c in eyes:
        near |= np.linalg.norm(pts - c, axis=1) < 2.2
    return pts[near]


def procedural_texture(asset: HeadModelAsset, seed: int, size: int | None = None) -> np.ndarray:
    """A skin texture in the bundle's atlas layout: [H, 2H, 3] uint8 (face left, back head right).

    Skin tone, redness and blotches, darker brows with hair strokes, lips, lash lines and
    (often) short hair on the scalp, all placed through the mesh's rest positions.
    """
    from scipy import ndimage
    from scipy.spatial import cKDTree

    rng = np.random.default_rng([seed, 7919])
    height = size or ATLAS_SIZE[1]
    atlas = np.zeros((height, height * ATLAS_TILES, 3), np.float64)
    lm = asset.neutral[asset.landmarks68].astype(np.float64)
    skin = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))] * rng.uniform(0.94, 1.04, 3)
    hair = HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))]
    brow_colour = np.minimum(hair, HAIR_COLOURS[3]) * rng.uniform(0.45, 0.8) if rng.random() < 0.8 else HAIR_COLOURS[0]
    has_hair = rng.random() < 0.7
    hairline = rng.uniform(10.5, 12.3)
    brow_strength = rng.uniform(0.55, 0.95)
    lip_strength = rng.uniform(0.45, 0.85)
    lip_tint = np.array([0.92, 0.62, 0.62]) * rng.uniform(0.92, 1.05, 3)
    margin_tree = cKDTree(_lid_margin_points(asset))
    nseed = int(rng.integers(1 << 30))

    for tile, material in enumerate(SKIN_MATERIALS):
        pos, covered = rasterize_uv_positions(asset, material, height, tile)
        p = pos[covered].astype(np.float64)
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        col = np.tile(skin, (len(p), 1))
        # Low-frequency tone: redder cheeks, nose and ears, darker under the eyes, blotches.
        red = np.exp(-(((np.abs(x) - 4.3) ** 2) / 6 + ((y + 0.5) ** 2) / 5)) * (z > 6)
        red += 0.8 * np.exp(-((x**2) / 2 + ((y - 0.3) ** 2) / 3)) * (z > 10)
        col *= 1 + 0.10 * rng.uniform(0.5, 1.5) * red[:, None] * np.array([0.25, -0.45, -0.45])
        under_eye = np.exp(-(((np.abs(x) - 3.1) ** 2) / 1.5 + ((y - 2.3) ** 2) / 0.4)) * (z > 7)
        col *= 1 - 0.07 * under_eye[:, None]
        col *= 1 + 0.08 * fbm(p, 0.6, nseed, 3)[:, None] + 0.05 * fbm(p, 3.0, nseed + 1, 3)[:, None]
        col *= 1 + 0.035 * (value_noise(p, 14.0, nseed + 2) - 0.5)[:, None] * np.array([1.0, 1.1, 1.2])
        if tile == 0:
            # Brows: a band just below the iBUG brow landmarks, thick at the inner end, with strokes.
            for idx in (list(range(21, 16, -1)), list(range(22, 27))):
                line = lm[idx, :2] - np.array([0.0, 0.22])
                d, s = _polyline_distance(p[:, :2], line)
                half = 0.42 * (1 - s) + 0.18 * s
                density = _smoothstep(half + 0.12, half - 0.08, d) * (z > 6.0)
                strokes = value_noise(p, np.array([2.5, 9.0, 9.0]), nseed + 3) * 0.6 + 0.4
                a = np.clip(density * strokes * brow_strength * 1.3, 0, 1)[:, None]
                col = col * (1 - a) + brow_colour * a
            # Lips inside the outer lip contour (iBUG 48-59), soft-edged.
            poly = lm[48:60, :2]
            inside = _inside_polygon(p[:, :2], poly)
            d, _ = _polyline_distance(p[:, :2], poly, closed=True)
            lips = np.where(inside, _smoothstep(0.0, 0.12, d), 0.0) * (z > 8.5)
            lips = (lips * lip_strength)[:, None]
            col = col * (1 - lips) + col * lip_tint * lips
            # Lash lines along the eyelid margins.
            dist, _ = margin_tree.query(p, k=1)
            lash = _smoothstep(0.18, 0.03, dist) * (z > 6.5)
            col *= (1 - 0.75 * lash)[:, None]
            # Nostril openings: dark where the nose surface turns underneath.
            nostril = np.exp(-(((np.abs(x) - 0.75) ** 2) / 0.08 + ((y + 0.85) ** 2) / 0.03)) * (z > 10.5)
            col *= (1 - 0.3 * np.clip(nostril, 0, 1))[:, None]
        if has_hair:
            ear_zone = np.exp(-(((np.abs(x) - 8.0) ** 2) / 4 + ((y - 1.0) ** 2) / 8 + ((z - 1.0) ** 2) / 8))
            line = np.interp(z, [-10, -4, 1, 5, 9, 14], [-6.5, -1.0, 5.5, 8.5, hairline, hairline])
            line += 0.4 * fbm(p, 0.8, nseed + 4, 2) + 3.0 * ear_zone
            cover = _smoothstep(line - 0.2, line + 0.5, y)[:, None]
            strands = 1 + 0.25 * (value_noise(p, np.array([12.0, 3.0, 12.0]), nseed + 5) - 0.5)
            col = col * (1 - cover) + (hair * strands[:, None]) * cover
        tile_img = np.zeros((height, height, 3))
        tile_img[covered] = np.clip(col, 0, 1)
        # Fill uncovered texels with the nearest covered one so bilinear filtering has no seams.
        _, nearest = ndimage.distance_transform_edt(~covered, return_indices=True)
        tile_img = tile_img[nearest[0], nearest[1]]
        atlas[:, tile * height : (tile + 1) * height] = tile_img
    return (np.clip(atlas, 0, 1) * 255 + 0.5).astype(np.uint8)


def ensure_procedural_textures(asset: HeadModelAsset, folder: Path, count: int, seed: int) -> list[str]:
    """Procedural atlas textures ``folder/procedural_KK.png`` (made once, then reused)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        path = folder / f"procedural_{seed}_{k:02d}.png"
        if not path.is_file():
            Image.fromarray(procedural_texture(asset, seed * 1000 + k)).save(path)
        paths.append(str(path))
    return paths


def collect_textures(items: list[str]) -> list[str]:
    """PNG paths from files and folders (folders: every ``texture.png`` below, else every PNG)."""
    out: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(path.rglob("texture.png")) or sorted(path.rglob("*.png"))
            out += [str(p.resolve()) for p in found]
        elif path.is_file():
            out.append(str(path.resolve()))
        else:
            raise SystemExit(f"{item}: no such texture file or folder")
    if items and not out:
        raise SystemExit(f"no PNG textures found in {items}")
    return out


# ----------------------------------------------------------------------------- Blender


@contextlib.contextmanager
def _quiet_stdout():
    """Silence Cycles' progress lines (written by C code straight to file descriptor 1)."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


class BlenderRenderer:
    """One Cycles scene with the ICT mesh; ``render`` re-poses, re-lights and re-textures it.

    The camera sits at the world origin looking down -Z (Blender's camera axes), so a point in
    OpenCV camera coordinates (cm) goes to world metres as diag(1, -1, -1) * 0.01.
    """

    def __init__(self, asset: HeadModelAsset, samples: int = 24, denoise: bool = True, threads: int = 0):
        import bpy

        self.bpy = bpy
        self.asset = asset
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene = bpy.context.scene
        self.scene = scene
        scene.render.engine = "CYCLES"
        cyc = scene.cycles
        cyc.device = "CPU"
        cyc.samples = samples
        cyc.use_adaptive_sampling = True
        cyc.adaptive_threshold = 0.02
        cyc.use_denoising = denoise
        if denoise:  # OIDN with albedo and normal guides; the "accurate" prefilter doubles the time
            cyc.denoiser = "OPENIMAGEDENOISE"
            cyc.denoising_input_passes = "RGB_ALBEDO_NORMAL"
            cyc.denoising_prefilter = "FAST"
        cyc.max_bounces = 4
        cyc.diffuse_bounces = 2
        cyc.glossy_bounces = 2
        cyc.transmission_bounces = 4
        cyc.transparent_max_bounces = 8
        cyc.caustics_reflective = cyc.caustics_refractive = False
        cyc.sample_clamp_indirect = 10.0
        if threads:
            scene.render.threads_mode = "FIXED"
            scene.render.threads = threads
        scene.render.film_transparent = True
        scene.render.resolution_percentage = 100
        scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
        scene.render.image_settings.file_format = "PNG"
        scene.render.image_settings.color_mode = "RGBA"
        scene.render.image_settings.color_depth = "8"
        scene.view_settings.view_transform = "Standard"
        scene.view_settings.look = "None"
        scene.view_settings.exposure = 0.0
        scene.render.use_persistent_data = True

        cam_data = bpy.data.cameras.new("camera")
        cam_data.sensor_fit = "HORIZONTAL"
        cam_data.sensor_width = SENSOR_WIDTH_MM
        cam_data.shift_x = cam_data.shift_y = 0.0
        cam_data.clip_start, cam_data.clip_end = 0.01, 100.0
        self.camera = bpy.data.objects.new("camera", cam_data)
        scene.collection.objects.link(self.camera)
        scene.camera = self.camera

        self.key = self._area_light("key")
        self.fill = self._area_light("fill")
        world = bpy.data.worlds.new("world")
        world.use_nodes = True
        scene.world = world
        self.world_bg = world.node_tree.nodes["Background"]

        self._build_mesh()
        self._build_materials()
        self._texture_images: dict[str, object] = {}

    def _area_light(self, name: str):
        light = self.bpy.data.lights.new(name, "AREA")
        light.shape = "DISK"
        obj = self.bpy.data.objects.new(name, light)
        self.scene.collection.objects.link(obj)
        return obj

    def _build_mesh(self) -> None:
        bpy, asset = self.bpy, self.asset
        names = asset.material_names
        hidden = {names.index(n) for n in HIDDEN_MATERIALS if n in names}
        sizes = asset.face_sizes.astype(int)
        starts = np.r_[0, np.cumsum(sizes)[:-1]]
        keep = np.array([m not in hidden for m in asset.face_material])
        # Sockets are back-head material in ICT but should not carry the (skin or hair) texture.
        mouth = asset.part_mask("mouth_socket")
        eyes = asset.part_mask("eye_sockets")
        slots = list(names) + ["X_MouthInside", "X_EyeSocket"]
        polys, loop_uv, mat_idx = [], [], []
        for f in np.nonzero(keep)[0]:
            corners = asset.face_vertices[starts[f] : starts[f] + sizes[f]]
            polys.append(corners.tolist())
            loop_uv.append(asset.face_uvs[starts[f] : starts[f] + sizes[f]])
            m = int(asset.face_material[f])
            if names[m] == "M_BackHead" and mouth[corners].all():
                m = len(names)
            elif names[m] == "M_BackHead" and eyes[corners].all():
                m = len(names) + 1
            mat_idx.append(m)
        mesh = bpy.data.meshes.new("head")
        mesh.from_pydata(asset.neutral.astype(float).tolist(), [], polys)
        loop_uv = np.concatenate(loop_uv)
        uv = asset.uvs[loop_uv].astype(np.float64)
        raw = mesh.uv_layers.new(name="UVMap")
        raw.uv.foreach_set("vector", (uv - np.floor(uv)).astype(np.float32).ravel())
        atlas = uv.copy()
        loop_mat = np.repeat(np.array(mat_idx), [len(p) for p in polys])
        skin = np.isin(loop_mat, [names.index(n) for n in SKIN_MATERIALS])
        atlas[skin, 0] = uv[skin, 0] / ATLAS_TILES
        atlas[~skin] = uv[~skin] - np.floor(uv[~skin])
        at = mesh.uv_layers.new(name="atlas")
        at.uv.foreach_set("vector", atlas.astype(np.float32).ravel())
        mesh.polygons.foreach_set("material_index", np.array(mat_idx, np.int32))
        mesh.polygons.foreach_set("use_smooth", np.ones(len(polys), bool))
        mesh.update()
        self.mesh = mesh
        self.slots = slots
        self.obj = bpy.data.objects.new("head", mesh)
        self.scene.collection.objects.link(self.obj)

    def _principled(self, name: str, colour, roughness: float, specular: float = 0.5):
        mat = self.bpy.data.materials.new(name)
        mat.use_nodes = True
        bsdf = mat.node_tree.nodes["Principled BSDF"]
        bsdf.inputs["Base Color"].default_value = (*colour, 1.0)
        bsdf.inputs["Roughness"].default_value = roughness
        bsdf.inputs["Specular IOR Level"].default_value = specular
        return mat, bsdf

    def _uv_radius(self, tree):
        nodes, links = tree.nodes, tree.links
        uvnode = nodes.new("ShaderNodeUVMap")
        uvnode.uv_map = "UVMap"
        sub = nodes.new("ShaderNodeVectorMath")
        sub.operation = "SUBTRACT"
        sub.inputs[1].default_value = (0.5, 0.5, 0.0)
        length = nodes.new("ShaderNodeVectorMath")
        length.operation = "LENGTH"
        links.new(uvnode.outputs["UV"], sub.inputs[0])
        links.new(sub.outputs["Vector"], length.inputs[0])
        return length.outputs["Value"]

    def _build_materials(self) -> None:
        bpy = self.bpy
        mats = {}
        # Skin: the atlas texture (set per sample) through the "atlas" uv map.
        skin, bsdf = self._principled("skin", (0.8, 0.6, 0.5), 0.5)
        tree = skin.node_tree
        uvnode = tree.nodes.new("ShaderNodeUVMap")
        uvnode.uv_map = "atlas"
        tex = tree.nodes.new("ShaderNodeTexImage")
        tex.interpolation = "Linear"
        tree.links.new(uvnode.outputs["UV"], tex.inputs["Vector"])
        tree.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
        bsdf.inputs["Subsurface Radius"].default_value = (1.0, 0.35, 0.2)
        bsdf.inputs["Subsurface Scale"].default_value = 0.002  # metres
        self.skin_tex, self.skin_bsdf = tex, bsdf
        mats["M_Face"] = mats["M_BackHead"] = skin
        mats["M_GumsTongue"] = self._principled("gums", (0.55, 0.18, 0.18), 0.45)[0]
        mats["M_Teeth"] = self._principled("teeth", (0.80, 0.76, 0.66), 0.35)[0]
        mats["X_MouthInside"] = self._principled("mouth_inside", (0.22, 0.05, 0.05), 0.6)[0]
        mats["X_EyeSocket"] = self._principled("eye_socket", (0.25, 0.12, 0.10), 0.6)[0]

        # Outer eyeball shell: clear cornea in the middle, sclera around it.
        sclera = bpy.data.materials.new("sclera")
        sclera.use_nodes = True
        tree = sclera.node_tree
        out = tree.nodes["Material Output"]
        white = tree.nodes["Principled BSDF"]
        white.inputs["Base Color"].default_value = (0.78, 0.74, 0.70, 1.0)
        white.inputs["Roughness"].default_value = 0.25
        cornea = tree.nodes.new("ShaderNodeBsdfTransparent")
        gloss = tree.nodes.new("ShaderNodeBsdfGlossy")
        gloss.inputs["Roughness"].default_value = 0.05
        glass = tree.nodes.new("ShaderNodeMixShader")
        glass.inputs["Fac"].default_value = 0.06
        tree.links.new(cornea.outputs[0], glass.inputs[1])
        tree.links.new(gloss.outputs[0], glass.inputs[2])
        ramp = tree.nodes.new("ShaderNodeValToRGB")
        ramp.color_ramp.elements[0].position = CORNEA_UV_RADIUS - 0.006
        ramp.color_ramp.elements[0].color = (0, 0, 0, 1)
        ramp.color_ramp.elements[1].position = CORNEA_UV_RADIUS + 0.008
        ramp.color_ramp.elements[1].color = (1, 1, 1, 1)
        tree.links.new(self._uv_radius(tree), ramp.inputs["Fac"])
        mix = tree.nodes.new("ShaderNodeMixShader")
        tree.links.new(ramp.outputs["Color"], mix.inputs["Fac"])
        tree.links.new(glass.outputs[0], mix.inputs[1])
        tree.links.new(white.outputs[0], mix.inputs[2])
        tree.links.new(mix.outputs[0], out.inputs["Surface"])
        mats["M_ScleraLeft"] = mats["M_ScleraRight"] = sclera

        # Inner eyeball shell: pupil, iris (colour set per sample) and a dark limbal ring.
        iris = bpy.data.materials.new("iris")
        iris.use_nodes = True
        tree = iris.node_tree
        bsdf = tree.nodes["Principled BSDF"]
        bsdf.inputs["Roughness"].default_value = 0.4
        ramp = tree.nodes.new("ShaderNodeValToRGB")
        el = ramp.color_ramp.elements
        el[0].position, el[0].color = 0.0, (0.01, 0.01, 0.01, 1)
        el[1].position = 1.0
        el[1].color = (0.75, 0.72, 0.68, 1)
        for _ in range(4):
            el.new(0.5)
        radius = self._uv_radius(tree)
        streaks = tree.nodes.new("ShaderNodeTexNoise")
        streaks.inputs["Scale"].default_value = 40.0
        mul = tree.nodes.new("ShaderNodeMixRGB")
        mul.blend_type = "MULTIPLY"
        mul.inputs["Fac"].default_value = 0.35
        tree.links.new(radius, ramp.inputs["Fac"])
        tree.links.new(ramp.outputs["Color"], mul.inputs[1])
        tree.links.new(streaks.outputs["Color"], mul.inputs[2])
        tree.links.new(mul.outputs["Color"], bsdf.inputs["Base Color"])
        self.iris_ramp = ramp
        mats["M_IrisLeft"] = mats["M_IrisRight"] = iris
        for name in HIDDEN_MATERIALS:
            mats[name] = self._principled(f"hidden_{name}", (0, 0, 0), 1.0)[0]
        for slot in self.slots:
            self.obj.data.materials.append(mats[slot])

    def _texture(self, path: str):
        if path not in self._texture_images:
            img = self.bpy.data.images.load(path, check_existing=True)
            img.colorspace_settings.name = "sRGB"
            self._texture_images[path] = img
        return self._texture_images[path]

    def set_sample(self, spec: SampleSpec, vertices_model: np.ndarray) -> None:
        """Pose the mesh (model cm -> world m), set texture, eyes, lights and world."""
        cam = vertices_model.astype(np.float64) @ spec.rotation.T + spec.translation
        world = cam * np.array([0.01, -0.01, -0.01])
        self.mesh.vertices.foreach_set("co", world.astype(np.float32).ravel())
        self.mesh.update()
        self.camera.data.lens = spec.lens_mm
        look = spec.look
        self.skin_tex.image = self._texture(spec.texture)
        self.skin_bsdf.inputs["Roughness"].default_value = look["skin"]["roughness"]
        self.skin_bsdf.inputs["Specular IOR Level"].default_value = look["skin"]["specular"]
        self.skin_bsdf.inputs["Subsurface Weight"].default_value = look["skin"]["subsurface"]
        iris = look["iris"]
        el = self.iris_ramp.color_ramp.elements
        c = np.array(iris["colour"]) ** 2.2  # sRGB-ish to linear
        stops = [(0.0, (0.005,) * 3), (iris["pupil"], (0.005,) * 3), (iris["pupil"] + 0.02, tuple(c * 0.7)),
                 (IRIS_UV_RADIUS - 0.07, tuple(c)), (IRIS_UV_RADIUS - 0.01, tuple(c * 0.35)),
                 (IRIS_UV_RADIUS + 0.01, (0.75, 0.72, 0.68))]
        for e, (pos, col) in zip(el, stops):
            e.position = pos
            e.color = (*col, 1.0)

        centre = world[slice(*self._face_range())].mean(0)
        for obj, params, energy_scale in ((self.key, look["key"], 1.0), (self.fill, look["fill"], look["fill"]["ratio"])):
            az, el_ = math.radians(params["azimuth_deg"]), math.radians(params["elevation_deg"])
            direction = np.array([math.sin(az) * math.cos(el_), math.sin(el_), math.cos(az) * math.cos(el_)])
            obj.location = tuple(centre + params["distance_m"] * direction)
            from mathutils import Vector

            obj.rotation_euler = Vector(tuple(-direction)).to_track_quat("-Z", "Y").to_euler()
            obj.data.size = params["size_m"]
            strength = look["key"]["strength"] * energy_scale
            # Irradiance at the head ~ power / distance^2: keep the exposure about constant.
            obj.data.energy = 30.0 * strength * params["distance_m"] ** 2
            obj.data.color = tuple(look["key"]["colour"]) if obj is self.key else (1.0, 1.0, 1.0)
        self.world_bg.inputs["Color"].default_value = (*look["world"]["colour"], 1.0)
        self.world_bg.inputs["Strength"].default_value = look["world"]["strength"]
        self.scene.view_settings.exposure = self._auto_exposure(spec, cam, look["exposure_target"])

    def _auto_exposure(self, spec: SampleSpec, cam_points: np.ndarray, target_srgb: float, size: int = 96) -> float:
        """Exposure (stops) that puts the median face pixel at ``target_srgb``, from a tiny preview."""
        scene, cyc = self.scene, self.scene.cycles
        first, last = self._face_range()
        intr = intrinsics(spec.lens_mm, size, size)
        face = cam_points[first:last]
        uv = np.c_[intr["fx"] * face[:, 0] / face[:, 2] + intr["cx"], intr["fy"] * face[:, 1] / face[:, 2] + intr["cy"]]
        lo, hi = np.clip(np.floor(uv.min(0)).astype(int), 0, size), np.clip(np.ceil(uv.max(0)).astype(int), 0, size)
        settings = scene.render.image_settings
        saved = (cyc.samples, cyc.use_denoising, settings.file_format, settings.color_depth)
        cyc.samples, cyc.use_denoising = 4, False
        settings.file_format, settings.color_depth = "OPEN_EXR", "16"  # linear scene values
        scene.render.resolution_x = scene.render.resolution_y = size
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            scene.render.filepath = str(Path(tmp) / "preview.exr")
            with _quiet_stdout():
                self.bpy.ops.render.render(write_still=True)
            img = self.bpy.data.images.load(scene.render.filepath)
            pixels = np.empty(size * size * 4, np.float32)
            img.pixels.foreach_get(pixels)
            self.bpy.data.images.remove(img)
        cyc.samples, cyc.use_denoising, settings.file_format, settings.color_depth = saved
        rgba = pixels.reshape(size, size, 4)[::-1].astype(np.float64)  # Blender's rows run bottom-up
        lin = rgba[..., :3]
        lum = lin @ np.array([0.2126, 0.7152, 0.0722])
        mask = np.zeros(lum.shape, bool)
        mask[lo[1] : hi[1], lo[0] : hi[0]] = True
        mask &= rgba[..., 3] > 0.99
        if mask.sum() < 10:
            return 0.0
        median = max(float(np.median(lum[mask])), 1e-6)
        target = ((target_srgb + 0.055) / 1.055) ** 2.4
        return float(np.clip(np.log2(target / median), -6, 6))

    def _face_range(self) -> tuple[int, int]:
        first, last = self.asset.parts["narrow_face"]
        return first, last + 1

    def render(self, width: int, height: int, path: Path) -> np.ndarray:
        """Render the current sample; returns [H, W, 4] uint8 RGBA (straight alpha)."""
        scene = self.scene
        scene.render.resolution_x, scene.render.resolution_y = int(width), int(height)
        tmp = path.with_name(path.stem + ".rgba.png")
        scene.render.filepath = str(tmp)
        with _quiet_stdout():
            self.bpy.ops.render.render(write_still=True)
        rgba = np.asarray(Image.open(tmp).convert("RGBA"))
        tmp.unlink()
        return rgba


def background_image(look: dict, width: int, height: int) -> np.ndarray:
    """[H, W, 3] float in [0, 1]: a plain colour or a linear gradient."""
    bg = look["background"]
    a, b = np.array(bg["a"]), np.array(bg["b"])
    if bg["kind"] == "plain":
        return np.broadcast_to(a, (height, width, 3)).copy()
    ang = math.radians(bg["angle_deg"])
    yy, xx = np.mgrid[0:height, 0:width]
    t = ((xx / max(width - 1, 1) - 0.5) * math.cos(ang) + (yy / max(height - 1, 1) - 0.5) * math.sin(ang)) / math.sqrt(0.5) + 0.5
    t = np.clip(t, 0, 1)[..., None]
    return a * (1 - t) + b * t


def composite(rgba: np.ndarray, look: dict) -> np.ndarray:
    h, w = rgba.shape[:2]
    alpha = rgba[..., 3:4].astype(np.float64) / 255.0
    out = rgba[..., :3] / 255.0 * alpha + background_image(look, w, h) * (1 - alpha)
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------- generation


def generate(asset: HeadModelAsset, out: Path, count: int, sizes: list[int], seed: int = 0, textures: list[str] | None = None,
             samples: int = 24, start: int = 0, force: bool = False, n_procedural: int = 8, command: str | None = None,
             log=print) -> dict:
    """Render ``count`` samples into ``out``; returns the manifest (also written as dataset.json)."""
    out.mkdir(parents=True, exist_ok=True)
    textures = list(textures or [])
    procedural = not textures
    if procedural:
        t0 = time.perf_counter()
        textures = ensure_procedural_textures(asset, out / "textures", n_procedural, seed)
        log(f"procedural textures ready ({time.perf_counter() - t0:.1f} s): {out / 'textures'}")
    renderer = None
    times: dict[str, list[float]] = {str(s): [] for s in sizes}
    for index in range(start, start + count):
        spec = sample_spec(asset, seed, index, textures)
        record = sample_record(asset, spec, sizes)
        json_path = out / f"{index:04d}.json"
        images = [out / record["images"][str(s)] for s in sizes]
        if not force and json_path.is_file() and all(p.is_file() for p in images):
            continue
        if renderer is None:
            renderer = BlenderRenderer(asset, samples=samples)
        renderer.set_sample(spec, asset.vertices(spec.identity, spec.expression))
        record["render_seconds"], record["render_cpu_seconds"] = {}, {}
        for size, path in zip(sizes, images):
            t0, c0 = time.perf_counter(), time.process_time()
            rgba = renderer.render(size, size, path)
            Image.fromarray(composite(rgba, spec.look)).save(path)
            dt = time.perf_counter() - t0
            record["render_seconds"][str(size)] = round(dt, 3)
            record["render_cpu_seconds"][str(size)] = round(time.process_time() - c0, 3)
            times[str(size)].append(dt)
        if procedural:
            record["texture"] = os.path.relpath(spec.texture, out)
        json_path.write_text(json.dumps(record, indent=1))
        log(f"{index:04d}: " + ", ".join(f"{s}px {record['render_seconds'][str(s)]:.1f} s" for s in sizes)
            + f"  yaw {spec.yaw:+.0f} pitch {spec.pitch:+.0f} roll {spec.roll:+.0f}  {spec.lens_mm:.0f} mm  "
            + (", ".join(record["active_expressions"]) or "neutral"))
    manifest = {
        "command": command,
        "seed": seed, "sizes": sizes, "samples_per_pixel": samples, "renderer": _renderer_name(),
        "textures": "procedural" if procedural else textures,
        "samples": sorted(p.stem for p in out.glob("[0-9][0-9][0-9][0-9].json")),
        "render_seconds_mean_this_run": {s: (float(np.mean(t)) if t else None) for s, t in times.items()},
        "conventions": __doc__.split("Per sample")[1].strip() if __doc__ else "",
    }
    old = out / "dataset.json"
    if old.is_file() and manifest["command"] is None:
        manifest["command"] = json.loads(old.read_text()).get("command")
    old.write_text(json.dumps(manifest, indent=1))
    return manifest


def _renderer_name() -> str:
    try:
        import bpy

        return f"Blender {bpy.app.version_string} Cycles (CPU)"
    except ImportError:
        return "unavailable"


# ----------------------------------------------------------------------------- verification


def load_sample(json_path: Path) -> dict:
    return json.loads(Path(json_path).read_text())


def mediapipe_landmarks(rgb: np.ndarray, face_mesh) -> np.ndarray | None:
    """[478, 2] pixel coordinates (continuous, image spans [0, W]) or None if no face."""
    result = face_mesh.process(np.ascontiguousarray(rgb))
    if not result.multi_face_landmarks:
        return None
    h, w = rgb.shape[:2]
    return np.array([[p.x * w, p.y * h] for p in result.multi_face_landmarks[0].landmark])


def verify(out: Path, overlays: int = 6, log=print) -> dict:
    """MediaPipe face-mesh on every image: detection rate, and the distance between its nose tip
    (index 1) and eye corners and the projected ground-truth vertices, in pixels and in % of the
    projected outer-eye-corner distance. Writes ``verification.json`` and debug overlays."""
    import mediapipe as mp

    face_mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1)
    rows = []
    debug = out / "debug"
    debug.mkdir(exist_ok=True)
    for json_path in sorted(out.glob("[0-9][0-9][0-9][0-9].json")):
        rec = load_sample(json_path)
        for size, name in rec["images"].items():
            img_path = out / name
            if not img_path.is_file():
                continue
            rgb = np.asarray(Image.open(img_path).convert("RGB"))
            mp_pts = mediapipe_landmarks(rgb, face_mesh)
            gt68 = np.array(rec["landmarks68_2d"][size])
            nose = np.array(rec["nose_tip_2d"][size])
            iod = float(np.linalg.norm(gt68[36] - gt68[45]))
            row = {"sample": json_path.stem, "size": int(size), "detected": mp_pts is not None, "iod_px": iod}
            if mp_pts is not None:
                for key, (mp_i, ibug) in MEDIAPIPE_CHECK.items():
                    gt = nose if ibug is None else gt68[ibug]
                    err = float(np.linalg.norm(mp_pts[mp_i] - gt))
                    row[f"{key}_px"] = err
                    row[f"{key}_pct_iod"] = 100 * err / iod
            rows.append(row)
            if int(rec["index"]) < overlays:
                _overlay(rgb, gt68, nose, mp_pts).save(debug / f"{json_path.stem}_{size}_overlay.png")
    face_mesh.close()
    summary = {"images": len(rows), "detected": sum(r["detected"] for r in rows)}
    summary["detection_rate"] = summary["detected"] / max(len(rows), 1)
    by_size = {}
    for size in sorted({r["size"] for r in rows}):
        rs = [r for r in rows if r["size"] == size]
        det = [r for r in rs if r["detected"]]
        by_size[str(size)] = {
            "images": len(rs), "detection_rate": len(det) / len(rs),
            **{f"{k}_median_px": float(np.median([r[f"{k}_px"] for r in det])) if det else None for k in MEDIAPIPE_CHECK},
            **{f"{k}_median_pct_iod": float(np.median([r[f"{k}_pct_iod"] for r in det])) if det else None for k in MEDIAPIPE_CHECK},
        }
    summary["by_size"] = by_size
    nose_pct = [r["nose_tip_pct_iod"] for r in rows if r["detected"]]
    # A wrong axis or a flipped image puts the projected nose tip tens of % of the eye distance away.
    # MediaPipe's point 1 sits about 5 % of the eye distance below ICT's most forward nose vertex
    # (its point 4 about 2.5 % above); eye corners agree to 1-4 %.
    eye_pct = [r[f"{k}_pct_iod"] for r in rows if r["detected"] for k in MEDIAPIPE_CHECK if k != "nose_tip"]
    summary["nose_tip_median_pct_iod"] = float(np.median(nose_pct)) if nose_pct else None
    summary["eye_corners_median_pct_iod"] = float(np.median(eye_pct)) if eye_pct else None
    summary["convention_ok"] = bool(nose_pct) and summary["nose_tip_median_pct_iod"] < 10.0 and summary["eye_corners_median_pct_iod"] < 6.0
    (out / "verification.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    log(json.dumps(summary, indent=1))
    return summary


def _overlay(rgb: np.ndarray, gt68: np.ndarray, nose: np.ndarray, mp_pts: np.ndarray | None) -> Image.Image:
    img = Image.fromarray(rgb).convert("RGB")
    draw = ImageDraw.Draw(img)
    r = max(1.5, rgb.shape[0] / 300)
    if mp_pts is not None:
        for x, y in mp_pts[:468:3]:
            draw.point((x, y), fill=(255, 60, 60))
        for mp_i, _ in MEDIAPIPE_CHECK.values():
            x, y = mp_pts[mp_i]
            draw.rectangle((x - r, y - r, x + r, y + r), outline=(255, 0, 0))
    for x, y in gt68:
        draw.ellipse((x - r, y - r, x + r, y + r), outline=(0, 255, 0))
    x, y = nose
    draw.line((x - 3 * r, y, x + 3 * r, y), fill=(0, 255, 255))
    draw.line((x, y - 3 * r, x, y + 3 * r), fill=(0, 255, 255))
    return img


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/synthetic"))
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--start", type=int, default=0, help="index of the first sample")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--textures", nargs="*", default=[], help="atlas PNGs or folders (texture.png files); default: procedural")
    parser.add_argument("--samples", type=int, default=24, help="Cycles samples per pixel (denoised)")
    parser.add_argument("--force", action="store_true", help="re-render samples that already exist")
    parser.add_argument("--verify", action="store_true", help="run the MediaPipe check after rendering")
    parser.add_argument("--verify-only", action="store_true", help="only run the MediaPipe check on --out")
    args = parser.parse_args(argv)

    if not args.verify_only:
        from backend.headmodel.ict_source import load_ict

        asset = load_ict(progress=False)
        textures = collect_textures(args.textures)
        manifest = generate(asset, args.out, args.count, args.sizes, seed=args.seed, textures=textures,
                            samples=args.samples, start=args.start, force=args.force,
                            command="python -m bench.synthetic " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)))
        print(f"{len(manifest['samples'])} samples in {args.out}; mean render seconds per image "
              f"{manifest['render_seconds_mean_this_run']}")
    if args.verify or args.verify_only:
        summary = verify(args.out)
        if not summary["convention_ok"]:
            print("convention check FAILED: projected ground truth does not match MediaPipe", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
