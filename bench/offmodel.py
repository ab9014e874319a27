"""Ground-truth heads outside the morphable model's span, and the best the model can do on them.

A real face is not a mix of ICT's 100 identity modes, so a fit can look perfect on renders of
in-model heads while failing people. ``off_model_displacement`` adds a few smooth bumps (2-5 cm
radius) along the skin's normals, scaled to ``rms_mm`` over the face; eyeballs, teeth and the
mouth's inside stay put (the bumps fade out near the eyeballs so the lids never cut into them).
``model_projection`` is the ground truth projected onto the model's span (least squares over the
identity modes after rigid alignment, no prior): the floor any fit of this model can reach.

Everything is plain numpy in the asset's model space (cm, Y up, face towards +Z).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.spatial import cKDTree

from backend.bundle.gltf_writer import vertex_normals
from backend.fitting.geometry import umeyama
from backend.headmodel.asset import HeadModelAsset

# Parts a bump may move: the skin and what sits on it (lashes, the eye's wet line and blend).
MOVABLE_PARTS = ("face", "head_neck", "eye_sockets", "lacrimal_fluid", "eye_blend", "eye_occlusion", "eyelashes")
# Parts that move rigidly with the nearest skin: the mouth's inside, so lips never open onto the teeth.
FOLLOWING_PARTS = ("mouth_socket", "gums_tongue", "teeth")
EYE_CLEARANCE_CM = (1.6, 2.6)
BUMP_TAG = 0xB0B  # in each head's bump seed: bumps never share a stream with the head's other randomness  # bump weight 0 within the first distance of an eyeball centre, 1 beyond the second


@dataclass
class Bumps:
    """centres: [K, 3] cm (on the neutral mean head); radii: [K] cm; amplitudes: [K] (relative, signed);
    scale: cm per unit amplitude, set so the face's RMS displacement is the requested one."""

    centres: np.ndarray
    radii: np.ndarray
    amplitudes: np.ndarray
    scale: float

    def to_json(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}

    @staticmethod
    def from_json(data: dict) -> "Bumps":
        return Bumps(np.asarray(data["centres"], float), np.asarray(data["radii"], float),
                     np.asarray(data["amplitudes"], float), float(data["scale"]))


def _part_slice(asset: HeadModelAsset, name: str) -> slice:
    first, last = asset.parts[name]
    return slice(first, last + 1)


def draw_bumps(asset: HeadModelAsset, rng: np.random.Generator, rms_mm: float = 2.0,
               count: tuple[int, int] = (4, 8), radius_cm: tuple[float, float] = (2.0, 5.0)) -> Bumps:
    """Random bumps centred on face and head vertices of the mean head, scaled to ``rms_mm``."""
    n = int(rng.integers(count[0], count[1] + 1))
    face = _part_slice(asset, "face")
    pool = np.r_[np.arange(asset.n_vertices)[face], np.arange(asset.n_vertices)[_part_slice(asset, "head_neck")]]
    # Two thirds of the bumps on the face itself: that is where the metric looks.
    on_face = rng.random(n) < 0.67
    ids = np.where(on_face, rng.integers(face.start, face.stop, n), pool[rng.integers(len(pool), size=n)])
    bumps = Bumps(asset.neutral[ids].astype(float), rng.uniform(*radius_cm, n), rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 1.0, n), 1.0)
    field = _displacement(asset, bumps, asset.neutral.astype(float))
    rms_cm = float(np.sqrt(np.mean(np.sum(field[face] ** 2, axis=1))))
    bumps.scale = (rms_mm / 10.0) / max(rms_cm, 1e-9)
    return bumps


def off_model_displacement(asset: HeadModelAsset, bumps: Bumps, identity: np.ndarray) -> np.ndarray:
    """[V, 3] cm to add to the head with ``identity`` (along that head's neutral normals)."""
    return _displacement(asset, bumps, asset.vertices(identity).astype(float))


def _displacement(asset: HeadModelAsset, bumps: Bumps, verts: np.ndarray) -> np.ndarray:
    ref = asset.neutral.astype(float)
    normals = _smooth_normals(vertex_normals(verts, asset.triangles), ref)  # bumps live on the mean head so that they follow the identity
    d2 = ((ref[:, None, :] - bumps.centres[None]) ** 2).sum(-1)  # [V, K]
    height = (bumps.amplitudes * np.exp(-0.5 * d2 / bumps.radii**2)).sum(1) * bumps.scale  # [V] cm
    movable = np.zeros(asset.n_vertices)
    for name in MOVABLE_PARTS:
        movable[_part_slice(asset, name)] = 1.0
    for eye in ("eyeball_left", "eyeball_right"):
        centre = ref[_part_slice(asset, eye)].mean(0)
        dist = np.linalg.norm(ref - centre, axis=1)
        lo, hi = EYE_CLEARANCE_CM
        movable *= np.clip((dist - lo) / (hi - lo), 0.0, 1.0) ** 2 * (3 - 2 * np.clip((dist - lo) / (hi - lo), 0.0, 1.0))
    field = normals * (height * movable)[:, None]
    skin = np.arange(*_part_slice(asset, "face").indices(asset.n_vertices))
    for name in FOLLOWING_PARTS:
        part = _part_slice(asset, name)
        _, nearest = cKDTree(ref[skin]).query(ref[part])
        field[part] = field[skin[nearest]]
    return field


def _smooth_normals(normals: np.ndarray, ref: np.ndarray, radius_cm: float = 1.5) -> np.ndarray:
    """[V, 3] normals averaged over ``radius_cm``: across the lips' seam the raw normals point up and
    down, and bumps along them would open the mouth; the smoothed ones point out of the face."""
    tree = cKDTree(ref)
    pairs = tree.query_pairs(radius_cm, output_type="ndarray")
    summed = normals.copy()
    np.add.at(summed, pairs[:, 0], normals[pairs[:, 1]])
    np.add.at(summed, pairs[:, 1], normals[pairs[:, 0]])
    return summed / np.maximum(np.linalg.norm(summed, axis=1, keepdims=True), 1e-9)


def model_projection(asset: HeadModelAsset, target_cm: np.ndarray, region: slice | None = None,
                     iterations: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The identity whose neutral mesh best matches ``target_cm`` [V, 3] over ``region`` (least
    squares, rigid alignment alternated with the linear solve, no prior).

    Returns identity [I] and the aligned projected mesh [V, 3] in the target's frame."""
    region = region or _part_slice(asset, "face")
    basis = asset.identity_basis.astype(float)  # [I, V, 3]
    mean = asset.neutral.astype(float)
    identity = np.zeros(asset.n_identity)
    rot, t = np.eye(3), np.zeros(3)
    for _ in range(iterations):
        # Bring the target into model space with the current alignment, then solve for identity.
        local = (target_cm[region] - t) @ rot  # inverse of x -> R x + t
        a = basis[:, region].reshape(len(basis), -1).T  # [3R, I]
        identity = np.linalg.lstsq(a, (local - mean[region]).ravel(), rcond=None)[0]
        fitted = mean + np.tensordot(identity, basis, axes=1)
        _, rot, t = umeyama(fitted[region], target_cm[region])
        t = target_cm[region].mean(0) - rot @ fitted[region].mean(0)
    fitted = mean + np.tensordot(identity, basis, axes=1)
    return identity, fitted @ rot.T + t
