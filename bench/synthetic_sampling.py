"""Random samples of the synthetic benchmark and their ground truth (``python -m bench.synthetic``).

The random identity, sparse expression, head pose, camera (focal length, framing) and look
(lights, background, skin and iris parameters) of one sample (``sample_spec``), and its JSON
ground-truth record (``sample_record``), with the camera helpers they use: ``euler_to_matrix``,
``intrinsics``, ``project_points``. Conventions are documented in ``bench.synthetic``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from backend.fitting.geometry import matrix_to_axis_angle

from backend.headmodel.asset import HeadModelAsset

SENSOR_WIDTH_MM = 36.0  # full-frame: "35 mm equivalent" focal lengths
# OpenCV camera <- model rotation of a head looking straight into the camera (180 deg about x).
FACING = np.diag([1.0, -1.0, -1.0])
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
    face down (towards -Y), positive roll tips the top of the head towards model -X (the subject's
    right shoulder).
    """
    y, p, r = np.radians([yaw_deg, pitch_deg, roll_deg])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


def rotation_to_axis_angle(matrix: np.ndarray) -> np.ndarray:
    """[3, 3] rotation -> [3] axis-angle (radians), robust for every angle."""
    return matrix_to_axis_angle(matrix)


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
