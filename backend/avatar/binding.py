"""Gaussians bound to the head mesh's triangles (SHeaP, GaussianAvatars-style rigging).

Every Gaussian lives in the local frame of one triangle, so any identity, expression or pose that
moves the mesh moves it. For a triangle (v0, v1, v2) of the posed mesh:

    origin  = b0 v0 + b1 v1 + b2 v2                  (the Gaussian's barycentric point)
    e1      = normalize(v1 - v0)
    n       = normalize((v1 - v0) x (v2 - v0))
    e2      = n x e1
    R_tri   = [e1 | e2 | n]                          (columns; a rotation)
    s_tri   = sqrt(area)                             (the triangle's size)

    mean    = origin + s_tri R_tri offset            (offset in triangle-size units)
    R       = R_tri R_local                          (quaternions: q = q_tri * q_local)
    scale   = s_tri exp(log_scale)                   (per axis)

The same formulas are implemented in the Blender add-on's geometry nodes (``blender_addon/
gaussians.py``) and checked against this module by the tests. Quaternions are (w, x, y, z).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class GaussianBinding:
    """N Gaussians. tri: [N] triangle index; bary: [N, 3]; offset: [N, 3] local; rot_local:
    [N, 4] (w, x, y, z); log_scale: [N, 3] relative to the triangle size; opacity_logit: [N];
    sh: [N, K, 3] spherical-harmonic colour coefficients (K = (degree + 1)^2; DC first)."""

    tri: torch.Tensor
    bary: torch.Tensor
    offset: torch.Tensor
    rot_local: torch.Tensor
    log_scale: torch.Tensor
    opacity_logit: torch.Tensor
    sh: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.tri.shape[0])

    @property
    def sh_degree(self) -> int:
        return int(round(np.sqrt(self.sh.shape[1]))) - 1

    def parameters(self) -> list[torch.Tensor]:
        return [self.offset, self.rot_local, self.log_scale, self.opacity_logit, self.sh]

    def subset(self, keep: torch.Tensor) -> GaussianBinding:
        return GaussianBinding(*(t[keep] for t in (self.tri, self.bary, self.offset, self.rot_local, self.log_scale,
                                                    self.opacity_logit, self.sh)))

    def detach(self) -> GaussianBinding:
        return GaussianBinding(*(t.detach().clone() for t in (self.tri, self.bary, self.offset, self.rot_local,
                                                               self.log_scale, self.opacity_logit, self.sh)))


def triangle_frames(verts: torch.Tensor, triangles: torch.Tensor, tri: torch.Tensor, bary: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Local frames of the triangles Gaussians are bound to.

    Args:
        verts: [..., V, 3] posed vertices; triangles: [T, 3] vertex ids; tri: [N]; bary: [N, 3].
    Returns:
        origin [..., N, 3], rotation [..., N, 3, 3] (columns e1, e2, n), size [..., N, 1].
    """
    corners = verts[..., triangles[tri], :]  # [..., N, 3, 3]
    v0, v1, v2 = corners.unbind(-2)
    origin = (corners * bary[..., None]).sum(-2)
    edge1, edge2 = v1 - v0, v2 - v0
    cross = torch.linalg.cross(edge1, edge2)
    area2 = cross.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    n = cross / area2
    e1 = edge1 / edge1.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    e2 = torch.linalg.cross(n, e1)
    rotation = torch.stack([e1, e2, n], dim=-1)
    size = torch.sqrt(area2 / 2)
    return origin, rotation, size


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """[..., 4] (w, x, y, z), normalised here -> [..., 3, 3]."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(m: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] rotations -> [..., 4] (w, x, y, z) with w >= 0 (numerically safe branchless form)."""
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    w = torch.sqrt((1 + m00 + m11 + m22).clamp_min(1e-12)) / 2
    x = torch.sqrt((1 + m00 - m11 - m22).clamp_min(1e-12)) / 2
    y = torch.sqrt((1 - m00 + m11 - m22).clamp_min(1e-12)) / 2
    z = torch.sqrt((1 - m00 - m11 + m22).clamp_min(1e-12)) / 2
    x = torch.copysign(x, m[..., 2, 1] - m[..., 1, 2])
    y = torch.copysign(y, m[..., 0, 2] - m[..., 2, 0])
    z = torch.copysign(z, m[..., 1, 0] - m[..., 0, 1])
    q = torch.stack([w, x, y, z], dim=-1)
    return q / q.norm(dim=-1, keepdim=True)


def deform(binding: GaussianBinding, verts: torch.Tensor, triangles: torch.Tensor,
           extra_offset: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """World Gaussians for posed vertices.

    Args:
        verts: [..., V, 3]; extra_offset: [..., N, 3] local offsets added (the expression MLP's).
    Returns:
        means [..., N, 3], quats [..., N, 4] (w, x, y, z), scales [..., N, 3].
    """
    origin, rotation, size = triangle_frames(verts, triangles, binding.tri, binding.bary)
    offset = binding.offset if extra_offset is None else binding.offset + extra_offset
    means = origin + size * (rotation @ offset[..., None])[..., 0]
    world_rot = rotation @ quaternion_to_matrix(binding.rot_local)
    quats = matrix_to_quaternion(world_rot)
    scales = size * binding.log_scale.exp()
    return means, quats, scales
