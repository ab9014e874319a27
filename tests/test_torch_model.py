"""The differentiable model agrees with the numpy asset and with itself at surface points."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from backend.fitting.geometry import axis_angle_to_matrix, matrix_to_axis_angle, umeyama
from backend.headmodel.torch_model import MorphableModel


def test_model_matches_asset_and_is_batched(asset):
    model = MorphableModel.from_asset(asset)
    rng = np.random.default_rng(0)
    ident = rng.normal(size=(2, 100)).astype(np.float32)
    expr = rng.uniform(0, 1, size=(2, 53)).astype(np.float32)
    out = model.shape(torch.tensor(ident), torch.tensor(expr)).numpy()
    assert out.shape == (2, 26719, 3)
    for b in range(2):
        np.testing.assert_allclose(out[b], asset.vertices(ident[b], expr[b]), atol=1e-3)


def test_pose_and_gradients(asset):
    model = MorphableModel.from_asset(asset)
    ident = torch.zeros(1, 100, requires_grad=True)
    expr = torch.zeros(1, 53, requires_grad=True)
    rot = torch.tensor([[0.1, -0.4, 0.2]], requires_grad=True)
    trans = torch.tensor([[1.0, 2.0, 60.0]], requires_grad=True)
    posed = model(ident, expr, rot, trans, torch.tensor([1.0]))
    r = Rotation.from_rotvec([0.1, -0.4, 0.2]).as_matrix()
    np.testing.assert_allclose(posed[0].detach().numpy(), asset.neutral @ r.T + [1, 2, 60], atol=1e-3)
    posed[:, :100].sum().backward()
    for p in (ident, expr, rot, trans):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_surface_points_are_exact(asset, correspondence):
    points = MorphableModel.at_surface_points(asset, correspondence.corners, correspondence.bary)
    rng = np.random.default_rng(1)
    ident, expr = rng.normal(size=100).astype(np.float32), rng.uniform(0, 1, 53).astype(np.float32)
    got = points.shape(torch.tensor(ident[None]), torch.tensor(expr[None]))[0].numpy()
    want = correspondence.positions(asset.vertices(ident, expr))
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_rotation_helpers_round_trip():
    for vec in ([0.0, 0.0, 0.0], [0.3, -0.2, 0.5], [3.0, 0.1, 0.0]):
        m = axis_angle_to_matrix(torch.tensor(vec, dtype=torch.float64)).numpy()
        np.testing.assert_allclose(m, Rotation.from_rotvec(vec).as_matrix(), atol=1e-9)
        np.testing.assert_allclose(Rotation.from_rotvec(matrix_to_axis_angle(m)).as_matrix(), m, atol=1e-6)
    src = np.random.default_rng(2).normal(size=(30, 3))
    r = Rotation.from_rotvec([0.2, 2.9, -0.3]).as_matrix()
    s, rot, t = umeyama(src, 3.0 * src @ r.T + [1, -2, 5])
    assert abs(s - 3.0) < 1e-9 and np.allclose(rot, r) and np.allclose(t, [1, -2, 5])
