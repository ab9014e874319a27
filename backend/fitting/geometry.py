"""Pure geometry functions shared by fitting, baking and rendering. Torch where gradients flow."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula, safe at zero angle.

    Args:
        axis_angle: [..., 3] rotation vectors (radians).
    Returns:
        [..., 3, 3] rotation matrices.
    """
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)[..., None]  # [..., 1, 1]
    theta = torch.sqrt(theta2 + 1e-12)
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*axis_angle.shape[:-1], 3, 3)
    # sin(t)/t and (1-cos(t))/t^2 with their Taylor series near zero keep gradients finite.
    small = theta2 < 1e-8
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / (theta2 + 1e-12))
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def matrix_to_axis_angle(matrix: np.ndarray) -> np.ndarray:
    """[3, 3] rotation matrix -> [3] rotation vector (numpy), right at every angle.

    Every fitted photo sits near 180 degrees (model y up, camera y down), where the textbook
    formula loses the axis' signs, so this goes through scipy's quaternion-based conversion."""
    return Rotation.from_matrix(np.asarray(matrix, np.float64)).as_rotvec()


def continuous_quaternions(quaternions: np.ndarray) -> np.ndarray:
    """[N, 4] quaternions with signs flipped so consecutive ones have a non-negative dot product.

    q and -q are the same rotation; interpolating or filtering components across a sign flip
    would swing the long way round."""
    q = np.array(quaternions, dtype=np.float64)
    for i in range(1, len(q)):
        if np.dot(q[i], q[i - 1]) < 0.0:
            q[i] = -q[i]
    return q


def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity with dst ~ s * R @ src + t.

    Args:
        src, dst: [N, 3] corresponding points.
        weights: [N] non-negative, or None for equal weights.
    Returns:
        scale s, rotation R [3, 3] (det +1), translation t [3].
    """
    w = np.ones(len(src)) if weights is None else np.asarray(weights, float)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    cov = (xd * w[:, None]).T @ xs
    u, sig, vt = np.linalg.svd(cov)
    d = np.eye(3)
    d[2, 2] = np.sign(np.linalg.det(u @ vt)) or 1.0
    rot = u @ d @ vt
    var_s = (w * (xs * xs).sum(1)).sum()
    scale = float(np.trace(np.diag(sig) @ d) / var_s)
    return scale, rot, mu_d - scale * rot @ mu_s


def project(points: torch.Tensor, focal: torch.Tensor, principal: torch.Tensor) -> torch.Tensor:
    """Pinhole projection of camera-space points (OpenCV: z forward, y down).

    Args:
        points: [..., N, 3] camera-space points.
        focal: [...] or [..., 1] focal length in pixels.
        principal: [..., 2] principal point in pixels.
    Returns:
        [..., N, 2] pixel coordinates.
    """
    focal = focal.reshape(*focal.shape[: points.dim() - 2], 1, 1) if focal.dim() < points.dim() else focal
    z = points[..., 2:3].clamp_min(1e-3)
    return points[..., :2] / z * focal + principal[..., None, :]
