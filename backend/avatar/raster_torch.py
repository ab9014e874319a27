"""Differentiable pure-PyTorch Gaussian rasteriser with gsplat's calling convention (CPU path).

``rasterization`` (3D Gaussians, EWA splatting) and ``rasterization_2dgs`` (2D surfels, ray-splat
intersection) follow gsplat 1.5.3 (``gsplat/rendering.py``, ``cuda/_torch_impl*.py`` and the CUDA
kernels): the same projection (Jacobian with gsplat's clamped frustum, ``eps2d`` dilation,
Mip-Splatting compensation for "antialiased"), opacity-aware 3.33-sigma radii, SH colours
``max(SH(dir) + 0.5, 0)`` with ``dir`` from the camera centre to the mean, and the compositing
rules in ``raster_tiles``. Autograd gives the backward pass; ``meta["means2d"]`` is part of the
graph, so ``meta["means2d"].retain_grad()`` yields the screen-space gradient for densification.

Only the subset HeadRig needs: one batch (means [N, 3]), pinhole cameras, unpacked meta.
Anything else raises NotImplementedError rather than rendering something different.
"""

from __future__ import annotations

import torch

from backend.avatar.binding import quaternion_to_matrix
from backend.avatar.raster_tiles import (
    ALPHA_MIN,
    NO_OPACITY,
    TileConfig,
    bin_tiles,
    composite,
)

# gsplat arguments this path does not implement, with the value that is harmless to pass.
_INERT = {"sparse_grad": False, "absgrad": False, "distributed": False, "camera_model": "pinhole",
          "segmented": False, "with_ut": False, "with_eval3d": False, "radial_coeffs": None,
          "tangential_coeffs": None, "thin_prism_coeffs": None, "ftheta_coeffs": None, "viewmats_rs": None,
          "channel_chunk": None, "rolling_shutter": None, "distloss": False, "depth_mode": "expected"}
_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")


def check_supported(means: torch.Tensor, packed: bool, render_mode: str, extra: dict) -> None:
    """Raise NotImplementedError for gsplat features the torch path lacks (TypeError for unknown names)."""
    if means.dim() != 2:
        raise NotImplementedError("torch rasteriser: batch dimensions are not supported (means must be [N, 3])")
    if packed:
        raise NotImplementedError("torch rasteriser: packed=True is not supported (meta is always [C, N, ...])")
    if render_mode not in _MODES:
        raise NotImplementedError(f"torch rasteriser: render_mode {render_mode!r} (supported: {_MODES})")
    for key, value in extra.items():
        if key not in _INERT:
            raise TypeError(f"rasterization() got an unexpected keyword argument {key!r}")
        default = _INERT[key]
        harmless = key == "channel_chunk" or (key == "rolling_shutter" and str(value).endswith("GLOBAL")) \
            or value is default or (not torch.is_tensor(value) and value == default)
        if not harmless:
            raise NotImplementedError(f"torch rasteriser: {key}={value!r} is not supported")


def sh_bases(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """Real SH basis (gsplat's ``_eval_sh_bases_fast``, Sloan's constants). dirs: [..., 3] unit
    vectors -> [..., (degree + 1)^2], degree <= 4."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, 0.2820947917738781)]
    if degree >= 1:
        out += [-0.48860251190292 * y, 0.48860251190292 * z, -0.48860251190292 * x]
    if degree >= 2:
        z2, c1, s1 = z * z, x * x - y * y, 2 * x * y
        out += [0.5462742152960395 * s1, -1.092548430592079 * z * y, 0.9461746957575601 * z2 - 0.3153915652525201,
                -1.092548430592079 * z * x, 0.5462742152960395 * c1]
    if degree >= 3:
        c2, s2 = x * c1 - y * s1, x * s1 + y * c1
        tc = -2.285228997322329 * z2 + 0.4570457994644658
        out += [-0.5900435899266435 * s2, 1.445305721320277 * z * s1, tc * y,
                z * (1.865881662950577 * z2 - 1.119528997770346), tc * x, 1.445305721320277 * z * c1,
                -0.5900435899266435 * c2]
    if degree >= 4:
        c3, s3 = x * c2 - y * s2, x * s2 + y * c2
        td = z * (-4.683325804901025 * z2 + 2.007139630671868)
        tc4 = 3.31161143515146 * z2 - 0.47308734787878
        mid = 1.984313483298443 * z2 * (1.865881662950577 * z2 - 1.119528997770346) \
            - 1.006230589874905 * (0.9461746957575601 * z2 - 0.3153915652525201)
        out += [0.6258357354491763 * s3, -1.770130769779931 * z * s2, tc4 * s1, td * y, mid, td * x, tc4 * c1,
                -1.770130769779931 * z * c2, 0.6258357354491763 * c3]
    return torch.stack(out, -1)


def view_colors(colors: torch.Tensor, sh_degree: int | None, means: torch.Tensor, viewmats: torch.Tensor
                ) -> torch.Tensor:
    """Per-view colours [C, N, D]. colors: [N, D] / [C, N, D] plain, or [N, K, 3] / [C, N, K, 3] SH
    coefficients when sh_degree is set (evaluated towards the camera centre, +0.5, clamped at 0)."""
    n_cam = viewmats.shape[0]
    if sh_degree is None:
        return colors.expand(n_cam, *colors.shape) if colors.dim() == 2 else colors
    if (sh_degree + 1) ** 2 > colors.shape[-2] or sh_degree > 4:
        raise ValueError(f"sh_degree {sh_degree} needs {(sh_degree + 1) ** 2} <= K <= 25, got K={colors.shape[-2]}")
    campos = torch.linalg.inv(viewmats)[:, :3, 3]  # [C, 3]
    dirs = torch.nn.functional.normalize(means[None] - campos[:, None], dim=-1)  # [C, N, 3]
    k = (sh_degree + 1) ** 2
    coeffs = colors[..., :k, :]
    rgb = (sh_bases(sh_degree, dirs)[..., None] * coeffs).sum(-2)  # coeffs broadcast over C
    return torch.clamp_min(rgb + 0.5, 0.0)


def to_camera(means: torch.Tensor, viewmats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """means: [N, 3]; viewmats: [C, 4, 4] -> camera-frame means [C, N, 3] and rotations [C, 3, 3]."""
    rot = viewmats[:, :3, :3]
    return torch.einsum("cij,nj->cni", rot, means) + viewmats[:, None, :3, 3], rot


def on_screen(means2d: torch.Tensor, radius: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """gsplat's cull of boxes wholly outside the image. [C, N, 2] x 2 -> [C, N] bool."""
    lo, hi = means2d + radius, means2d - radius
    return (lo[..., 0] > 0) & (hi[..., 0] < width) & (lo[..., 1] > 0) & (hi[..., 1] < height)


def project_3dgs(means, quats, scales, opacities, viewmats, Ks, width, height, eps2d, near_plane, far_plane,
                 radius_clip, antialiased, covars=None):
    """EWA projection (gsplat ``fully_fused_projection`` with opacities).

    means: [N, 3]; quats: [N, 4] (w, x, y, z); scales: [N, 3]; opacities: [N]; viewmats: [C, 4, 4];
    Ks: [C, 3, 3]; covars: optional [N, 3, 3] replacing quats/scales. Returns means2d [C, N, 2],
    conics [C, N, 3] (a, b, c of the inverse 2D covariance), opacities [C, N] (compensated when
    antialiased), depths [C, N], radii [C, N, 2] int32 (0: culled).
    """
    if covars is None:
        rs = quaternion_to_matrix(quats) * scales[:, None, :]
        covars = rs @ rs.transpose(-1, -2)
    mean_c, rot = to_camera(means, viewmats)
    cov_c = torch.einsum("cij,njk,clk->cnil", rot, covars, rot)
    x, y, depth = mean_c.unbind(-1)
    # culled below near_plane anyway; the clamp keeps z = 0 from putting inf * 0 = NaN in gradients
    z = depth.clamp_min(max(near_plane, 1e-6))
    fx, fy, cx, cy = (Ks[:, i, j, None] for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))
    # gsplat clamps the Jacobian's x/z, y/z to 1.3 x the frustum so off-screen splats stay sane
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    tx = z * torch.minimum(torch.maximum(x / z, -(cx / fx + 0.3 * tan_x)), (width - cx) / fx + 0.3 * tan_x)
    ty = z * torch.minimum(torch.maximum(y / z, -(cy / fy + 0.3 * tan_y)), (height - cy) / fy + 0.3 * tan_y)
    zero = torch.zeros_like(z)
    jac = torch.stack([fx / z, zero, -fx * tx / (z * z), zero, fy / z, -fy * ty / (z * z)], -1).unflatten(-1, (2, 3))
    cov2d = jac @ cov_c @ jac.transpose(-1, -2)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)
    det_orig = cov2d[..., 0, 0] * cov2d[..., 1, 1] - cov2d[..., 0, 1] * cov2d[..., 1, 0]
    a, b, c = cov2d[..., 0, 0] + eps2d, 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0]), cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    safe = det.clamp_min(1e-10)
    conics = torch.stack([c / safe, -b / safe, a / safe], -1)
    opac = opacities.expand_as(z)
    if antialiased:
        opac = opac * torch.sqrt((det_orig / safe).clamp_min(0.0))
    with torch.no_grad():
        # tighter than 3.33 sigma: beyond sqrt(2 ln(o / alpha_min)) sigma alpha < 1/255 anyway
        extend = torch.sqrt(2 * torch.log(opac.clamp_min(ALPHA_MIN) / ALPHA_MIN)).clamp(max=3.33)
        radius = torch.ceil(extend[..., None] * torch.stack([a, c], -1).clamp_min(0).sqrt())
        valid = (det > 0) & (depth >= near_plane) & (depth <= far_plane) & (opac >= ALPHA_MIN)
        valid &= (radius > radius_clip).any(-1) & on_screen(means2d, radius, width, height)
        radii = (radius * valid[..., None]).int()
    return means2d, conics, opac, depth, radii


def project_2dgs(means, quats, scales, viewmats, Ks, width, height, near_plane, far_plane, radius_clip):
    """Ray-splat projection of surfels (gsplat ``fully_fused_projection_2dgs``; scales[:, 2] unused).

    means: [N, 3]; quats: [N, 4]; scales: [N, 3]; viewmats: [C, 4, 4]; Ks: [C, 3, 3]. Returns means2d
    [C, N, 2], ray_transforms [C, N, 3, 3] (rows u, v, w of K [s_u t_u | s_v t_v | mean_c]), depths
    [C, N], normals [C, N, 3] (camera frame, facing the camera), radii [C, N, 2] int32.
    """
    mean_c, rot = to_camera(means, viewmats)
    axes = torch.einsum("cij,njk->cnik", rot, quaternion_to_matrix(quats))  # [C, N, 3, 3]
    tangents = axes[..., :2] * scales[None, :, None, :2]
    ray = Ks[:, None] @ torch.cat([tangents, mean_c[..., None]], -1)  # [C, N, 3, 3]
    normals = axes[..., 2]
    facing = torch.where((-normals * mean_c).sum(-1, keepdim=True) > 0, 1.0, -1.0)
    normals = normals * facing
    w = ray[..., 2, :]
    test = torch.tensor([1.0, 1.0, -1.0], dtype=means.dtype, device=means.device)
    dist = (w * w * test).sum(-1, keepdim=True)  # [C, N, 1]
    ok = dist != 0
    f = test / torch.where(ok, dist, torch.ones_like(dist))
    means2d = torch.stack([(ray[..., 0, :] * w * f).sum(-1), (ray[..., 1, :] * w * f).sum(-1)], -1)
    with torch.no_grad():
        sq = torch.stack([(ray[..., 0, :] ** 2 * f).sum(-1), (ray[..., 1, :] ** 2 * f).sum(-1)], -1)
        radius = torch.ceil(3.33 * (means2d * means2d - sq).clamp_min(1e-4).sqrt())
        z = mean_c[..., 2]
        valid = ok[..., 0] & (z > near_plane) & (z < far_plane) & (radius > radius_clip).any(-1)
        valid &= on_screen(means2d, radius, width, height)
        radii = (radius * valid[..., None]).int()
    return means2d, ray, mean_c[..., 2], normals, radii


def flat_with_pad(x: torch.Tensor, log_opacity: bool) -> torch.Tensor:
    """[C, N, F] -> [C N + 1, F]. The extra row is the padding Gaussian that fills short tile lists:
    zeros (a harmless kernel), with NO_OPACITY in the last column when that holds log-opacities."""
    flat = x.reshape(-1, x.shape[-1])
    pad = flat.new_zeros(1, flat.shape[-1])
    if log_opacity:
        pad[:, -1] = NO_OPACITY
    return torch.cat([flat, pad], 0)


def render_channels(colors: torch.Tensor, depths: torch.Tensor, render_mode: str) -> torch.Tensor:
    """[C, N, D] colours and [C, N] depths -> the channels to composite for render_mode."""
    if render_mode in ("D", "ED"):
        return depths[..., None]
    if render_mode in ("RGB+D", "RGB+ED"):
        return torch.cat([colors, depths[..., None]], -1)
    return colors


def finish(image: torch.Tensor, trans: torch.Tensor, backgrounds: torch.Tensor | None, render_mode: str
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """image: [C, H, W, X] composited channels; trans: [C, H, W, 1]; backgrounds: [C, D] or None.
    -> (render_colors [C, H, W, X], render_alphas [C, H, W, 1]) as gsplat returns them."""
    alphas = 1.0 - trans
    if backgrounds is not None and render_mode not in ("D", "ED"):
        bg = backgrounds
        if bg.shape[-1] < image.shape[-1]:  # depth channel: no background (gsplat pads with 0)
            bg = torch.cat([bg, bg.new_zeros(*bg.shape[:-1], image.shape[-1] - bg.shape[-1])], -1)
        image = image + trans * bg[:, None, None, :]
    if render_mode in ("ED", "RGB+ED"):
        image = torch.cat([image[..., :-1], image[..., -1:] / alphas.clamp(min=1e-10)], -1)
    return image, alphas


def rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width: int, height: int,
                  near_plane: float = 0.01, far_plane: float = 1e10, radius_clip: float = 0.0, eps2d: float = 0.3,
                  sh_degree: int | None = None, packed: bool = False, tile_size: int | None = None, backgrounds=None,
                  render_mode: str = "RGB", rasterize_mode: str = "classic", covars=None,
                  config: TileConfig | None = None, **unsupported):
    """Rasterise N 3D Gaussians into C images (gsplat.rasterization's subset, on any device).

    Args:
        means: [N, 3] world centres. quats: [N, 4] (w, x, y, z), need not be normalised.
        scales: [N, 3]. opacities: [N] in [0, 1].
        colors: [N, D] or [C, N, D] post-activation values, or with sh_degree set [N, K, 3] /
            [C, N, K, 3] SH coefficients (DC first, K >= (sh_degree + 1)^2).
        viewmats: [C, 4, 4] world -> camera. Ks: [C, 3, 3] pinhole intrinsics.
        width, height: image size in pixels.
        near_plane, far_plane, radius_clip, eps2d, sh_degree, tile_size: as gsplat.
        packed: must be False (meta is [C, N, ...]).
        backgrounds: [C, D] or None. render_mode: "RGB", "D", "ED", "RGB+D" or "RGB+ED".
        rasterize_mode: "classic" or "antialiased" (Mip-Splatting opacity compensation).
        covars: optional [N, 3, 3] world covariances replacing quats and scales.
        config: TileConfig (per-tile cap, batch sizes, checkpointing); None for the defaults.
        **unsupported: other gsplat arguments; a non-default value raises NotImplementedError.

    Returns:
        render_colors [C, H, W, X] (X = D, 1 or D + 1 by render_mode), render_alphas [C, H, W, 1],
        meta with means2d [C, N, 2] (differentiable), radii [C, N, 2] int32, depths [C, N],
        conics [C, N, 3], opacities [C, N], n_isects, n_dropped (cut by the per-tile cap), width,
        height, tile_size, tile_width, tile_height, n_cameras.
    """
    check_supported(means, packed, render_mode, unsupported)
    if rasterize_mode not in ("classic", "antialiased"):
        raise NotImplementedError(f"torch rasteriser: rasterize_mode {rasterize_mode!r}")
    cfg = config or TileConfig()
    tile_size = tile_size or cfg.tile_size
    means2d, conics, opac, depths, radii = project_3dgs(
        means, quats, scales, opacities, viewmats, Ks, width, height, eps2d, near_plane, far_plane, radius_clip,
        rasterize_mode == "antialiased", covars)
    channels = render_channels(view_colors(colors, sh_degree, means, viewmats), depths, render_mode)
    feat = torch.cat([means2d, conics, torch.log(opac.clamp_min(1e-12))[..., None]], -1)  # [C, N, 6]
    bins = bin_tiles(means2d, radii, depths, width, height, tile_size, cfg.max_per_tile)
    image, trans = composite("3dgs", flat_with_pad(feat, True), flat_with_pad(channels, False), bins,
                             len(viewmats), width, height, tile_size, cfg)
    image, alphas = finish(image, trans, backgrounds, render_mode)
    meta = {"camera_ids": None, "gaussian_ids": None, "radii": radii, "means2d": means2d, "depths": depths,
            "conics": conics, "opacities": opac, "n_isects": bins.n_isects, "n_dropped": bins.n_dropped,
            "width": width, "height": height, "tile_size": tile_size, "tile_width": bins.tiles_x,
            "tile_height": bins.tiles_y, "n_cameras": len(viewmats)}
    return image, alphas, meta


def rasterization_2dgs(means, quats, scales, opacities, colors, viewmats, Ks, width: int, height: int,
                       near_plane: float = 0.01, far_plane: float = 1e10, radius_clip: float = 0.0,
                       eps2d: float = 0.3, sh_degree: int | None = None, packed: bool = False,
                       tile_size: int | None = None,
                       backgrounds=None, render_mode: str = "RGB", config: TileConfig | None = None,
                       **unsupported):
    """Rasterise N 2D Gaussian surfels (2DGS) into C images; gsplat.rasterization_2dgs's maths.

    Args are those of ``rasterization`` (scales[:, 2] is ignored: surfels are flat; eps2d is
    accepted and unused, as in gsplat, whose 2DGS low-pass filter is fixed). Each pixel's ray is
    intersected with the splat plane; the kernel is min(3D intersection, 2D filter of radius
    sqrt(0.5) px) as in gsplat.

    Returns:
        render_colors [C, H, W, X], render_alphas [C, H, W, 1], and meta with render_normals
        [C, H, W, 3] (accumulated world-frame normals, no background), normals [C, N, 3] (camera
        frame, facing the camera), ray_transforms [C, N, 3, 3], means2d [C, N, 2], radii [C, N, 2],
        depths [C, N], gradient_2dgs [C, N, 2] (zeros whose .grad after backward is the gradient
        of a screen-space shift of each splat, gsplat's densification signal; requires grad only
        when means does), opacities [C, N], n_isects, n_dropped.
        gsplat's extra outputs (surface normals from depth, distortion, median depth) are not made.
    """
    check_supported(means, packed, render_mode, unsupported)
    cfg = config or TileConfig()
    tile_size = tile_size or cfg.tile_size
    means2d, ray, depths, normals, radii = project_2dgs(
        means, quats, scales, viewmats, Ks, width, height, near_plane, far_plane, radius_clip)
    # gsplat's densification signal: the gradient of a screen-space shift of each splat, which
    # moves the translation column of rows u, v by depth * shift (and the 2D filter's centre)
    densify = torch.zeros_like(means2d, requires_grad=torch.is_grad_enabled() and means.requires_grad)
    shift = densify * depths.detach()[..., None]
    ray_shifted = ray + torch.cat([ray.new_zeros(*ray.shape[:-1], 2), torch.cat(
        [shift, torch.zeros_like(shift[..., :1])], -1)[..., None]], -1)
    opac = opacities.expand_as(depths)
    logo = torch.log(opac.clamp_min(1e-12))[..., None]
    feat = torch.cat([means2d + densify, ray_shifted.flatten(-2), logo], -1)  # [C, N, 12]
    channels = render_channels(view_colors(colors, sh_degree, means, viewmats), depths, render_mode)
    channels = torch.cat([channels, normals], -1)
    bins = bin_tiles(means2d, radii, depths, width, height, tile_size, cfg.max_per_tile)
    image, trans = composite("2dgs", flat_with_pad(feat, True), flat_with_pad(channels, False), bins,
                             len(viewmats), width, height, tile_size, cfg)
    image, render_normals = image[..., :-3], image[..., -3:]
    image, alphas = finish(image, trans, backgrounds, render_mode)
    render_normals = torch.einsum("cij,chwj->chwi", torch.linalg.inv(viewmats)[:, :3, :3], render_normals)
    meta = {"camera_ids": None, "gaussian_ids": None, "radii": radii, "means2d": means2d, "depths": depths,
            "ray_transforms": ray, "normals": normals, "render_normals": render_normals, "opacities": opac,
            "gradient_2dgs": densify, "n_isects": bins.n_isects, "n_dropped": bins.n_dropped, "width": width,
            "height": height, "tile_size": tile_size, "tile_width": bins.tiles_x, "tile_height": bins.tiles_y,
            "n_cameras": len(viewmats)}
    return image, alphas, meta
