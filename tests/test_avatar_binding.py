"""Gaussians bound to mesh triangles: frames, deformation with the mesh, quaternion helpers."""

from __future__ import annotations

import numpy as np
import torch

from backend.avatar.binding import (
    GaussianBinding, deform, matrix_to_quaternion, quaternion_to_matrix, triangle_frames,
)
from backend.avatar.model import AvatarConfig, bound_triangles, initial_avatar


def _random_binding(tris: np.ndarray, n: int, seed: int = 0, offset_scale: float = 0.0) -> GaussianBinding:
    rng = np.random.default_rng(seed)
    q = torch.as_tensor(rng.normal(size=(n, 4)), dtype=torch.float32)
    return GaussianBinding(
        tri=torch.as_tensor(rng.choice(tris, n), dtype=torch.long),
        bary=torch.as_tensor(rng.dirichlet(np.ones(3), n), dtype=torch.float32),
        offset=torch.as_tensor(rng.normal(scale=offset_scale, size=(n, 3)), dtype=torch.float32),
        rot_local=q / q.norm(dim=1, keepdim=True), log_scale=torch.zeros(n, 3), opacity_logit=torch.zeros(n),
        sh=torch.zeros(n, 1, 3))


def test_quaternion_round_trip():
    q = torch.randn(500, 4, dtype=torch.float64)
    q = q / q.norm(dim=1, keepdim=True)
    q = q * torch.sign(q[:, :1])
    back = matrix_to_quaternion(quaternion_to_matrix(q))
    assert torch.allclose(back, q, atol=1e-6)
    m = quaternion_to_matrix(q)
    assert torch.allclose(m @ m.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(500, 3, 3), atol=1e-9)


def test_frames_are_rotations_with_the_normal_third(asset):
    verts = torch.as_tensor(asset.neutral, dtype=torch.float32)
    tris = torch.as_tensor(asset.triangles, dtype=torch.long)
    b = _random_binding(bound_triangles(asset), 300)
    origin, rot, size = triangle_frames(verts, tris, b.tri, b.bary)
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3).expand(300, 3, 3), atol=1e-5)
    assert torch.allclose(torch.det(rot), torch.ones(300), atol=1e-5)
    corners = verts[tris[b.tri]]
    normal = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    assert torch.allclose(rot[:, :, 2], normal / normal.norm(dim=1, keepdim=True), atol=1e-5)
    assert torch.allclose(size[:, 0] ** 2, normal.norm(dim=1) / 2, rtol=1e-4)


def test_gaussians_follow_a_shape_key_like_the_surface(asset):
    """With zero offset a Gaussian sits on its triangle, so jawOpen moves it exactly as the surface."""
    tris = torch.as_tensor(asset.triangles, dtype=torch.long)
    b = _random_binding(bound_triangles(asset), 400)
    e = np.zeros(asset.n_expressions)
    e[asset.expression_names.index("jawOpen")] = 1.0
    rest = torch.as_tensor(asset.vertices(None, None), dtype=torch.float32)
    open_ = torch.as_tensor(asset.vertices(None, e), dtype=torch.float32)
    m0, q0, s0 = deform(b, rest, tris)
    m1, q1, s1 = deform(b, open_, tris)
    surface0 = (rest[tris[b.tri]] * b.bary[..., None]).sum(1)
    surface1 = (open_[tris[b.tri]] * b.bary[..., None]).sum(1)
    assert torch.allclose(m1 - m0, surface1 - surface0, atol=1e-4)
    assert (m1 - m0).norm(dim=1).max() > 0.5  # the chin moved (cm)
    # With an offset, the Gaussian rides along rigidly with its triangle's frame.
    b2 = _random_binding(bound_triangles(asset), 400, offset_scale=0.3)
    m2, _, _ = deform(b2, open_, tris)
    origin, rot, size = triangle_frames(open_, tris, b2.tri, b2.bary)
    assert torch.allclose(m2, origin + size * (rot @ b2.offset[..., None])[..., 0], atol=1e-5)
    assert torch.allclose(q0.norm(dim=1), torch.ones(400), atol=1e-5) and (s0 > 0).all()


def test_initial_avatar_from_mesh_and_texture(asset):
    texture = np.zeros((64, 128, 3), np.uint8)
    texture[..., 0] = 200  # red skin
    verts = asset.vertices(None)
    avatar = initial_avatar(asset, verts, texture, AvatarConfig(n_gaussians=2000, sh_degree=1))
    b = avatar.current_binding()
    assert b.n == 2000 and b.sh.shape == (2000, 4, 3)
    assert set(np.unique(b.tri.numpy())) <= set(bound_triangles(asset))
    g = avatar.gaussians(torch.as_tensor(verts), torch.zeros(asset.n_expressions))
    colour = 0.28209479177387814 * g["sh"][:, 0] + 0.5
    skin = colour[:, 0] > 0.7
    assert skin.float().mean() > 0.5  # most Gaussians sit on skin and took the atlas colour
    assert g["scales"][:, 2].max() < g["scales"][:, :2].min(1).values.max()  # surfels: flat
    assert g["mlp_offset"] is not None and float(g["mlp_offset"].detach().abs().max()) == 0.0  # MLP starts neutral
