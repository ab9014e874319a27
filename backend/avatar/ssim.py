"""Image similarity losses for fitting Gaussians: SSIM (as in 3DGS's ``loss_utils.ssim``) and PSNR.

Both accept [B, C, H, W] batches or single [H, W, C] images (the rasteriser's layout, one camera);
values are expected in [0, 1]; PSNR can be restricted to a (person) mask. SSIM is differentiable and uses an 11 x 11 Gaussian window with
sigma 1.5, zero padding ("same" size) and the usual C1 = 0.01^2, C2 = 0.03^2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

C1 = 0.01 ** 2
C2 = 0.03 ** 2


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalised separable Gaussian [size, size] (outer product of the 1-D kernel)."""
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def as_batch(img: torch.Tensor) -> torch.Tensor:
    """[H, W, C] -> [1, C, H, W]; [B, C, H, W] unchanged."""
    if img.dim() == 3:
        return img.permute(2, 0, 1)[None]
    if img.dim() != 4:
        raise ValueError(f"expected [B, C, H, W] or [H, W, C], got {tuple(img.shape)}")
    return img


def ssim(img1: torch.Tensor, img2: torch.Tensor, window_size: int = 11, sigma: float = 1.5,
         reduce: bool = True) -> torch.Tensor:
    """Structural similarity of two images of the same shape ([B, C, H, W] or [H, W, C]).

    Returns the mean SSIM (scalar) or, with reduce=False, the map [B, C, H, W].
    """
    a, b = as_batch(img1), as_batch(img2)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(img1.shape)} vs {tuple(img2.shape)}")
    ch = a.shape[1]
    win = gaussian_window(window_size, sigma, a.dtype, a.device).expand(ch, 1, window_size, window_size)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, win, padding=window_size // 2, groups=ch)

    mu1, mu2 = blur(a), blur(b)
    mu11, mu22, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    var1, var2, cov = blur(a * a) - mu11, blur(b * b) - mu22, blur(a * b) - mu12
    ssim_map = ((2 * mu12 + C1) * (2 * cov + C2)) / ((mu11 + mu22 + C1) * (var1 + var2 + C2))
    return ssim_map.mean() if reduce else ssim_map


def psnr(img1: torch.Tensor, img2: torch.Tensor, mask: torch.Tensor | None = None,
         max_val: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, 10 log10(max_val^2 / MSE) (inf if equal).

    img1, img2: same shape, e.g. [H, W, C] or [B, C, H, W]. mask: optional weights broadcastable
    to them (e.g. [H, W, 1] person mask, soft values allowed): the MSE is then the mask-weighted
    mean over the covered elements only, so an empty background does not inflate the score.
    """
    err = (img1 - img2) ** 2
    if mask is None:
        return 10.0 * torch.log10(max_val * max_val / err.mean())
    weight = mask.expand_as(err)
    mse = (err * weight).sum() / weight.sum().clamp_min(1e-12)
    return 10.0 * torch.log10(max_val * max_val / mse)
