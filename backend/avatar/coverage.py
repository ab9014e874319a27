"""Does the avatar hold up from every side? Hole fraction: the share of the fitted mesh's
silhouette (less its one-pixel rim) where the avatar's alpha is below 0.5, from cameras all
around the head; and the coverage prior that trains for it.

The mesh is the bound part of the head (``model.BOUND_PARTS``: skin of face, scalp and neck, eyes,
mouth), the surface the Gaussians are tied to. Hair is not modelled apart from the scalp: Gaussians
stay on their triangles (offsets of about a triangle), so the hair is the scalp's colour, and the
metric asks the same of every view: where the mesh is, the avatar must be opaque.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from backend.avatar.cameras import look_at, orbit_cameras
from backend.avatar.mesh_render import rasterize_mesh
from backend.avatar.raster import rasterize, rasterize_2dgs

HOLE_ALPHA = 0.5


@dataclass(frozen=True)
class ViewSet:
    """Cameras on circles around the head: ``yaws`` per circle, one circle per pitch (degrees,
    > 0 looking down from above), ``distance`` from the head's centre, ``fov_deg`` across
    ``size`` pixels."""

    yaws: int = 36
    pitches: tuple[float, ...] = (0.0, 30.0, -30.0)
    distance: float = 60.0  # in the units of the vertices (cm in training)
    fov_deg: float = 30.0
    size: int = 128


def view_cameras(target: np.ndarray, views: ViewSet) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """target: [3] (cm) -> {pitch: (viewmats [yaws, 4, 4], K [3, 3])}, OpenCV world -> camera."""
    return {p: orbit_cameras(views.yaws, views.distance, p, target=target, fov_deg=views.fov_deg, size=views.size)
            for p in views.pitches}


def silhouettes(verts: np.ndarray, triangles: np.ndarray, viewmats: np.ndarray, K: np.ndarray, size: int) -> np.ndarray:
    """verts: [V, 3]; triangles: [T, 3]; viewmats: [C, 4, 4]; K: [3, 3] -> masks [C, size, size] bool
    (both faces drawn: an open neck shows its inside, which has Gaussians too)."""
    out = []
    for view in viewmats:
        cam = verts @ view[:3, :3].T + view[:3, 3]
        out.append(rasterize_mesh(cam, K, triangles, size, size, cull_backfaces=False).mask)
    return np.stack(out)


@torch.no_grad()
def render_alphas(gaussians: dict[str, torch.Tensor], viewmats: np.ndarray, K: np.ndarray, size: int, surfels: bool,
                  batch: int = 4) -> torch.Tensor:
    """gaussians: means [N, 3], quats [N, 4], scales [N, 3], opacities [N] -> alphas [C, size, size]."""
    device = gaussians["means"].device
    raster = rasterize_2dgs if surfels else rasterize
    ones = torch.ones(len(gaussians["means"]), 1, device=device)
    out = []
    for i in range(0, len(viewmats), batch):
        v = torch.as_tensor(viewmats[i:i + batch], dtype=torch.float32, device=device)
        ks = torch.as_tensor(K, dtype=torch.float32, device=device).expand(len(v), 3, 3)
        _, alpha, _ = raster(gaussians["means"], gaussians["quats"], gaussians["scales"], gaussians["opacities"], ones,
                             v, ks, size, size)
        out.append(alpha[..., 0])
    return torch.cat(out)


def dilated(masks: np.ndarray) -> np.ndarray:
    """masks: [C, H, W] bool grown by one pixel (4-neighbours)."""
    return ~eroded(~masks)


def eroded(masks: np.ndarray) -> np.ndarray:
    """masks: [C, H, W] bool -> the same without their rim (pixels with a 4-neighbour outside): a
    splat's soft edge there is anti-aliasing, not a hole."""
    pad = np.pad(masks, ((0, 0), (1, 1), (1, 1)))
    return masks & pad[:, :-2, 1:-1] & pad[:, 2:, 1:-1] & pad[:, 1:-1, :-2] & pad[:, 1:-1, 2:]


@dataclass
class CoverageTargets:
    """Random views around the head with the mesh's silhouettes, for the coverage prior.
    viewmats: [V, 4, 4]; K: [3, 3]; silhouettes: [V, S, S] float, 1 inside the eroded silhouette;
    outside: [V, S, S] float, 1 outside the dilated silhouette (the rim between is free)."""

    viewmats: torch.Tensor
    K: torch.Tensor
    silhouettes: torch.Tensor
    outside: torch.Tensor
    generator: torch.Generator
    spill_weight: float = 1.0

    def loss(self, gaussians: dict[str, torch.Tensor], surfels: bool) -> torch.Tensor:
        """Mean (1 - alpha) inside the silhouette of one random view, plus ``spill_weight`` x alpha
        outside it (per silhouette pixel): opaque where the mesh is, clear where it is not
        (differentiable)."""
        j = int(torch.randint(len(self.viewmats), (1,), generator=self.generator))
        size = self.silhouettes.shape[-1]
        raster = rasterize_2dgs if surfels else rasterize
        ones = torch.ones(len(gaussians["means"]), 1, device=self.K.device)
        _, alpha, _ = raster(gaussians["means"], gaussians["quats"], gaussians["scales"], gaussians["opacities"], ones,
                             self.viewmats[j:j + 1], self.K[None], size, size)
        sil, out = self.silhouettes[j], self.outside[j]
        a = alpha[0, ..., 0]
        return ((1 - a) * sil + self.spill_weight * a * out).sum() / sil.sum().clamp_min(1)


def coverage_targets(verts: np.ndarray, triangles: np.ndarray, n_views: int, size: int, seed: int,
                     device: torch.device, max_pitch: float = 40.0, distance_cm: float = 60.0,
                     fov_deg: float = 30.0, spill_weight: float = 1.0) -> CoverageTargets:
    """``n_views`` cameras at random yaw (all round) and pitch (within +-max_pitch) looking at the
    centre of ``verts`` [V, 3] (cm, model space), with silhouettes of ``triangles`` [T, 3]."""
    rng = np.random.default_rng(seed)
    yaw = rng.uniform(0, 2 * np.pi, n_views)
    pitch = np.radians(rng.uniform(-max_pitch, max_pitch, n_views))
    direction = np.stack([np.cos(pitch) * np.sin(yaw), np.sin(pitch), np.cos(pitch) * np.cos(yaw)], -1)
    target = verts.mean(0)
    viewmats = look_at(target + distance_cm * direction, np.broadcast_to(target, direction.shape))
    K = orbit_cameras(1, distance_cm, 0.0, fov_deg=fov_deg, size=size)[1]
    sil = silhouettes(verts, triangles, viewmats, K, size)
    as_t = lambda x: torch.as_tensor(np.asarray(x, np.float32), device=device)  # noqa: E731
    return CoverageTargets(as_t(viewmats), as_t(K), as_t(eroded(sil)), as_t(~dilated(sil)),
                           torch.Generator().manual_seed(seed), spill_weight)


def hole_fractions(gaussians: dict[str, torch.Tensor], verts: np.ndarray, triangles: np.ndarray, views: ViewSet,
                   surfels: bool = True, spill: dict | None = None) -> dict[float, np.ndarray]:
    """{pitch: [yaws] fraction of silhouette pixels with alpha < 0.5}. gaussians as for
    ``render_alphas`` in the frame of ``verts`` [V, 3] (cm); triangles [T, 3]: the bound mesh.
    ``spill``, if given, receives {pitch: [yaws]} pixels with alpha >= 0.5 outside the silhouette
    grown by a pixel, per silhouette pixel (splats bleeding past the head's outline)."""
    out = {}
    for pitch, (viewmats, K) in view_cameras(verts.mean(0), views).items():
        full = silhouettes(verts, triangles, viewmats, K, views.size)
        sil = eroded(full)
        alpha = render_alphas(gaussians, viewmats, K, views.size, surfels).cpu().numpy()
        holes = (alpha < HOLE_ALPHA) & sil
        out[pitch] = holes.sum((1, 2)) / np.maximum(sil.sum((1, 2)), 1)
        if spill is not None:
            spill[pitch] = ((alpha >= HOLE_ALPHA) & ~dilated(full)).sum((1, 2)) / np.maximum(sil.sum((1, 2)), 1)
    return out


def summarise(fractions: dict[float, np.ndarray]) -> dict[str, float]:
    """Per pitch: mean and worst view (percent), and the worst over all views."""
    out = {}
    for pitch, f in fractions.items():
        out[f"pitch{pitch:+.0f}_mean_pct"] = float(100 * f.mean())
        out[f"pitch{pitch:+.0f}_max_pct"] = float(100 * f.max())
    out["max_pct"] = float(100 * max(f.max() for f in fractions.values()))
    return out
