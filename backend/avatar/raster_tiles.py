"""Tile binning and front-to-back alpha compositing for the pure-PyTorch rasteriser.

The maths is gsplat's (``RasterizeToPixels3DGSFwd.cu`` / ``...2DGSFwd.cu``): pixel centres at +0.5,
``alpha = min(0.999, opacity * exp(-sigma))``, contributions with ``alpha < 1/255`` skipped, and a
pixel stops (exclusively) at the first Gaussian that would take its transmittance to <= 1e-4.

Layout. Every (Gaussian, tile) overlap of the projected boxes is listed, sorted by image, tile
and depth. A step evaluates ``depth_batch`` consecutive Gaussians of the lists of a group of
tiles at all their pixels, as ``[tiles, pixels, depth_batch]`` blocks: transmittance within the
block is an exclusive cumulative sum of log(1 - alpha), and it carries over to the next batch.
Tiles whose pixels are all saturated drop out (the front of an opaque head hides the back).
Tiles are grouped with others of similar list length (little padding), at most
``TileConfig.pairs_per_step`` pairs a step, so transient memory is bounded. Autograd keeps each
step's pair tensors for the backward pass (~40 bytes a pair); beyond ``graph_pairs`` pairs a
render, each group is gradient-checkpointed instead (recomputed in backward), so peak memory stays
bounded whatever the image size or Gaussian count.

Approximation. Only the ``max_per_tile`` nearest Gaussians of a tile are composited (the rest are
counted in ``meta["n_dropped"]``); with the defaults (4 x 4 tiles, 2048) nothing is dropped at the
resolutions and counts HeadRig uses, so renders match gsplat's to float precision.

The per-pixel kernels are batched matrix products: sigma is a quadratic (3DGS), and the 2DGS
ray-splat intersection is linear, in the pixel coordinates, so per-(tile, Gaussian) coefficients
times per-pixel monomials give a whole block in one pass instead of ~10 broadcast element-wise
passes. Coordinates are centred on the tile so the expanded polynomials keep float32 precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

ALPHA_MIN = 1.0 / 255.0  # gsplat's ALPHA_THRESHOLD
ALPHA_MAX = 0.999
LOG_T_MIN = math.log(1e-4)  # a pixel is done before its transmittance would reach 1e-4
NO_OPACITY = -1e4  # log-opacity of the padding Gaussian: exp() of it is exactly 0


@dataclass(frozen=True)
class TileConfig:
    """Knobs of the torch rasteriser; none changes the maths except ``max_per_tile``.

    max_per_tile: nearest Gaussians composited per tile (None: all). The only approximation.
    tile_size: tile side in pixels when the caller passes none. 4 is fastest on CPU: a Gaussian
        is evaluated at every pixel of each tile its box touches, and smaller tiles waste fewer
        evaluations (16, gsplat's CUDA default, is ~2.5x slower here).
    depth_batch: Gaussians of one tile's list evaluated per step.
    pairs_per_step: pixel x Gaussian pairs per step; bounds the transient memory of a step.
    checkpoint: recompute each chunk in backward instead of keeping its pair tensors (~40
        bytes a pair); None: only when a render evaluates more than graph_pairs pairs.
    """

    max_per_tile: int | None = 2048
    tile_size: int = 4
    depth_batch: int = 32
    pairs_per_step: int = 1 << 21
    checkpoint: bool | None = None
    graph_pairs: int = 1 << 24


@dataclass
class TileBins:
    """Sorted (Gaussian, tile) overlaps. ids: [M] flat Gaussian index (image * N + gaussian);
    starts / counts: [I * T] each tile's range in ``ids`` (counts capped); tiles_x / tiles_y:
    tiles per row / column; n_dropped: overlaps beyond the cap."""

    ids: torch.Tensor
    starts: torch.Tensor
    counts: torch.Tensor
    tiles_x: int
    tiles_y: int
    n_isects: int
    n_dropped: int


@torch.no_grad()
def bin_tiles(means2d: torch.Tensor, radii: torch.Tensor, depths: torch.Tensor, width: int, height: int,
              tile_size: int, max_per_tile: int | None) -> TileBins:
    """means2d: [I, N, 2]; radii: [I, N, 2] (0: culled); depths: [I, N]. gsplat's ``isect_tiles``:
    tile box floor((m - r) / ts) .. ceil((m + r) / ts), lists sorted front to back."""
    n_img, n = depths.shape
    tx, ty = math.ceil(width / tile_size), math.ceil(height / tile_size)
    img, gid = (radii > 0).all(-1).nonzero(as_tuple=True)
    order = torch.argsort(depths[img, gid])  # depth order first; a stable sort by tile keeps it
    img, gid = img[order], gid[order]
    m, r = means2d[img, gid] / tile_size, radii[img, gid].to(means2d.dtype) / tile_size
    lo = torch.floor(m - r).long()
    hi = torch.ceil(m + r).long()
    lim = torch.tensor([tx, ty], device=lo.device)
    lo, hi = torch.minimum(lo.clamp_min(0), lim), torch.minimum(hi.clamp_min(0), lim)
    span = (hi - lo).int()  # [G, 2]
    per_gauss = span[:, 0] * span[:, 1]
    # Per pair: key = its Gaussian's first tile key + row * tiles_x + column. Values are expanded
    # with repeat_interleave rather than gathered through a [G, 2] index, and kept int32.

    def expand(values: torch.Tensor) -> torch.Tensor:
        return torch.repeat_interleave(values.int(), per_gauss, output_size=int(per_gauss.sum()))

    local = torch.arange(int(per_gauss.sum()), dtype=torch.int32, device=lo.device) \
        - expand(torch.cumsum(per_gauss, 0) - per_gauss)
    row_len = expand(span[:, 0])
    first_key = expand(img * (tx * ty) + lo[:, 1] * tx + lo[:, 0])
    key = first_key + torch.div(local, row_len, rounding_mode="floor") * tx + local % row_len
    key, perm = torch.sort(key, stable=True)
    ids = expand(img * n + gid).index_select(0, perm)
    counts = torch.bincount(key, minlength=n_img * tx * ty)
    starts = torch.cumsum(counts, 0) - counts
    capped = counts if max_per_tile is None else counts.clamp(max=max_per_tile)
    return TileBins(ids, starts, capped, tx, ty, len(ids), int((counts - capped).sum()))


def plan_chunks(counts: torch.Tensor, pixels: int, cfg: TileConfig) -> list[torch.Tensor]:
    """Groups of non-empty tile indices, longest lists first, each with at most
    ``cfg.pairs_per_step`` pairs per depth step. counts: [I * T] -> list of [Tc] (long)."""
    tiles = torch.nonzero(counts > 0)[:, 0]
    tiles = tiles[torch.argsort(counts[tiles], descending=True, stable=True)]
    step_k = counts[tiles].clamp(max=cfg.depth_batch).tolist()
    chunks, begin = [], 0
    while begin < len(tiles):
        size = max(1, cfg.pairs_per_step // (pixels * step_k[begin]))  # first tile has the longest list
        chunks.append(tiles[begin:begin + size])
        begin += size
    return chunks


def pixel_monomials(tile_size: int, kind: str, like: torch.Tensor) -> torch.Tensor:
    """Per-pixel features in coordinates centred on the tile (pixel centres at +0.5 from their
    corner): [P, 6] for "3dgs" (x^2, y^2, xy, x, y, 1), [P, 4] for "2dgs" (x, y, 1, x^2 + y^2)."""
    j = torch.arange(tile_size, dtype=like.dtype, device=like.device) + 0.5 - tile_size / 2
    y, x = (t.reshape(-1) for t in torch.meshgrid(j, j, indexing="ij"))
    one = torch.ones_like(x)
    if kind == "3dgs":
        return torch.stack([x * x, y * y, x * y, x, y, one], -1)
    return torch.stack([x, y, one, x * x + y * y], -1)


def gaussian_coeffs_3dgs(feat: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
    """feat: [Tc, K, 6] (mean x, mean y, conic a, b, c, log opacity); origin: [Tc, 1, 2] tile
    centre. -> [Tc, 6, K] so that monomials @ coeffs = log(opacity) - sigma, i.e. its exp() is
    opacity * exp(-sigma) with sigma = 0.5 (a dx^2 + c dy^2) + b dx dy (negated here, on [Tc, K],
    to save a pass over the [Tc, P, K] block)."""
    mx, my = (feat[..., :2] - origin).unbind(-1)
    a, b, c, logo = feat[..., 2:].unbind(-1)
    const = logo - 0.5 * a * mx * mx - 0.5 * c * my * my - b * mx * my
    return torch.stack([-0.5 * a, -0.5 * c, -b, a * mx + b * my, c * my + b * mx, const], 1)


def gaussian_coeffs_2dgs(feat: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
    """feat: [Tc, K, 12] (mean x, y, ray transform rows u, v, w (3 each), log opacity); origin:
    [Tc, 1, 2]. -> [Tc, 4, 4 K]: monomials (x, y, 1, r^2) @ coeffs gives, per Gaussian, the
    homogeneous intersection h_u x h_v (3 values, linear in x, y because w x w = 0) and the
    2D low-pass term |p - mean|^2 (gsplat's FILTER_INV_SQUARE_2DGS = 2 is applied by the caller)."""
    ox, oy = origin[..., 0, None], origin[..., 1, None]  # [Tc, 1, 1]
    u, v, w = feat[..., 2:5], feat[..., 5:8], feat[..., 8:11]
    u, v = u - ox * w, v - oy * w  # h_u = (ox + x) w - u = x w - (u - ox w)
    rows = [-torch.linalg.cross(w, v), -torch.linalg.cross(u, w), torch.linalg.cross(u, v)]  # [Tc, K, 3] each
    cross = torch.stack(rows, 1).permute(0, 1, 3, 2)  # [Tc, 3 monomials, 3 comps, K]
    cross = torch.cat([cross, torch.zeros_like(cross[:, :1])], 1)  # r^2 plays no part
    m = feat[..., :2] - origin  # [Tc, K, 2]
    filt = torch.stack([-2 * m[..., 0], -2 * m[..., 1], (m * m).sum(-1), torch.ones_like(m[..., 0])], 1)
    return torch.cat([cross.flatten(2), filt], 2)  # [Tc, 4, 4 K]


def step_alpha(kind: str, mono: torch.Tensor, coeffs: torch.Tensor, logo: torch.Tensor) -> torch.Tensor:
    """Alphas of one step. mono: [P, F]; coeffs from gaussian_coeffs_*; logo: [Tc, K] log
    opacity (2DGS only). -> [Tc, P, K], already 0 where gsplat skips the contribution."""
    if kind == "3dgs":
        alpha = torch.exp(mono @ coeffs)
    else:
        k = logo.shape[-1]
        out = (mono @ coeffs).unflatten(-1, (4, k))  # [Tc, P, 4, K]
        cx, cy, cz, dist2 = out.unbind(-2)
        hit = cz != 0  # a ray parallel to the splat: gsplat skips it
        cz = torch.where(hit, cz, torch.ones_like(cz))
        sigma = 0.5 * torch.minimum((cx * cx + cy * cy) / (cz * cz), 2.0 * dist2)
        alpha = torch.exp(logo[:, None, :] - sigma) * hit
    # threshold() zeroes alpha <= 1/255 in one pass (gsplat skips alpha < 1/255: equal is a tie)
    return torch.nn.functional.threshold(alpha.clamp(max=ALPHA_MAX), ALPHA_MIN, 0.0)


def composite_chunk(kind: str, feat: torch.Tensor, colors: torch.Tensor, bins: TileBins, tiles: torch.Tensor,
                    tile_size: int, depth_batch: int) -> torch.Tensor:
    """Front-to-back compositing of a chunk of tiles.

    feat: [I N + 1, F] per-Gaussian kernel parameters (last row: padding, zero opacity);
    colors: [I N + 1, D + 1] whose last channel is 1, so that the same matrix product that
    accumulates colour accumulates alpha (sum of weights = 1 - T, by telescoping); tiles: [Tc]
    global tile indices. Returns [Tc, P, D + 1] (colour without background, alpha), P = tile_size^2.
    """
    pad = feat.shape[0] - 1
    per_image = bins.tiles_x * bins.tiles_y
    local = tiles % per_image
    corner = torch.stack([local % bins.tiles_x, local // bins.tiles_x], -1).to(feat.dtype) * tile_size
    origin = corner + tile_size / 2  # small local coordinates keep the expanded kernels precise
    mono = pixel_monomials(tile_size, kind, feat)
    coeff_fn = gaussian_coeffs_3dgs if kind == "3dgs" else gaussian_coeffs_2dgs
    out = feat.new_zeros(len(tiles), tile_size * tile_size, colors.shape[-1])
    starts, counts = bins.starts[tiles], bins.counts[tiles]
    live = torch.arange(len(tiles), device=feat.device)
    done = torch.zeros(out.shape[:2], dtype=torch.bool, device=feat.device)  # pixel met its stop
    for first in range(0, int(counts.max()), depth_batch):
        live = live[(counts[live] > first) & ~done[live].all(1)]
        if len(live) == 0:
            break
        k = min(depth_batch, int(counts[live].max()) - first)
        pos = first + torch.arange(k, device=feat.device)
        inside = pos < counts[live, None]
        gid = torch.where(inside, bins.ids[(starts[live, None] + pos).clamp(max=bins.n_isects - 1)], pad)
        f = feat[gid]  # [L, K, F]
        alpha = step_alpha(kind, mono, coeff_fn(f, origin[live, None]), f[..., -1])
        log1m = torch.log1p(-alpha)
        csum = torch.cumsum(log1m, -1)  # log(T after each Gaussian / T at the step's start)
        t_in = 1.0 - out[live, :, -1]  # [L, P] transmittance so far
        # gsplat stops before the Gaussian that takes T to <= 1e-4; T only falls, so the kept
        # set is a prefix. A threshold: no gradient.
        keep = csum.detach() > (LOG_T_MIN - torch.log(t_in.detach().clamp_min(1e-30)))[..., None]
        weight = torch.where(keep, alpha * torch.exp(csum - log1m), 0.0)  # alpha * T_before / T_in
        done[live] |= ~keep[..., -1]  # kept is a prefix: a dropped last entry means a stop
        out = out.index_put((live,), out[live] + t_in[..., None] * torch.bmm(weight, colors[gid]))
    return out


def composite(kind: str, feat: torch.Tensor, colors: torch.Tensor, bins: TileBins, n_images: int,
              width: int, height: int, tile_size: int, cfg: TileConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """All tiles of all images. feat: [I N + 1, F]; colors: [I N + 1, D].
    Returns colours [I, H, W, D] (no background) and transmittance [I, H, W, 1]."""
    n_pix = tile_size * tile_size
    n_tiles = n_images * bins.tiles_x * bins.tiles_y
    colors = torch.cat([colors, torch.ones_like(colors[:, :1])], -1)
    out = feat.new_zeros(n_tiles, n_pix, colors.shape[-1])
    grads = torch.is_grad_enabled() and (feat.requires_grad or colors.requires_grad)
    if grads:  # an empty sum: zero, but it ties the image to the graph even if all is culled
        out = out + feat[:0].sum() + colors[:0].sum()
    pairs = int(bins.counts.sum()) * n_pix  # pairs evaluated, at most (tiles that saturate stop early)
    remat = grads and (cfg.checkpoint if cfg.checkpoint is not None else pairs > cfg.graph_pairs)
    for tiles in plan_chunks(bins.counts, n_pix, cfg):
        args = (kind, feat, colors, bins, tiles, tile_size, cfg.depth_batch)
        chunk = checkpoint(composite_chunk, *args, use_reentrant=False) if remat else composite_chunk(*args)
        out = out.index_put((tiles,), chunk)
    image = out.reshape(n_images, bins.tiles_y, bins.tiles_x, tile_size, tile_size, -1).permute(
        0, 1, 3, 2, 4, 5).reshape(n_images, bins.tiles_y * tile_size, bins.tiles_x * tile_size, -1)
    image = image[:, :height, :width]
    return image[..., :-1], 1.0 - image[..., -1:]
