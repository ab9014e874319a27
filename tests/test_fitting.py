"""Landmark fitting on landmarks made from the model itself (known answer), and its parts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from backend.fitting.landmark_fit import FitConfig, LandmarkFitter, Observation
from backend.fitting.surface import closest_points_on_mesh


def synthetic_observation(asset, correspondence, identity, expression, rotvec, translation, focal, size=(720, 720)):
    """Landmarks [478, 3] of a posed model seen by a pinhole camera (z as MediaPipe would: pixels)."""
    verts = asset.vertices(identity, expression) @ Rotation.from_rotvec(rotvec).as_matrix().T + translation
    pts = correspondence.positions(verts)
    xy = pts[:, :2] / pts[:, 2:] * focal + np.array(size) / 2
    z = (pts[:, 2] - pts[:, 2].mean()) * focal / pts[:, 2].mean()
    return Observation(np.column_stack([xy, z]).astype(np.float32), size[0], size[1]), verts


@pytest.fixture(scope="module")
def fitter(asset, correspondence):
    return LandmarkFitter(asset, correspondence, FitConfig())


def test_recovers_a_known_frontal_head(asset, correspondence, fitter):
    rng = np.random.default_rng(0)
    identity = rng.normal(size=100) * 0.8
    expression = np.zeros(53)
    expression[asset.expression_names.index("jawOpen")] = 0.4
    rotvec = Rotation.from_euler("xyz", [180, 10, 0], degrees=True).as_rotvec()  # model y up -> camera y down
    obs, _ = synthetic_observation(asset, correspondence, identity, expression, rotvec, [0.5, -1.0, 60.0], 950.0)
    result = fitter.fit([obs])
    photo = result.photos[0]
    # The fit explains the interior landmarks to a fraction of a pixel-scale error...
    assert photo.landmark_rmse_iod < 0.02
    # ...opens the jaw, and finds a face of plausible scale and depth.
    assert photo.expression[asset.expression_names.index("jawOpen")] > 0.2
    assert 40 < photo.translation[2] < 85
    # Identity is pulled towards the truth: the face is closer to it than the mean face is.
    face = slice(0, asset.parts["narrow_face"][1] + 1)
    truth = asset.vertices(identity)[face]
    fitted = asset.vertices(result.identity)[face]
    mean = asset.neutral[face]
    def err(v):
        return np.linalg.norm((v - v.mean(0)) - (truth - truth.mean(0)), axis=1).mean()
    assert err(fitted) < err(mean)


def test_several_photos_share_identity_and_focal(asset, correspondence, fitter):
    rng = np.random.default_rng(1)
    identity = rng.normal(size=100) * 0.8
    observations = []
    for yaw in (-25, 0, 25):
        rot = Rotation.from_euler("xyz", [180, yaw, 0], degrees=True).as_rotvec()
        obs, _ = synthetic_observation(asset, correspondence, identity, np.zeros(53), rot, [0, 0, 55.0], 1000.0)
        observations.append(obs)
    result = fitter.fit(observations)
    assert len(result.photos) == 3
    assert len({p.focal for p in result.photos}) == 1
    yaws = [Rotation.from_rotvec(p.rotation).as_euler("xyz", degrees=True)[1] for p in result.photos]
    assert yaws[0] < -10 < 10 < yaws[2], yaws
    # Interior points only: these synthetic contour points sit at their frontal surface positions,
    # not on the turned head's silhouette, so the sliding contour cannot (and should not) match them.
    for obs, photo in zip(observations, result.photos):
        res = np.linalg.norm(photo.projected - obs.points[:, :2], axis=1)[fitter.rigid_ids] / obs.interocular_px
        assert res.mean() < 0.015


def test_contour_points_slide_to_the_silhouette(asset, correspondence, fitter):
    """Turned 35 degrees: fixed contour correspondences could not reach the detected outline."""
    rot = Rotation.from_euler("xyz", [180, 35, 0], degrees=True).as_rotvec()
    verts = asset.neutral @ Rotation.from_rotvec(rot).as_matrix().T + [0, 0, 60.0]
    obs, _ = synthetic_observation(asset, correspondence, np.zeros(100), np.zeros(53), rot, [0, 0, 60.0], 1000.0)
    # Detected outline = the true silhouette: the outermost candidate of each band in the image.
    cand = verts[fitter.contour.vertices]
    xy = cand[..., :2] / cand[..., 2:] * 1000 + 360
    centre = obs.points[fitter.rigid_ids, :2].mean(0)
    direction = xy.mean(1) - centre
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    best = np.einsum("kmc,kc->km", xy - centre, direction).argmax(1)
    obs.points[fitter.contour.landmark, :2] = xy[np.arange(len(best)), best]
    result = fitter.fit([obs])
    assert result.photos[0].contour_rmse_iod < 0.03


def test_closest_points_on_mesh_are_on_the_surface(asset):
    face = asset.triangles[asset.triangle_material() == 0]
    rng = np.random.default_rng(3)
    tri = rng.integers(0, len(face), 200)
    bary = rng.dirichlet([1, 1, 1], 200)
    on_surface = np.einsum("nkc,nk->nc", asset.neutral[face[tri]], bary)
    got_tri, got_bary, dist = closest_points_on_mesh(on_surface.astype(np.float64), asset.neutral.astype(np.float64), face)
    assert dist.max() < 1e-4
    back = np.einsum("nkc,nk->nc", asset.neutral[face[got_tri]], got_bary)
    np.testing.assert_allclose(back, on_surface, atol=1e-4)


def test_fit_is_deterministic(asset, correspondence, fitter):
    torch.manual_seed(0)
    rot = Rotation.from_euler("xyz", [180, 5, 0], degrees=True).as_rotvec()
    obs, _ = synthetic_observation(asset, correspondence, np.zeros(100), np.zeros(53), rot, [0, 0, 60.0], 900.0)
    a, b = fitter.fit([obs]), fitter.fit([obs])
    np.testing.assert_array_equal(a.identity, b.identity)
