"""Closest points on a triangle mesh (numpy + scipy), for correspondences and silhouettes."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def closest_point_on_triangles(points: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact closest point on each triangle (Ericson, Real-Time Collision Detection 5.1.5).

    Args:
        points: [N, 3]; a, b, c: [N, 3] triangle corners.
    Returns:
        closest: [N, 3] points; bary: [N, 3] barycentric weights of a, b, c.
    """
    ab, ac, ap = b - a, c - a, points - a
    d1, d2 = (ab * ap).sum(1), (ac * ap).sum(1)
    bp = points - b
    d3, d4 = (ab * bp).sum(1), (ac * bp).sum(1)
    cp = points - c
    d5, d6 = (ab * cp).sum(1), (ac * cp).sum(1)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    denom = va + vb + vc
    denom = np.where(np.abs(denom) < 1e-20, 1e-20, denom)
    v = vb / denom
    w = vc / denom
    bary = np.stack([1 - v - w, v, w], 1)
    # Region tests, from the most specific (vertices) to the least (interior), last write wins.
    def set_rows(mask, value):
        bary[mask] = value[mask] if value.ndim == 2 else value

    with np.errstate(divide="ignore", invalid="ignore"):
        t_bc = np.clip((d4 - d3) / ((d4 - d3) + (d5 - d6)), 0, 1)
        t_ac = np.clip(d2 / (d2 - d6), 0, 1)
        t_ab = np.clip(d1 / (d1 - d3), 0, 1)
    edge_bc = (va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0)
    edge_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    edge_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    set_rows(edge_bc, np.stack([np.zeros_like(t_bc), 1 - t_bc, t_bc], 1))
    set_rows(edge_ac, np.stack([1 - t_ac, np.zeros_like(t_ac), t_ac], 1))
    set_rows(edge_ab, np.stack([1 - t_ab, t_ab, np.zeros_like(t_ab)], 1))
    set_rows((d6 >= 0) & (d5 <= d6), np.array([0.0, 0.0, 1.0]))
    set_rows((d3 >= 0) & (d4 <= d3), np.array([0.0, 1.0, 0.0]))
    set_rows((d1 <= 0) & (d2 <= 0), np.array([1.0, 0.0, 0.0]))
    closest = bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:3] * c
    return closest, bary


def closest_points_on_mesh(points: np.ndarray, verts: np.ndarray, triangles: np.ndarray, k: int = 24) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closest surface point of ``verts[triangles]`` to each query point.

    Candidates are the ``k`` triangles with the nearest centroids, exact distance among them;
    right for query points near the surface, which is all this is used for.

    Args:
        points: [N, 3]; verts: [V, 3]; triangles: [T, 3] int.
    Returns:
        triangle: [N] index into ``triangles``; bary: [N, 3]; distance: [N].
    """
    corners = verts[triangles]  # [T, 3, 3]
    tree = cKDTree(corners.mean(1))
    k = min(k, len(triangles))
    _, cand = tree.query(points, k=k)
    cand = cand.reshape(len(points), k)
    flat = cand.reshape(-1)
    rep = np.repeat(points, k, axis=0)
    closest, bary = closest_point_on_triangles(rep, corners[flat, 0], corners[flat, 1], corners[flat, 2])
    dist = np.linalg.norm(closest - rep, axis=1).reshape(len(points), k)
    best = dist.argmin(1)
    rows = np.arange(len(points))
    pick = rows * k + best
    return cand[rows, best], bary[pick], dist[rows, best]
