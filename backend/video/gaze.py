"""Eye gaze from MediaPipe's iris centres, and the ARKit ``eyeLook*`` weights it implies.

ICT's ``eyeLook*`` shapes move the lids around the eye but not the eyeballs, so the lid landmarks
cannot tell where an eye looks. The iris can: each eyeball is rotated about its centre (yaw, then
pitch, in the head's frame) until the iris centre projects onto the detected one. Angles map to
weights linearly up to the eyes' typical range of motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.headmodel.asset import HeadModelAsset
from backend.video.frame_select import gap_iod

RIGHT_IRIS, LEFT_IRIS = 468, 473  # MediaPipe: the subject's right eye is on the image's left


@dataclass
class GazeRange:
    """Angles (degrees) that map to weight 1 for each ``eyeLook*`` direction."""

    horizontal: float = 30.0
    up: float = 25.0
    down: float = 25.0


@dataclass
class EyeModel:
    """Per eye (0: subject's left, 1: right), model space (cm): centre [2, 3] of the eyeball and
    iris [2, 3], the rest position of the iris centre (looking down +z)."""

    centre: np.ndarray
    iris: np.ndarray

    @classmethod
    def from_asset(cls, asset: HeadModelAsset, identity: np.ndarray, landmark_points: np.ndarray) -> EyeModel:
        """Eyeball centres from the identity's eyeball vertices; the rest iris centres are the
        model points MediaPipe's iris centres correspond to (``landmark_points``: [478, 3] model
        space, e.g. the fitter's points for this identity at neutral). The iris sits about 1 cm in
        front of the centre; the eyeball mesh's front pole (2.1 cm) is the cornea, a lever arm twice
        too long that would halve every angle."""
        verts = asset.vertices(identity)
        centres = []
        for part in ("eyeball_left", "eyeball_right"):
            first, last = asset.parts[part]
            centres.append(verts[first:last + 1].mean(0))
        irises = [landmark_points[LEFT_IRIS], landmark_points[RIGHT_IRIS]]
        if centres[0][0] < centres[1][0]:  # the subject's left eye lies at +x in model space
            centres.reverse()
        return cls(np.array(centres), np.array(irises, dtype=np.float64))


def _rotation(yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """[N, 3, 3] eye rotations: yaw about +y (towards the subject's left), then pitch up."""
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    n = len(yaw)
    ry = np.zeros((n, 3, 3))
    ry[:, 0, 0], ry[:, 0, 2], ry[:, 1, 1], ry[:, 2, 0], ry[:, 2, 2] = cy, sy, 1, -sy, cy
    rx = np.zeros((n, 3, 3))  # positive pitch lifts the forward axis (+z) towards +y
    rx[:, 0, 0], rx[:, 1, 1], rx[:, 1, 2], rx[:, 2, 1], rx[:, 2, 2] = 1, cp, sp, -sp, cp
    return ry @ rx


def estimate_gaze(eyes: EyeModel, rotations: np.ndarray, translations: np.ndarray, focal: float,
                  principal: tuple[float, float], iris_px: np.ndarray, iterations: int = 6) -> np.ndarray:
    """[N, 2, 2] (yaw, pitch) in degrees per frame and eye (0: subject's left).

    Args:
        rotations: [N, 3, 3] head rotation model -> camera; translations: [N, 3] cm.
        iris_px: [N, 2, 2] detected iris centres in pixels, eye order as the result.
    Gauss-Newton on the two angles per eye with a numeric Jacobian: tiny problems, all frames at once.
    """
    n = len(rotations)
    out = np.zeros((n, 2, 2))
    for e in range(2):
        angles = np.zeros((n, 2))
        offset = eyes.iris[e] - eyes.centre[e]

        def project(a: np.ndarray) -> np.ndarray:
            local = eyes.centre[e] + _rotation(a[:, 0], a[:, 1]) @ offset  # [N, 3] model space
            cam = np.einsum("nij,nj->ni", rotations, local) + translations
            return cam[:, :2] / cam[:, 2:3] * focal + np.asarray(principal)

        for _ in range(iterations):
            base = project(angles)
            residual = iris_px[:, e] - base  # [N, 2]
            jac = np.zeros((n, 2, 2))
            for k in range(2):
                step = np.zeros(2)
                step[k] = 1e-3
                jac[:, :, k] = (project(angles + step) - base) / 1e-3
            # Damped normal equations keep nearly singular cases (eye seen edge-on) in check.
            jtj = jac.transpose(0, 2, 1) @ jac + 1e-2 * np.eye(2)
            delta = np.linalg.solve(jtj, (jac.transpose(0, 2, 1) @ residual[..., None]))[..., 0]
            angles = np.clip(angles + delta, -np.radians(60), np.radians(60))
        out[:, e] = np.degrees(angles)
    return out


# Upper/lower lid landmark pairs across each eye (MediaPipe), subject's left eye first.
_LID_PAIRS = (((386, 374), (385, 380), (387, 373)), ((159, 145), (158, 153), (160, 144)))


def lid_blink(points: np.ndarray, open_quantile: float = 0.9, closed_ratio: float = 0.15) -> np.ndarray:
    """[N, 2] blink weights (eye 0 = subject's left) from how far the lids are apart.

    points: [N, 478, 2+] landmarks of the tracked frames. Openness is the mean lid gap in
    inter-ocular units; this clip's open level is its ``open_quantile`` (people's eyes differ), and
    a closed eye leaves MediaPipe's lid points about ``closed_ratio`` of that apart. The landmark
    fit alone underrates blinks: a few lid points against hundreds of others, and the fit's
    sparsity prior, hold the weight back (measured on the synthetic clips)."""
    out = np.zeros((len(points), 2))
    for e, pairs in enumerate(_LID_PAIRS):
        gap = np.mean([gap_iod(points, pair) for pair in pairs], axis=0)
        open_level = np.quantile(gap, open_quantile)
        closed_level = closed_ratio * open_level
        out[:, e] = np.clip((open_level - gap) / max(open_level - closed_level, 1e-6), 0.0, 1.0)
    return out


def gaze_weights(gaze: np.ndarray, names: list[str], limits: GazeRange | None = None) -> dict[str, np.ndarray]:
    """``eyeLook*`` weights [N] by name from gaze [N, 2, 2] (degrees; eye 0 = subject's left)."""
    lim = limits or GazeRange()
    weights = {}
    for e, side in ((0, "L"), (1, "R")):
        yaw, pitch = gaze[:, e, 0], gaze[:, e, 1]
        # Towards the subject's left is "out" for the left eye and "in" for the right one.
        out_dir = yaw if side == "L" else -yaw
        weights[f"eyeLookOut_{side}"] = np.clip(out_dir / lim.horizontal, 0, 1)
        weights[f"eyeLookIn_{side}"] = np.clip(-out_dir / lim.horizontal, 0, 1)
        weights[f"eyeLookUp_{side}"] = np.clip(pitch / lim.up, 0, 1)
        weights[f"eyeLookDown_{side}"] = np.clip(-pitch / lim.down, 0, 1)
    return {k: v for k, v in weights.items() if k in names}
