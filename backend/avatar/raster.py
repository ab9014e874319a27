"""One entry point for Gaussian rasterisation: gsplat's CUDA kernels when they can run, else the
pure-PyTorch rasteriser (``raster_torch``), with the same arguments and outputs.

gsplat is optional (not a dependency): it is imported on first use, and "auto" falls back to the
torch path when it is missing, when CUDA is not available or when the tensors are on the CPU.
Both paths return ``(render_colors [C, H, W, X], render_alphas [C, H, W, 1], meta)`` with meta in
the unpacked layout (``packed=False``), so callers (densification, losses) need not know which ran.
"""

from __future__ import annotations

import importlib

import torch

from backend.avatar import raster_torch
from backend.avatar.raster_tiles import TileConfig

BACKENDS = ("auto", "gsplat", "torch")
GSPLAT_TILE = 16  # gsplat's default (its kernels are tested with 16 only)


def gsplat_module():
    """The gsplat package, or None when it is not installed (or fails to import)."""
    try:
        return importlib.import_module("gsplat")
    except (ImportError, OSError, RuntimeError):  # absent, or a broken CUDA toolchain at import
        return None


def choose_backend(backend: str, means: torch.Tensor) -> str:
    """"auto" -> "gsplat" when CUDA is available, means is on a CUDA device and gsplat imports,
    else "torch". An explicit "gsplat" that cannot run raises RuntimeError."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    usable = torch.cuda.is_available() and means.is_cuda
    if backend == "gsplat":
        if not usable:
            raise RuntimeError("backend='gsplat' needs CUDA tensors on a machine with CUDA")
        if gsplat_module() is None:
            raise RuntimeError("backend='gsplat' needs the gsplat package (pip install gsplat)")
        return "gsplat"
    if backend == "auto" and usable and gsplat_module() is not None:
        return "gsplat"
    return "torch"


def rasterize(means, quats, scales, opacities, colors, viewmats, Ks, width: int, height: int,
              near_plane: float = 0.01, far_plane: float = 1e10, eps2d: float = 0.3, sh_degree: int | None = None,
              backgrounds=None, render_mode: str = "RGB", rasterize_mode: str = "classic", tile_size: int | None = None,
              backend: str = "auto", config: TileConfig | None = None, **kwargs):
    """Rasterise 3D Gaussians (gsplat.rasterization's convention).

    Args:
        means: [N, 3]. quats: [N, 4] (w, x, y, z). scales: [N, 3]. opacities: [N].
        colors: [N, D] / [C, N, D], or SH coefficients [N, K, 3] / [C, N, K, 3] with sh_degree.
        viewmats: [C, 4, 4] world -> camera. Ks: [C, 3, 3]. width, height: pixels.
        backgrounds: [C, D] or None. render_mode: "RGB" | "D" | "ED" | "RGB+D" | "RGB+ED".
        rasterize_mode: "classic" | "antialiased". backend: "auto" | "gsplat" | "torch".
        tile_size: None picks each path's fastest (gsplat 16, torch TileConfig.tile_size = 4);
            it changes speed only, never the image (bar the torch path's per-tile cap).
        config: the torch path's TileConfig (ignored by gsplat). kwargs: further gsplat arguments
            (the torch path raises NotImplementedError for those it lacks).

    Returns:
        render_colors [C, H, W, X], render_alphas [C, H, W, 1], meta (means2d [C, N, 2] in the
        graph, radii [C, N, 2], depths [C, N], ...).
    """
    common = dict(near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree,
                  backgrounds=backgrounds, render_mode=render_mode, rasterize_mode=rasterize_mode,
                  packed=False, **kwargs)
    args = (means, quats, scales, opacities, colors, viewmats, Ks, width, height)
    if choose_backend(backend, means) == "gsplat":
        return gsplat_module().rasterization(*args, tile_size=tile_size or GSPLAT_TILE, **common)
    return raster_torch.rasterization(*args, tile_size=tile_size, config=config, **common)


def rasterize_2dgs(means, quats, scales, opacities, colors, viewmats, Ks, width: int, height: int,
                   near_plane: float = 0.01, far_plane: float = 1e10, eps2d: float = 0.3,
                   sh_degree: int | None = None, backgrounds=None, render_mode: str = "RGB",
                   tile_size: int | None = None,
                   backend: str = "auto", config: TileConfig | None = None, **kwargs):
    """Rasterise 2D Gaussian surfels (gsplat.rasterization_2dgs's maths), arguments as ``rasterize``
    (scales[:, 2] ignored; no rasterize_mode).

    Returns:
        render_colors [C, H, W, X], render_alphas [C, H, W, 1], meta with render_normals
        [C, H, W, 3] (world frame), normals [C, N, 3], means2d, radii, depths, gradient_2dgs. From
        gsplat, meta also holds surf_normals, render_distort and render_median.
    """
    common = dict(near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree,
                  backgrounds=backgrounds, render_mode=render_mode, packed=False, **kwargs)
    args = (means, quats, scales, opacities, colors, viewmats, Ks, width, height)
    if choose_backend(backend, means) != "gsplat":
        return raster_torch.rasterization_2dgs(*args, tile_size=tile_size, config=config, **common)
    colors_out, alphas, normals, surf_normals, distort, median, meta = gsplat_module().rasterization_2dgs(
        *args, tile_size=tile_size or GSPLAT_TILE, **common)
    meta = {**meta, "render_normals": normals, "surf_normals": surf_normals, "render_distort": distort,
            "render_median": median}
    return colors_out, alphas, meta
