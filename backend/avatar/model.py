"""The Gaussian head avatar: Gaussians bound to the fitted mesh, and GPHM's expression MLP.

Initialisation follows GPHM: from the fitted guiding mesh (the person's identity, not the bare
template) and its baked texture, not from random points. Which triangles carry Gaussians: the
skin (face, head, neck) and what the mouth and eyes need (eyeballs, teeth, mouth socket); each
gets Gaussians in proportion to its area, centred at random barycentric points, flat along the
triangle (surfel-like) and sized to cover it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from backend.avatar.binding import GaussianBinding, deform
from backend.headmodel.asset import HeadModelAsset
from backend.texture_layout import SKIN_MATERIALS, atlas_uv

SH_C0 = 0.28209479177387814  # the DC spherical-harmonic basis value (colour = SH_C0 * f_dc + 0.5)
BOUND_PARTS = ("face", "head_neck", "eyeball_left", "eyeball_right", "teeth", "mouth_socket", "gums_tongue")


@dataclass
class AvatarConfig:
    """Size and kind of the avatar (presets in ``backend.avatar.train``)."""

    n_gaussians: int = 20_000
    sh_degree: int = 1
    surfels: bool = True          # 2D Gaussians (SHeaP) vs 3D
    mlp: bool = True              # GPHM's expression-dependent offsets and colour
    mlp_hidden: int = 64
    mlp_frequencies: int = 4      # positional encoding of the canonical position
    seed: int = 0
    # Placement: "stratified" gives each Gaussian an equal, contiguous share of the surface (systematic
    # sampling of the cumulative area in the mesh's order, whose neighbours are neighbours), so no
    # patch is left without one; "random" draws points by area (clumps and gaps: holes from the side).
    placement: str = "stratified"
    init_sigma: float = 0.6       # in-plane scale, x sqrt(surface share per Gaussian)
    init_opacity: float = 0.88


class ExpressionMLP(torch.nn.Module):
    """Expression weights [E] + each Gaussian's canonical position -> local offset [N, 3] and colour
    change [N, 3]. The last layer starts at zero, so training starts from the mesh-bound avatar."""

    def __init__(self, n_expressions: int, hidden: int, frequencies: int):
        super().__init__()
        self.frequencies = frequencies
        width = n_expressions + 3 + 6 * frequencies
        self.net = torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.SiLU(),
                                       torch.nn.Linear(hidden, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, 6))
        torch.nn.init.zeros_(self.net[-1].weight)
        torch.nn.init.zeros_(self.net[-1].bias)

    def forward(self, expression: torch.Tensor, canonical: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """expression: [E]; canonical: [N, 3] (roughly unit scale) -> (offset [N, 3], colour [N, 3])."""
        bands = 2.0 ** torch.arange(self.frequencies, dtype=canonical.dtype, device=canonical.device) * np.pi
        angles = canonical[:, :, None] * bands  # [N, 3, F]
        enc = torch.cat([canonical, angles.sin().flatten(1), angles.cos().flatten(1)], 1)
        x = torch.cat([expression[None].expand(len(canonical), -1), enc], 1)
        out = self.net(x)
        return 0.1 * torch.tanh(out[:, :3]), 0.2 * torch.tanh(out[:, 3:])


class GaussianAvatar(torch.nn.Module):
    """Bound Gaussians (+ optional expression MLP) on the ICT mesh. Every tensor is a parameter
    or buffer, so ``avatar.to(device)`` moves all of it (the device switch, ``backend.avatar.device``).

    Buffers: triangles [T, 3], tri [N], bary [N, 3], canonical [N, 3]."""

    def __init__(self, asset: HeadModelAsset, binding: GaussianBinding, config: AvatarConfig, canonical: torch.Tensor):
        super().__init__()
        self.asset, self.config = asset, config
        self.register_buffer("triangles", torch.as_tensor(asset.triangles, dtype=torch.long))
        self.register_buffer("tri", binding.tri)
        self.register_buffer("bary", binding.bary)
        for name, value in zip(("offset", "rot_local", "log_scale", "opacity_logit", "sh"), binding.parameters()):
            setattr(self, name, torch.nn.Parameter(value))
        self.register_buffer("canonical", canonical)
        self.mlp = ExpressionMLP(asset.n_expressions, config.mlp_hidden, config.mlp_frequencies) if config.mlp else None

    @property
    def device(self) -> torch.device:
        return self.offset.device

    def current_binding(self) -> GaussianBinding:
        return GaussianBinding(self.tri, self.bary, self.offset, self.rot_local, self.log_scale, self.opacity_logit,
                               self.sh)

    def gaussians(self, verts: torch.Tensor, expression: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """World Gaussians for posed vertices [V, 3] and expression weights [E] (for the MLP)."""
        binding = self.current_binding()
        extra, colour = None, None
        if self.mlp is not None and expression is not None:
            extra, colour = self.mlp(expression, self.canonical)
        means, quats, scales = deform(binding, verts, self.triangles, extra)
        if self.config.surfels:
            scales = torch.cat([scales[:, :2], scales[:, 2:] * 1e-3], 1)  # flat along the local normal
        sh = self.sh if colour is None else torch.cat([self.sh[:, :1] + colour[:, None] / SH_C0, self.sh[:, 1:]], 1)
        return {"means": means, "quats": quats, "scales": scales, "opacities": torch.sigmoid(self.opacity_logit),
                "sh": sh, "mlp_offset": extra}

    def replace_binding(self, binding: GaussianBinding, canonical: torch.Tensor) -> None:
        """After densify/prune: new tensors, new Parameters (the caller rebuilds its optimiser), on
        the avatar's device."""
        device = self.device
        self.tri, self.bary = binding.tri.to(device), binding.bary.to(device)
        for name, value in zip(("offset", "rot_local", "log_scale", "opacity_logit", "sh"), binding.parameters()):
            setattr(self, name, torch.nn.Parameter(value.detach().clone().to(device)))
        self.canonical = canonical.to(device)


def bound_triangles(asset: HeadModelAsset) -> np.ndarray:
    """[T'] ids of triangles whose three vertices lie in ``BOUND_PARTS``."""
    inside = asset.part_mask(*BOUND_PARTS)
    return np.nonzero(inside[asset.triangles].all(1))[0]


def initial_avatar(asset: HeadModelAsset, verts_cm: np.ndarray, texture: np.ndarray, config: AvatarConfig,
                   fallback_colour: np.ndarray | None = None) -> GaussianAvatar:
    """Gaussians on the fitted neutral mesh ``verts_cm`` [V, 3], coloured from the baked atlas
    ``texture`` [H, W, 3] uint8 (skin) or ``fallback_colour`` [T, 3] in [0, 1] per triangle (eyes,
    teeth, mouth: not in the atlas)."""
    rng = np.random.default_rng(config.seed)
    tris = bound_triangles(asset)
    corners = verts_cm[asset.triangles[tris]]  # [T', 3, 3]
    area = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    pick = place(area, config.n_gaussians, config.placement, rng)
    tri = tris[pick]
    bary = rng.dirichlet(np.ones(3), size=len(tri)).astype(np.float32)
    # Cover the Gaussian's share of the surface: area / (Gaussians on its triangle), or the mean
    # share where a triangle is smaller than that (one Gaussian then stands for its neighbours too).
    per_tri = np.bincount(pick, minlength=len(tris))[pick]
    share = np.maximum(area[pick] / per_tri, area.sum() / config.n_gaussians if config.placement == "stratified" else 0)
    side = np.sqrt(share / area[pick])  # relative to the triangle size sqrt(area)
    log_scale = np.log(np.stack([config.init_sigma * side, config.init_sigma * side, 0.1 * side], 1)).astype(np.float32)

    colour = _initial_colours(asset, tri, bary, texture, fallback_colour, tris, pick)
    k = (config.sh_degree + 1) ** 2
    sh = np.zeros((len(tri), k, 3), np.float32)
    sh[:, 0] = (np.clip(colour, 0.02, 0.98) - 0.5) / SH_C0
    binding = GaussianBinding(
        tri=torch.as_tensor(tri, dtype=torch.long), bary=torch.as_tensor(bary),
        offset=torch.zeros(len(tri), 3), rot_local=torch.tensor([[1.0, 0, 0, 0]]).repeat(len(tri), 1),
        log_scale=torch.as_tensor(log_scale),
        opacity_logit=torch.full((len(tri),), float(np.log(config.init_opacity / (1 - config.init_opacity)))),
        sh=torch.as_tensor(sh))
    return GaussianAvatar(asset, binding, config, canonical_positions(asset, verts_cm, binding))


def place(area: np.ndarray, n: int, placement: str, rng: np.random.Generator) -> np.ndarray:
    """[n] indices into triangles of ``area`` [T]: "random" by area, or "stratified" (systematic
    sampling): the i-th Gaussian at the quantile (i + u) / n of the cumulative area, one random u
    for all, so each triangle gets the floor or ceil of its expected count and every patch of at
    least one share gets one."""
    if placement == "random":
        return rng.choice(len(area), size=n, p=area / area.sum())
    if placement != "stratified":
        raise ValueError(f"placement must be 'stratified' or 'random', got {placement!r}")
    cum = np.cumsum(area) / area.sum()
    quantiles = (np.arange(n) + rng.random()) / n
    return np.minimum(np.searchsorted(cum, quantiles), len(area) - 1)


def canonical_positions(asset: HeadModelAsset, verts_cm: np.ndarray, binding: GaussianBinding) -> torch.Tensor:
    """[N, 3] barycentric points on the neutral mesh, scaled to about [-1, 1] (the MLP's input)."""
    corners = verts_cm[asset.triangles[binding.tri.cpu().numpy()]]
    points = (corners * binding.bary.cpu().numpy()[..., None]).sum(1)
    return torch.as_tensor((points - verts_cm.mean(0)) / 15.0, dtype=torch.float32)


def _initial_colours(asset: HeadModelAsset, tri: np.ndarray, bary: np.ndarray, texture: np.ndarray,
                     fallback: np.ndarray | None, tris: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """[N, 3] in [0, 1]: the atlas colour at each Gaussian's uv for skin, else the fallback."""
    skin_ids = [asset.material_names.index(m) for m in SKIN_MATERIALS if m in asset.material_names]
    skin = np.isin(asset.triangle_material()[tri], skin_ids)
    colour = np.full((len(tri), 3), 0.5, np.float32) if fallback is None else fallback[pick].astype(np.float32)
    uv = (asset.uvs[asset.triangle_uvs[tri]] * bary[..., None]).sum(1)  # [N, 2]
    au, av = atlas_uv(uv[:, 0], uv[:, 1])
    h, w = texture.shape[:2]
    x = np.clip((au * w).astype(int), 0, w - 1)
    y = np.clip(((1 - av) * h).astype(int), 0, h - 1)
    colour[skin] = texture[y[skin], x[skin]] / 255.0
    return colour
