"""Bake the expression MLP into per-shape-key deltas that Blender can apply (``gaussians_expr.bin``).

The avatar's MLP (``model.ExpressionMLP``) maps the 53 expression weights w and each Gaussian's
canonical position to a triangle-local offset and a colour change. Blender's geometry nodes have
no MLP; what they can do cheaply is a weighted sum driven by the head's shape-key values. So the
MLP is linearised around the neutral expression:

    MLP(w) ~= MLP(0) + sum_k w_k delta_k

``MLP(0)`` is folded into ``gaussians.ply`` (``neutral_binding``), the deltas go to the file
(format: ``shared.gaussian_expressions``). Two choices of delta_k:

* "tangent": dMLP/dw_k at w = 0 (forward-mode autodiff, ``torch.func.jacfwd``), exact as w -> 0;
* "secant":  MLP(e_k) - MLP(0), exact at w_k = 1 for one key alone.

Which matches the MLP better at the weights animation uses (0.3-1.0, keys combined) is measured by
``linearisation_error`` (BENCHMARKS.md, "Expression bake"); the secant won on the d0 avatar, so it
is the default.
"""

from __future__ import annotations

import numpy as np
import torch

from backend.avatar.binding import GaussianBinding, deform
from backend.avatar.model import SH_C0, ExpressionMLP, GaussianAvatar

LINEARISATIONS = ("secant", "tangent")
_CHUNK = 16384  # Gaussians per forward-mode pass: [E, chunk, hidden] activations stay small


def _mlp_outputs(mlp: ExpressionMLP, canonical: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """weights: [B, E] -> [B, N, 6] (offset | colour) of the MLP for each weight vector."""
    return torch.stack([torch.cat(mlp(w, canonical), 1) for w in weights])


@torch.no_grad()
def neutral_outputs(avatar: GaussianAvatar) -> tuple[torch.Tensor, torch.Tensor]:
    """MLP(0): (offset [N, 3], colour [N, 3]); zeros when the avatar has no MLP."""
    n = avatar.canonical.shape[0]
    if avatar.mlp is None:
        zero = torch.zeros(n, 3, device=avatar.device)
        return zero, zero.clone()
    zero = torch.zeros(1, avatar.asset.n_expressions, device=avatar.device)
    out = _mlp_outputs(avatar.mlp, avatar.canonical, zero)[0]
    return out[:, :3], out[:, 3:]


def neutral_binding(avatar: GaussianAvatar) -> GaussianBinding:
    """The avatar's binding with MLP(0) folded in: offset + MLP offset, DC SH + MLP colour / SH_C0,
    exactly what ``avatar.gaussians(verts, zeros)`` renders (so gaussians.ply is the trained neutral)."""
    offset0, colour0 = neutral_outputs(avatar)
    b = avatar.current_binding().detach()
    sh = b.sh.clone()
    sh[:, 0] = sh[:, 0] + colour0 / SH_C0
    return GaussianBinding(b.tri.clone(), b.bary.clone(), b.offset + offset0, b.rot_local.clone(),
                           b.log_scale.clone(), b.opacity_logit.clone(), sh)


def expression_deltas(avatar: GaussianAvatar, linearisation: str = "secant") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-key deltas (offset [E, N, 3] triangle-local, colour [E, N, 3] sRGB) at full weight.

    Zeros for an avatar without an MLP (nothing to bake)."""
    if linearisation not in LINEARISATIONS:
        raise ValueError(f"linearisation must be one of {LINEARISATIONS}, got {linearisation!r}")
    e, n = avatar.asset.n_expressions, avatar.canonical.shape[0]
    if avatar.mlp is None:
        zero = torch.zeros(e, n, 3, device=avatar.device)
        return zero, zero.clone()
    mlp, canonical = avatar.mlp, avatar.canonical.detach()
    eye = torch.eye(e, device=avatar.device)
    with torch.no_grad():
        if linearisation == "secant":
            base = _mlp_outputs(mlp, canonical, torch.zeros(1, e, device=avatar.device))
            out = _mlp_outputs(mlp, canonical, eye) - base  # [E, N, 6]
        else:
            parts = []
            for s in range(0, n, _CHUNK):
                chunk = canonical[s:s + _CHUNK]
                f = lambda w: torch.cat(mlp(w, chunk), 1)  # noqa: E731  (one chunk's [M, 6])
                jac = torch.func.jacfwd(f)(torch.zeros(e, device=avatar.device))  # [M, 6, E]
                parts.append(jac.permute(2, 0, 1))
            out = torch.cat(parts, 1)
    return out[..., :3].contiguous(), out[..., 3:].contiguous()


def baked_gaussians(binding: GaussianBinding, verts: torch.Tensor, triangles: torch.Tensor, offsets: torch.Tensor,
                    colours: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """What Blender draws: the neutral ``binding`` (gaussians.ply's) plus the baked deltas.

    Args:
        binding: N Gaussians at the neutral (``neutral_binding``); verts: [V, 3] posed mesh;
        triangles: [T, 3]; offsets, colours: [E, N, 3]; weights: [E] (the shape-key values).
    Returns:
        means [N, 3], quats [N, 4], scales [N, 3] (unflattened), colour [N, 3] sRGB DC colour
        (0.5 + SH_C0 f_dc + change, unclipped), offset [N, 3] the local offset change.
    """
    w = weights.to(offsets.dtype)
    offset = torch.einsum("k,knc->nc", w, offsets)
    colour = torch.einsum("k,knc->nc", w, colours)
    means, quats, scales = deform(binding, verts, triangles, offset)
    return {"means": means, "quats": quats, "scales": scales, "colour": 0.5 + SH_C0 * binding.sh[:, 0] + colour,
            "offset": offset}


@torch.no_grad()
def linearisation_error(avatar: GaussianAvatar, offsets: torch.Tensor, colours: torch.Tensor, weights: torch.Tensor,
                        tri_size: torch.Tensor) -> dict[str, float]:
    """How far the linear model is from the MLP over weight vectors ``weights`` [B, E].

    The change from neutral, MLP(w) - MLP(0), against sum_k w_k delta_k. Offsets are compared in
    millimetres (local units x the neutral triangle size ``tri_size`` [N] in metres), colours in
    8-bit sRGB levels. Returns means over Gaussians and weight vectors (``offset_mm``,
    ``colour_levels``), the 99th percentiles, the MLP's own change (``change_offset_mm``,
    ``change_colour_levels``) and the relative errors (error / change, ratios of means)."""
    mlp, canonical = avatar.mlp, avatar.canonical
    base = _mlp_outputs(mlp, canonical, torch.zeros(1, weights.shape[1], device=weights.device))
    true = _mlp_outputs(mlp, canonical, weights) - base  # [B, N, 6]
    linear = torch.cat([torch.einsum("bk,knc->bnc", weights, offsets),
                        torch.einsum("bk,knc->bnc", weights, colours)], 2)
    scale_mm = 1000 * tri_size[None, :, None]
    err_o = ((linear - true)[..., :3] * scale_mm).norm(dim=-1)
    err_c = (linear - true)[..., 3:].norm(dim=-1) * 255
    chg_o = (true[..., :3] * scale_mm).norm(dim=-1)
    chg_c = true[..., 3:].norm(dim=-1) * 255
    p99 = lambda x: np.percentile(x.cpu().numpy(), 99)  # noqa: E731
    out = {"offset_mm": err_o.mean(), "offset_mm_p99": p99(err_o), "colour_levels": err_c.mean(),
           "colour_levels_p99": p99(err_c), "change_offset_mm": chg_o.mean(), "change_colour_levels": chg_c.mean()}
    out = {k: float(v) for k, v in out.items()}
    out["offset_relative"] = out["offset_mm"] / max(out["change_offset_mm"], 1e-12)
    out["colour_relative"] = out["colour_levels"] / max(out["change_colour_levels"], 1e-12)
    return out


def triangle_sizes(binding: GaussianBinding, verts: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """[N] sqrt(area) of each Gaussian's triangle on ``verts`` [V, 3] (the unit of the local offsets)."""
    corners = verts[triangles[binding.tri]]
    cross = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    return torch.sqrt(cross.norm(dim=-1) / 2)
