"""Second-order spherical-harmonic lighting (9 coefficients per colour channel), for fitting and
for removing shading from baked textures.

Irradiance of a Lambertian surface under distant light is smooth in the normal and well carried by
the first 9 real SH functions (Ramamoorthi & Hanrahan 2001); 3DMM fitting has used this since
Blanz & Vetter. Normals are unit vectors in camera axes (OpenCV: x right, y down, z forward).
Colours are linear RGB.
"""

from __future__ import annotations

import numpy as np
import torch

# Real SH normalisation constants times the Lambertian convolution factors (pi, 2pi/3, pi/4),
# so that ``basis(n) @ coefficients`` is irradiance.
_C0 = 0.886227  # pi * 0.282095
_C1 = 1.023328  # 2pi/3 * 0.488603
_C2 = 0.858086  # pi/4 * 1.092548
_C3 = 0.247708  # pi/4 * 0.315392
_C4 = 0.429043  # pi/4 * 0.546274


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """normals: [..., 3] unit -> [..., 9] irradiance basis."""
    x, y, z = normals.unbind(-1)
    one = torch.ones_like(x)
    return torch.stack([
        _C0 * one, _C1 * y, _C1 * z, _C1 * x,
        _C2 * x * y, _C2 * y * z, _C3 * (3 * z * z - 1), _C2 * x * z, _C4 * (x * x - y * y),
    ], dim=-1)


def sh_basis_np(normals: np.ndarray) -> np.ndarray:
    """numpy twin of ``sh_basis``: [..., 3] -> [..., 9]."""
    return sh_basis(torch.from_numpy(np.asarray(normals, np.float64))).numpy()


def srgb_to_linear(c: torch.Tensor | np.ndarray):
    """sRGB in [0, 1] -> linear (the standard piecewise curve); torch or numpy."""
    if isinstance(c, torch.Tensor):
        return torch.where(c <= 0.04045, c / 12.92, ((c.clamp_min(0) + 0.055) / 1.055) ** 2.4)
    return np.where(c <= 0.04045, c / 12.92, ((np.maximum(c, 0) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """linear -> sRGB in [0, 1] (numpy)."""
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)
