"""Hole fraction from every side, the coverage prior that trains for it, and the placement of the
initial Gaussians (on a sphere of known geometry, and on the ICT head)."""

from __future__ import annotations

import numpy as np
import torch

from backend.avatar.binding import matrix_to_quaternion
from backend.avatar.coverage import ViewSet, coverage_targets, eroded, hole_fractions
from backend.avatar.model import bound_triangles, place


def sphere(subdivisions: int = 3, radius: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """An octahedron subdivided and pushed onto a sphere: verts [V, 3] (cm), triangles [T, 3]."""
    verts = [np.array(v, float) for v in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))]
    tris = [(0, 2, 4), (2, 1, 4), (1, 3, 4), (3, 0, 4), (2, 0, 5), (1, 2, 5), (3, 1, 5), (0, 3, 5)]
    for _ in range(subdivisions):
        cache, new = {}, []

        def mid(a, b):
            key = (min(a, b), max(a, b))
            if key not in cache:
                verts.append((verts[a] + verts[b]) / 2)
                cache[key] = len(verts) - 1
            return cache[key]

        for a, b, c in tris:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            new += [(a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca)]
        tris = new
    v = np.array(verts)
    return radius * v / np.linalg.norm(v, axis=1, keepdims=True), np.array(tris)


def surfels_on(verts: np.ndarray, tris: np.ndarray, sigma: float, keep: np.ndarray | None = None) -> dict:
    """One opaque surfel per triangle at its centre, in its plane, in-plane scale ``sigma`` cm."""
    c = verts[tris]
    centre = c.mean(1)
    n = np.cross(c[:, 1] - c[:, 0], c[:, 2] - c[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    e1 = (c[:, 1] - c[:, 0]) / np.linalg.norm(c[:, 1] - c[:, 0], axis=1, keepdims=True)
    rot = np.stack([e1, np.cross(n, e1), n], -1)
    keep = np.ones(len(tris), bool) if keep is None else keep
    t = lambda x: torch.as_tensor(np.asarray(x, np.float32)[keep])  # noqa: E731
    return {"means": t(centre), "quats": matrix_to_quaternion(t(rot)), "scales": t(np.tile([sigma, sigma, 1e-3], (len(tris), 1))),
            "opacities": t(np.full(len(tris), 0.95))}


def test_eroded_drops_the_rim_only():
    m = np.zeros((1, 8, 8), bool)
    m[0, 2:6, 1:7] = True
    e = eroded(m)
    assert e.sum() == 2 * 4 and e[0, 3:5, 2:6].all()


def test_holes_are_seen_from_the_side_they_are_on():
    verts, tris = sphere()
    size = float(np.sqrt(np.linalg.norm(np.cross(verts[tris[:, 1]] - verts[tris[:, 0]],
                                                 verts[tris[:, 2]] - verts[tris[:, 0]]), axis=1).mean() / 2))
    views = ViewSet(yaws=8, pitches=(0.0, 30.0), size=64, distance=60.0)
    whole = hole_fractions(surfels_on(verts, tris, size, None), verts, tris, views)
    assert max(f.max() for f in whole.values()) < 0.01  # a covered sphere: no holes from anywhere
    # no Gaussians on the caps |x| > 6 (of radius 10): seen along x (yaw 90, 270) a see-through
    # disc (radius 8, less the neighbours' soft edges: about 40 % of the silhouette); along z
    # (yaw 0, 180) only the thin side segments beyond those edges
    centres = verts[tris].mean(1)
    holes = hole_fractions(surfels_on(verts, tris, size, np.abs(centres[:, 0]) < 6.0), verts, tris, views)[0.0]
    assert holes[2] > 0.3 and holes[6] > 0.3, holes
    assert 0.01 < holes[0] < holes[2] / 3 and 0.01 < holes[4] < holes[6] / 3, holes


def test_coverage_prior_fills_holes():
    verts, tris = sphere(2)
    g = surfels_on(verts, tris, 0.5, None)  # far too small: mostly holes
    targets = coverage_targets(verts, tris, n_views=6, size=32, seed=0, device=torch.device("cpu"))
    log_scale = torch.zeros(len(tris), 1, requires_grad=True)
    logit = torch.zeros(len(tris), requires_grad=True)
    opt = torch.optim.Adam([log_scale, logit], lr=0.1)
    losses = []
    for _ in range(40):
        cur = dict(g, scales=g["scales"] * torch.cat([log_scale.exp()] * 2 + [torch.ones_like(log_scale)], 1),
                   opacities=torch.sigmoid(logit))
        loss = targets.loss(cur, surfels=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[0] > 0.3 and np.mean(losses[-5:]) < 0.3 * losses[0], (losses[0], losses[-5:])


def test_stratified_placement_leaves_no_patch_empty(asset):
    tris = bound_triangles(asset)
    c = asset.neutral[asset.triangles[tris]]
    area = 0.5 * np.linalg.norm(np.cross(c[:, 1] - c[:, 0], c[:, 2] - c[:, 0]), axis=1)
    n = 8000
    big = area > area.sum() / n  # triangles larger than one Gaussian's share
    rng = np.random.default_rng(0)
    strat = np.bincount(place(area, n, "stratified", rng), minlength=len(area))
    rand = np.bincount(place(area, n, "random", rng), minlength=len(area))
    assert (strat[big] >= 1).all() and (rand[big] == 0).mean() > 0.1
    expected = area * n / area.sum()
    assert np.abs(strat - expected).max() <= 1.0 + 1e-9  # floor or ceil of its expected count
