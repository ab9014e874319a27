"""Parity on CPU: the project's rasteriser against gsplat's own pure-PyTorch reference functions
(``gsplat/cuda/_torch_impl.py``, ``_torch_impl_2dgs.py``), 3DGS and 2DGS, forward and gradients.

gsplat's references stop short of a CPU image: ``_rasterize_to_pixels*`` list the (Gaussian,
pixel) pairs with a CUDA kernel and composite them with nerfacc. Here the pair list is built in
torch with the kernel's rules (alpha >= 1/255, depth order, a pixel stops before the Gaussian that
would take its transmittance to <= 1e-4), and nerfacc's two functions used by gsplat's
``accumulate`` / ``accumulate_2dgs`` are given as small torch equivalents; the per-pair maths (the
projection, the conic / ray-splat kernel, alpha, colours, SH) is gsplat's own code, and so are the
gradients (autograd through gsplat's functions). The CUDA parity test is in test_avatar_raster.py.
"""

from __future__ import annotations

import sys
import types

import gsplat.cuda._torch_impl as gsplat_ref  # a declared dependency: missing is a failure, not a skip
import gsplat.cuda._torch_impl_2dgs as gsplat_ref_2dgs
import pytest
import torch

from backend.avatar.raster_torch import rasterization, rasterization_2dgs, sh_bases, view_colors

ALPHA_MIN, T_MIN = 1.0 / 255.0, 1e-4


def _render_weight_from_alpha(alphas, ray_indices, n_rays):
    """nerfacc's: weights = alpha * T, T exclusive product of (1 - alpha) along each (sorted) ray.
    alphas: [M]; ray_indices: [M] sorted -> (weights [M], trans [M])."""
    log_keep = torch.log1p(-alphas)
    total = torch.cumsum(log_keep, 0)
    first = torch.ones_like(ray_indices, dtype=torch.bool)
    first[1:] = ray_indices[1:] != ray_indices[:-1]
    start = torch.cummax(torch.where(first, torch.arange(len(first)), 0), 0).values
    trans = torch.exp(total - log_keep - (total[start] - log_keep[start]))
    return alphas * trans, trans


def _accumulate_along_rays(weights, values, ray_indices, n_rays):
    """nerfacc's: sum of weights (x values) per ray. weights: [M]; values: [M, D] | None -> [n_rays, D]."""
    src = weights[:, None] if values is None else weights[:, None] * values
    return src.new_zeros(n_rays, src.shape[-1]).index_add(0, ray_indices, src)


@pytest.fixture(autouse=True)
def nerfacc_stub(monkeypatch):
    monkeypatch.setitem(sys.modules, "nerfacc", types.SimpleNamespace(
        render_weight_from_alpha=_render_weight_from_alpha, accumulate_along_rays=_accumulate_along_rays))


def _pairs(pair_alpha, means2d, depths, radii, width, height, tile_size):
    """The kernel's pair list for one image: gsplat's tile intersections (``_isect_tiles``), each
    Gaussian at every pixel of its tiles, kept when alpha >= 1/255, front to back, cut before the
    pixel's transmittance would reach 1e-4.

    pair_alpha(gaussian_ids [M], pixel_ids [M]) -> alpha [M]; means2d: [N, 2]; depths: [N];
    radii: [N, 2]. Returns gaussian_ids, pixel_ids sorted by pixel, then depth."""
    with torch.no_grad():
        tiles_x, tiles_y = -(-width // tile_size), -(-height // tile_size)
        _, isect_ids, flat_ids = gsplat_ref._isect_tiles(means2d[None], radii[None], depths[None].float(), tile_size,
                                                         tiles_x, tiles_y)
        tile = (isect_ids >> 32).long()
        dy, dx = torch.meshgrid(torch.arange(tile_size), torch.arange(tile_size), indexing="ij")
        x = (tile % tiles_x * tile_size)[:, None] + dx.flatten()
        y = (tile // tiles_x * tile_size)[:, None] + dy.flatten()
        g_ids = flat_ids.long()[:, None].expand_as(x)
        inside = (x < width) & (y < height)
        g_ids, p_ids = g_ids[inside], (y * width + x)[inside]  # tile-major, depth order within a tile
        order = torch.argsort(p_ids, stable=True)  # pixel-major, depth order kept
        g_ids, p_ids = g_ids[order], p_ids[order]
        alpha = pair_alpha(g_ids, p_ids)
        keep = alpha >= ALPHA_MIN
        g_ids, p_ids, alpha = g_ids[keep], p_ids[keep], alpha[keep]
        _, trans = _render_weight_from_alpha(alpha, p_ids, width * height)
        done = trans * (1 - alpha) <= T_MIN  # inclusive T only falls along a ray
        return g_ids[~done], p_ids[~done]


def reference_3dgs(means, quats, scales, opacities, colors, viewmat, K, width, height, sh_degree=None,
                   antialiased=False, eps2d=0.3, tile_size=16):
    """gsplat's torch reference for one camera. viewmat: [1, 4, 4]; K: [1, 3, 3] -> ([H, W, 3], [H, W, 1])."""
    covars, _ = gsplat_ref._quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    radii, means2d, depths, conics, comp = gsplat_ref._fully_fused_projection(
        means, covars, viewmat, K, width, height, eps2d=eps2d, calc_compensations=antialiased)
    opac = opacities[None] * comp if antialiased else opacities[None]
    if sh_degree is not None:
        campos = torch.linalg.inv(viewmat)[:, :3, 3]
        rgb = gsplat_ref._spherical_harmonics(sh_degree, means[None] - campos[:, None], colors[None])
        colors_c = torch.clamp_min(rgb + 0.5, 0.0)
    else:
        colors_c = colors[None]

    def pair_alpha(g, p):
        d = torch.stack([p % width + 0.5, p // width + 0.5], -1) - means2d[0, g]
        c = conics[0, g]
        sigma = 0.5 * (c[:, 0] * d[:, 0] ** 2 + c[:, 2] * d[:, 1] ** 2) + c[:, 1] * d[:, 0] * d[:, 1]
        return torch.where(sigma >= 0, (opac[0, g] * torch.exp(-sigma)).clamp(max=0.999), 0.0)

    g_ids, p_ids = _pairs(pair_alpha, means2d[0], depths[0], radii[0], width, height, tile_size)
    image, alpha = gsplat_ref.accumulate(means2d, conics, opac, colors_c, g_ids, p_ids, torch.zeros_like(g_ids),
                                         width, height)
    return image[0], alpha[0]


def reference_2dgs(means, quats, scales, opacities, colors, viewmat, K, width, height, tile_size=16):
    """gsplat's 2DGS torch reference for one camera -> ([H, W, 3], [H, W, 1], normals [H, W, 3] camera frame)."""
    # gsplat's CUDA kernel takes scale z as 1 (surfels are flat); the torch reference would scale the
    # normals by it, so it is given that 1 here
    flat = torch.cat([scales[:, :2], torch.ones_like(scales[:, 2:])], -1)
    radii, means2d, depths, ray, normals = gsplat_ref_2dgs._fully_fused_projection_2dgs(
        means, quats, flat, viewmat, K, width, height)

    def pair_alpha(g, p):
        x, y = p % width + 0.5, p // width + 0.5
        m = ray[0, g]
        h_u = -m[:, 0] + m[:, 2] * x[:, None]
        h_v = -m[:, 1] + m[:, 2] * y[:, None]
        t = torch.linalg.cross(h_u, h_v)
        s3 = (t[:, 0] / t[:, 2]) ** 2 + (t[:, 1] / t[:, 2]) ** 2
        s2 = 2 * ((x - means2d[0, g, 0]) ** 2 + (y - means2d[0, g, 1]) ** 2)
        return (opacities[g] * torch.exp(-0.5 * torch.minimum(s3, s2))).clamp(max=0.999)

    g_ids, p_ids = _pairs(pair_alpha, means2d[0], depths[0], radii[0], width, height, tile_size)
    image, alpha, normal = gsplat_ref_2dgs.accumulate_2dgs(means2d, ray, opacities[None], colors[None], normals,
                                                          g_ids, p_ids, torch.zeros_like(g_ids), width, height)
    return image[0], alpha[0], normal[0]


def scene(n: int, seed: int, sh: int | None = None) -> dict:
    """n Gaussians in front of an identity camera, float64 (random orientations, partly overlapping)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.cat([(torch.rand(n, 2, generator=g) - 0.5) * 1.2, 2.0 + torch.rand(n, 1, generator=g)], -1)
    colors = torch.randn(n, (sh + 1) ** 2, 3, generator=g) * 0.5 if sh is not None else torch.rand(n, 3, generator=g)
    out = {"means": means, "quats": torch.randn(n, 4, generator=g),
           "scales": 0.03 + 0.12 * torch.rand(n, 3, generator=g), "opacities": 0.2 + 0.79 * torch.rand(n, generator=g),
           "colors": colors}
    return {k: v.double() for k, v in out.items()}


def camera(width: int, height: int, f: float, yaw: float = 0.0):
    """viewmat [1, 4, 4] (a small yaw about the scene centre) and K [1, 3, 3], float64."""
    c, s = torch.cos(torch.tensor(yaw)), torch.sin(torch.tensor(yaw))
    rot = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)
    view = torch.eye(4, dtype=torch.float64)
    view[:3, :3] = rot
    centre = torch.tensor([0.0, 0.0, 2.5], dtype=torch.float64)
    view[:3, 3] = centre - rot @ centre
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=torch.float64)
    return view[None], K[None]


CASES_3DGS = [  # (sh_degree, antialiased, yaw)
    (None, False, 0.0), (None, True, 0.3), (2, False, -0.4), (3, True, 0.0)]


@pytest.mark.parametrize("sh_degree,antialiased,yaw", CASES_3DGS)
def test_3dgs_forward_and_gradients_match_gsplat_reference(sh_degree, antialiased, yaw):
    w, h = 24, 20
    view, K = camera(w, h, 40.0, yaw)
    params = {k: v.requires_grad_() for k, v in scene(40, seed=1, sh=sh_degree).items()}
    img, alpha, _ = rasterization(**params, viewmats=view, Ks=K, width=w, height=h, sh_degree=sh_degree,
                                  rasterize_mode="antialiased" if antialiased else "classic")
    ref_img, ref_alpha = reference_3dgs(*params.values(), view, K, w, h, sh_degree, antialiased)
    assert alpha.max() > 0.9 and (alpha > 0.05).float().mean() > 0.5  # a covered image, not a trivial one
    assert torch.allclose(img[0], ref_img, atol=1e-9) and torch.allclose(alpha[0], ref_alpha, atol=1e-9)
    weights = torch.rand(h, w, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ours = torch.autograd.grad((torch.cat([img[0], alpha[0]], -1) * weights).sum(), list(params.values()))
    ref = torch.autograd.grad((torch.cat([ref_img, ref_alpha], -1) * weights).sum(), list(params.values()))
    for name, a, b in zip(params, ours, ref):
        assert b.abs().max() > 0, name
        assert torch.allclose(a, b, atol=1e-8, rtol=1e-6), (name, (a - b).abs().max())


@pytest.mark.parametrize("yaw,tile_size", [(0.0, 16), (0.5, 4)])
def test_2dgs_forward_and_gradients_match_gsplat_reference(yaw, tile_size):
    w, h = 24, 20
    view, K = camera(w, h, 40.0, yaw)
    params = {k: v.requires_grad_() for k, v in scene(40, seed=3).items()}
    # a surfel seen edge-on covers its 2D filter's dot only within its tiles: the same tiles both sides
    img, alpha, meta = rasterization_2dgs(**params, viewmats=view, Ks=K, width=w, height=h, tile_size=tile_size)
    ref_img, ref_alpha, ref_normals = reference_2dgs(*params.values(), view, K, w, h, tile_size)
    assert alpha.max() > 0.9 and (alpha > 0.05).float().mean() > 0.5
    assert torch.allclose(img[0], ref_img, atol=1e-9) and torch.allclose(alpha[0], ref_alpha, atol=1e-9)
    # ours are world-frame normals (gsplat.rasterization_2dgs rotates them back too)
    world = torch.einsum("ij,hwj->hwi", torch.linalg.inv(view[0])[:3, :3], ref_normals)
    assert torch.allclose(meta["render_normals"][0], world, atol=1e-9)
    weights = torch.rand(h, w, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ours = torch.autograd.grad((torch.cat([img[0], alpha[0]], -1) * weights).sum(), list(params.values()))
    ref = torch.autograd.grad((torch.cat([ref_img, ref_alpha], -1) * weights).sum(), list(params.values()))
    for name, a, b in zip(params, ours, ref):
        if name == "scales":  # the third scale is unused by surfels: both zero there
            assert (a[:, 2] == 0).all() and (b[:, 2] == 0).all()
            a, b = a[:, :2], b[:, :2]
        assert b.abs().max() > 0, name
        assert torch.allclose(a, b, atol=1e-8, rtol=1e-6), (name, (a - b).abs().max())


def test_projection_matches_gsplat_reference():
    """means2d, conics, depths and compensation of ``_fully_fused_projection``; our radii are
    opacity-aware (gsplat's CUDA kernel), so never larger than the reference's 3.33 sigma."""
    from backend.avatar.raster_torch import project_3dgs

    w, h = 40, 30
    view, K = camera(w, h, 30.0, 0.2)
    s = scene(200, seed=5)
    covars, _ = gsplat_ref._quat_scale_to_covar_preci(s["quats"], s["scales"], compute_preci=False)
    radii, means2d, depths, conics, comp = gsplat_ref._fully_fused_projection(
        s["means"], covars, view, K, w, h, calc_compensations=True)
    m2, con, opac, dep, rad = project_3dgs(s["means"], s["quats"], s["scales"], s["opacities"], view, K, w, h, 0.3,
                                           0.01, 1e10, 0.0, True)
    assert torch.allclose(m2, means2d, atol=1e-10) and torch.allclose(dep, depths, atol=1e-12)
    assert torch.allclose(con, conics, rtol=1e-9, atol=1e-12)
    assert torch.allclose(opac, s["opacities"] * comp, atol=1e-12)
    assert ((rad <= radii) | (radii == 0)).all() and ((rad > 0) <= (radii > 0)).all()


def test_sh_matches_gsplat_reference():
    dirs = torch.nn.functional.normalize(torch.randn(500, 3, dtype=torch.float64), dim=-1)
    for degree in range(5):
        k = (degree + 1) ** 2
        assert torch.allclose(sh_bases(degree, dirs), gsplat_ref._eval_sh_bases_fast(k, dirs), atol=1e-12)
    s = scene(30, seed=6, sh=3)
    view, _ = camera(8, 8, 10.0, 0.7)
    campos = torch.linalg.inv(view)[:, :3, 3]
    ref = torch.clamp_min(gsplat_ref._spherical_harmonics(3, s["means"][None] - campos[:, None], s["colors"][None]) + 0.5, 0)
    assert torch.allclose(view_colors(s["colors"], 3, s["means"], view), ref, atol=1e-12)
