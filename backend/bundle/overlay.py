"""``fit_overlay.png``: each input with the fitted mesh and the landmarks drawn over it."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from backend.bundle.texture_bake import PhotoView, project_points, visible_points

SHEET_HEIGHT = 720


def face_edges(triangles: np.ndarray, face_vertex_limit: int) -> np.ndarray:
    """[M, 2] unique edges of the triangles whose corners all lie in the face part."""
    tris = triangles[(triangles < face_vertex_limit).all(1)]
    edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    return np.unique(np.sort(edges, axis=1), axis=0)


def draw_overlay(view: PhotoView, edges: np.ndarray, detected: np.ndarray, fitted: np.ndarray) -> Image.Image:
    """One input with the visible mesh wireframe (white), detected landmarks (green) and the
    fitted model's landmarks (red). detected, fitted: [P, 2] pixels."""
    base = Image.fromarray(view.rgb).convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    verts = view.verts_cam
    used = np.unique(edges)
    vis = np.zeros(len(verts), bool)
    vis[used] = visible_points(verts[used], view.focal, view.principal, view.rgb.shape[:2], tolerance_cm=0.3, cell_px=3.0)
    facing = np.zeros(len(verts), bool)
    facing[used] = (-(view.normals_cam[used] * verts[used]).sum(1)) > 0
    keep = vis[edges].all(1) & facing[edges].all(1)
    xy = project_points(verts, view.focal, view.principal)
    width = max(1, round(max(view.rgb.shape[:2]) / 900))
    for a, b in edges[keep]:
        draw.line([tuple(xy[a]), tuple(xy[b])], fill=(255, 255, 255, 70), width=width)
    r = max(1.5, max(view.rgb.shape[:2]) / 500)
    for pts, colour in ((detected, (40, 255, 80, 255)), (fitted, (255, 50, 50, 255))):
        for x, y in pts:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    return Image.alpha_composite(base, layer).convert("RGB")


def contact_sheet(images: list[Image.Image], height: int = SHEET_HEIGHT) -> Image.Image:
    """Inputs side by side, each scaled to ``height`` (never enlarged past its own size)."""
    h = min(height, max(im.height for im in images))
    scaled = [im.resize((max(1, round(im.width * h / im.height)), h), Image.LANCZOS) for im in images]
    sheet = Image.new("RGB", (sum(im.width for im in scaled), h), (30, 30, 30))
    x = 0
    for im in scaled:
        sheet.paste(im, (x, 0))
        x += im.width
    return sheet
