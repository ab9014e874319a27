"""Pure geometry functions shared by fitting, baking and rendering. Torch where gradients flow."""

from __future__ import annotations

import numpy as np
import torch


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
    """[3, 3] rotation matrix -> [3] rotation vector (numpy; used for initialisation)."""
    cos = np.clip((np.trace(matrix) - 1) / 2, -1.0, 1.0)
    angle = np.arccos(cos)
    if angle < 1e-8:
        return np.zeros(3)
    axis = np.array([matrix[2, 1] - matrix[1, 2], matrix[0, 2] - matrix[2, 0], matrix[1, 0] - matrix[0, 1]])
    if np.pi - angle < 1e-4:  # near 180 degrees the skew part vanishes; use the symmetric part
        axis = np.sqrt(np.maximum((np.diag(matrix) + 1) / 2, 0))
        axis *= np.sign(axis @ np.array([1, 1, 1]) or 1)
        return axis / np.linalg.norm(axis) * angle
    return axis / np.linalg.norm(axis) * angle


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


def vertex_normals(verts: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals.

    Args:
        verts: [B, V, 3]; triangles: [T, 3] long.
    Returns:
        [B, V, 3] unit normals.
    """
    v0, v1, v2 = (verts[:, triangles[:, i]] for i in range(3))
    face_n = torch.cross(v1 - v0, v2 - v0, dim=-1)
    normals = torch.zeros_like(verts).index_add_(1, triangles.reshape(-1), face_n.repeat_interleave(3, dim=1))
    return torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)
